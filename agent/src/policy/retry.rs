//! The retry budget: retries may add at most `ratio` of the requests seen in the last
//! [`RETRY_WINDOW`], plus a floor of `min_per_second` retries per second of that window, so a
//! quiet service can still retry and a failing one cannot multiply its load.

use std::time::Duration;

use tokio::time::Instant;

/// How far back the budget looks.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);
const BUCKETS: usize = 10;

/// Tuning of the budget (`[upstream.retry]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    requests: u64,
    retries: u64,
}

/// The budget of one upstream: requests and retries in one-second buckets.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    buckets: [Bucket; BUCKETS],
    /// Start of the bucket at `head`.
    head_start: Instant,
    head: usize,
}

/// The budget, read (for `/v1/routes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetReading {
    pub requests: u64,
    pub retries: u64,
    /// Retries that may still be spent now.
    pub available: u64,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        Self {
            config,
            buckets: [Bucket::default(); BUCKETS],
            head_start: now,
            head: 0,
        }
    }

    fn advance(&mut self, now: Instant) {
        let step = RETRY_WINDOW / BUCKETS as u32;
        let mut moved = 0;
        while now.saturating_duration_since(self.head_start) >= step {
            self.head_start += step;
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = Bucket::default();
            moved += 1;
            if moved >= BUCKETS {
                // Idle for a whole window: everything is stale; jump ahead.
                let behind = now.saturating_duration_since(self.head_start);
                let skip = behind.as_nanos() / step.as_nanos();
                self.head_start += step * u32::try_from(skip).unwrap_or(u32::MAX);
                break;
            }
        }
    }

    /// One original request (not a retry) was sent.
    pub fn request(&mut self, now: Instant) {
        self.advance(now);
        self.buckets[self.head].requests += 1;
    }

    /// Asks to spend one retry; returns whether it may be sent (and spends it if so).
    pub fn try_retry(&mut self, now: Instant) -> bool {
        let reading = self.reading(now);
        if reading.available == 0 {
            return false;
        }
        self.buckets[self.head].retries += 1;
        true
    }

    pub fn reading(&mut self, now: Instant) -> BudgetReading {
        self.advance(now);
        let (requests, retries) = self
            .buckets
            .iter()
            .fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries));
        let allowed = (requests as f64 * self.config.ratio).floor() as u64
            + u64::from(self.config.min_per_second) * RETRY_WINDOW.as_secs();
        BudgetReading {
            requests,
            retries,
            available: allowed.saturating_sub(retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_upstream_has_the_floor() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t0);
        assert_eq!(b.reading(t0).available, 100);
        let spent = (0..1000).filter(|_| b.try_retry(t0)).count();
        assert_eq!(spent, 100);
    }

    #[test]
    fn retries_stay_within_the_ratio_plus_floor_under_a_total_outage() {
        // 1 000 requests per second for a minute, every one failing and asking to retry.
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default(), t0);
        let (mut requests, mut retries) = (0u64, 0u64);
        let mut window: std::collections::VecDeque<(Instant, bool)> = Default::default();
        for k in 0..60_000u32 {
            let now = t0 + MS * k;
            b.request(now);
            requests += 1;
            window.push_back((now, false));
            if b.try_retry(now) {
                retries += 1;
                window.push_back((now, true));
            }
            while window
                .front()
                .is_some_and(|(t, _)| now - *t >= RETRY_WINDOW)
            {
                window.pop_front();
            }
            // In any 10 s span, retries ≤ 20 % of requests + 10/s.
            let (q, r) = window.iter().fold(
                (0, 0),
                |(q, r), (_, retry)| {
                    if *retry {
                        (q, r + 1)
                    } else {
                        (q + 1, r)
                    }
                },
            );
            assert!(
                r <= q / 5 + 100 + 200,
                "span ending at {k} ms: {r} retries for {q} requests"
            );
        }
        assert!(
            retries <= requests / 5 + 10 * 61,
            "{retries} retries for {requests} requests"
        );
        assert!(
            retries >= requests / 5,
            "the budget is spent, not hoarded: {retries}"
        );
    }

    #[test]
    fn the_window_forgets_after_ten_seconds() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(
            RetryBudgetConfig {
                ratio: 0.2,
                min_per_second: 0,
            },
            t0,
        );
        for _ in 0..100 {
            b.request(t0);
        }
        assert_eq!(b.reading(t0).available, 20);
        assert_eq!(b.reading(t0 + Duration::from_secs(9)).available, 20);
        assert_eq!(b.reading(t0 + Duration::from_secs(10)).available, 0);
        assert_eq!(b.reading(t0 + Duration::from_secs(3600)).requests, 0);
    }
}
