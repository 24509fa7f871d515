//! A sliding window of request outcomes and latencies: two fixed buckets that rotate.
//!
//! The window keeps the bucket being filled and the one before it. Rates and quantiles are read
//! over both, so a reading always covers between one and two periods of recent traffic, and a
//! burst leaves the window completely two periods after it ended. That is the property a
//! published load summary needs: it forgets. An EWMA would never quite forget, and its decay
//! would depend on how often it is read. Time is passed in, so the window is a pure state
//! machine and tests drive it without clocks.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency a window records, in microseconds (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone)]
struct Bucket {
    started: Instant,
    requests: u64,
    errors: u64,
    latency_us: Histogram<u32>,
}

impl Bucket {
    fn new(started: Instant) -> Self {
        Self {
            started,
            requests: 0,
            errors: 0,
            // Two significant figures: quantiles within 1%, a few KiB per bucket.
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                .expect("static histogram bounds are valid"),
        }
    }
}

/// What a window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowReading {
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Request counts and latencies over the last one to two `period`s.
#[derive(Debug, Clone)]
pub struct RequestWindow {
    period: Duration,
    current: Bucket,
    previous: Option<Bucket>,
}

impl RequestWindow {
    pub fn new(period: Duration, now: Instant) -> Self {
        Self {
            period,
            current: Bucket::new(now),
            previous: None,
        }
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.current.started);
        if age < self.period {
            return;
        }
        if age >= self.period * 2 {
            // Idle for two periods or more: nothing recent is left.
            self.previous = None;
            self.current = Bucket::new(now);
            return;
        }
        let next = Bucket::new(self.current.started + self.period);
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// Records one finished request.
    pub fn record(&mut self, now: Instant, latency: Duration, ok: bool) {
        self.rotate(now);
        self.current.requests += 1;
        if !ok {
            self.current.errors += 1;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.current
            .latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Rates and quantiles over the window as of `now`.
    pub fn read(&mut self, now: Instant) -> WindowReading {
        self.rotate(now);
        let buckets: Vec<&Bucket> = self
            .previous
            .iter()
            .chain(std::iter::once(&self.current))
            .collect();
        let since = buckets[0].started;
        // Rates over at least one period, so a fresh window does not report a spike.
        let span = now.saturating_duration_since(since).max(self.period);
        let requests: u64 = buckets.iter().map(|b| b.requests).sum();
        let errors: u64 = buckets.iter().map(|b| b.errors).sum();
        let mut latency = self.current.latency_us.clone();
        if let Some(previous) = &self.previous {
            let _ = latency.add(&previous.latency_us);
        }
        let quantile = |q: f64| {
            if latency.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(latency.value_at_quantile(q))
            }
        };
        WindowReading {
            requests_per_sec: requests as f64 / span.as_secs_f64(),
            errors_per_sec: errors as f64 / span.as_secs_f64(),
            p50: quantile(0.5),
            p99: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quantiles_cover_the_recent_window() {
        let t0 = Instant::now();
        let mut window = RequestWindow::new(Duration::from_secs(10), t0);
        for i in 0..100u64 {
            let ok = i % 10 != 0;
            window.record(
                t0 + Duration::from_millis(i * 50),
                Duration::from_millis(i + 1),
                ok,
            );
        }
        let reading = window.read(t0 + Duration::from_secs(10));
        assert!(
            (reading.requests_per_sec - 10.0).abs() < 0.01,
            "{reading:?}"
        );
        assert!((reading.errors_per_sec - 1.0).abs() < 0.01, "{reading:?}");
        assert!(
            reading.p50 >= Duration::from_millis(49) && reading.p50 <= Duration::from_millis(51)
        );
        assert!(
            reading.p99 >= Duration::from_millis(98) && reading.p99 <= Duration::from_millis(101)
        );
    }

    #[test]
    fn a_burst_is_forgotten_two_periods_later() {
        let t0 = Instant::now();
        let period = Duration::from_secs(5);
        let mut window = RequestWindow::new(period, t0);
        for _ in 0..50 {
            window.record(t0, Duration::from_millis(3), false);
        }
        assert!(window.read(t0 + Duration::from_secs(6)).errors_per_sec > 0.0);
        let later = window.read(t0 + Duration::from_secs(10));
        assert_eq!(later, WindowReading::default());
    }

    #[test]
    fn a_fresh_window_does_not_report_a_spike() {
        let t0 = Instant::now();
        let mut window = RequestWindow::new(Duration::from_secs(10), t0);
        window.record(t0, Duration::from_millis(1), true);
        let reading = window.read(t0 + Duration::from_millis(1));
        assert!((reading.requests_per_sec - 0.1).abs() < 1e-9);
    }
}
