//! The adaptive concurrency limit in front of a local service, after Envoy's adaptive
//! concurrency filter (a gradient controller) and Netflix's concurrency-limits.
//!
//! - The **baseline** is the service's latency without queueing. It is measured passively from
//!   requests admitted while few others were in flight (at most a quarter of the limit, and at
//!   least `min`): the median of [`LimitConfig::window_samples`] of them. It is measured at
//!   start and again every [`LimitConfig::baseline_interval`]; a later window faster than it
//!   lowers it. Nothing is shed to measure it (Envoy lowers the limit for the measurement,
//!   which sheds callers of a single endpoint); under sustained high concurrency the previous
//!   baseline stays until low-concurrency requests occur again.
//! - Latencies are gathered into **windows** (at least `window_samples` requests and
//!   `window_time`). After each window, with `allowed = max(tolerance × baseline, baseline +
//!   min_queueing)`, the limit moves toward `limit × clamp(allowed ÷ window average, ½, 1) +
//!   √limit`, blended in by `smoothing`: queueing shrinks it (at most halving the target), and
//!   otherwise it grows by a queue allowance of √limit. `min_queueing` keeps scheduling jitter
//!   of a sub-millisecond service from reading as queueing.
//! - A limit that is not used (fewer than half its slots were in flight) does not grow.
//! - Requests over the limit are shed and counted.
//!
//! (A baseline that only follows a moving average of all requests drifts up with the very
//! queue it should detect: the first version of this limiter grew to its maximum under
//! queueing.)

use std::time::Duration;

use tokio::time::Instant;

/// Tuning of the limit (`[service.limit]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    pub initial: u32,
    pub min: u32,
    pub max: u32,
    /// How much latency above the baseline is tolerated before the limit shrinks.
    pub tolerance: f64,
    /// Share of a new limit blended into the current one per window.
    pub smoothing: f64,
    pub window_samples: u32,
    pub window_time: Duration,
    pub baseline_interval: Duration,
    /// Queueing always tolerated on top of the baseline.
    pub min_queueing: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            initial: 32,
            min: 4,
            max: 1024,
            tolerance: 1.5,
            smoothing: 0.2,
            window_samples: 10,
            window_time: Duration::from_millis(100),
            baseline_interval: Duration::from_secs(60),
            min_queueing: Duration::from_millis(2),
        }
    }
}

/// Proof of admission; hand it back to [`ConcurrencyLimit::release`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    /// Admitted while few requests were in flight: its latency can measure the baseline.
    quiet: bool,
}

/// The limit of one local service.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    config: LimitConfig,
    limit: f64,
    in_flight: u32,
    window_peak: u32,
    window_start: Instant,
    window_sum: Duration,
    window_count: u32,
    baseline: Option<Duration>,
    /// Gathering quiet samples for a new baseline.
    measuring: bool,
    quiet: Vec<Duration>,
    next_baseline: Instant,
    shed: u64,
}

/// The limit, read (for gossip, `/metrics` and `/v1/routes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitReading {
    pub limit: u32,
    pub in_flight: u32,
    pub shed: u64,
    pub baseline: Option<Duration>,
}

impl ConcurrencyLimit {
    pub fn new(config: LimitConfig, now: Instant) -> Self {
        let max = config.max.max(1);
        let min = config.min.clamp(1, max);
        let config = LimitConfig { min, max, ..config };
        Self {
            limit: f64::from(config.initial.clamp(min, max)),
            config,
            in_flight: 0,
            window_peak: 0,
            window_start: now,
            window_sum: Duration::ZERO,
            window_count: 0,
            baseline: None,
            measuring: true,
            quiet: Vec::new(),
            next_baseline: now,
            shed: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    pub fn reading(&self) -> LimitReading {
        LimitReading {
            limit: self.limit(),
            in_flight: self.in_flight,
            shed: self.shed,
            baseline: self.baseline,
        }
    }

    /// Admits a request if a slot is free under the limit; otherwise counts it shed.
    pub fn try_acquire(&mut self) -> Option<Permit> {
        if self.in_flight >= self.limit() {
            self.shed += 1;
            return None;
        }
        self.in_flight += 1;
        self.window_peak = self.window_peak.max(self.in_flight);
        let quiet_level = (self.limit() / 4).max(self.config.min);
        Some(Permit {
            quiet: self.in_flight <= quiet_level,
        })
    }

    /// An admitted request ended at `now` after `rtt`. `sample` is false for requests whose
    /// latency says nothing about the service's queue (it failed to connect, the caller left).
    pub fn release(&mut self, permit: Permit, now: Instant, rtt: Duration, sample: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !sample {
            return;
        }
        if self.measuring && permit.quiet {
            self.quiet.push(rtt);
            if self.quiet.len() >= self.config.window_samples.max(1) as usize {
                self.quiet.sort_unstable();
                self.baseline = Some(self.quiet[(self.quiet.len() - 1) / 2]);
                self.measuring = false;
                self.quiet.clear();
                self.next_baseline = now + self.config.baseline_interval;
            }
        } else if !self.measuring && now >= self.next_baseline {
            self.measuring = true;
        }
        self.window_sum += rtt;
        self.window_count += 1;
        if self.window_count < self.config.window_samples
            || now.saturating_duration_since(self.window_start) < self.config.window_time
        {
            return;
        }
        let average = self.window_sum / self.window_count;
        self.update(average);
        self.window_start = now;
        self.window_sum = Duration::ZERO;
        self.window_count = 0;
        self.window_peak = self.in_flight;
    }

    fn update(&mut self, average: Duration) {
        let Some(baseline) = self.baseline else {
            return;
        };
        let baseline = if average < baseline {
            self.baseline = Some(average);
            average
        } else {
            baseline
        };
        if f64::from(self.window_peak) < self.limit / 2.0 {
            return; // not using the limit: no evidence it could be higher
        }
        let allowed = baseline
            .mul_f64(self.config.tolerance)
            .max(baseline + self.config.min_queueing);
        let ratio = allowed.as_secs_f64() / average.as_secs_f64().max(1e-9);
        let gradient = ratio.clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        let smoothed = self.limit * (1.0 - self.config.smoothing) + target * self.config.smoothing;
        self.limit = smoothed.clamp(f64::from(self.config.min), f64::from(self.config.max));
    }
}

#[cfg(test)]
mod tests;
