//! Exponential backoff between dials to a peer that keeps failing (sans-IO).
//!
//! The caller passes the time and a jitter sample, so the policy is a pure function of its
//! inputs and is tested without clocks or randomness.

use std::time::{Duration, Instant};

/// Dial backoff for one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
            retry_at: None,
        }
    }

    /// `Ok` if a dial may be tried at `now`, else how long to wait.
    pub fn ready(&self, now: Instant) -> Result<(), Duration> {
        match self.retry_at {
            Some(at) if at > now => Err(at - now),
            _ => Ok(()),
        }
    }

    /// Records a failed dial at `now`; `jitter` in `[0, 1)` spreads retries of many agents.
    /// The wait is `base * 2^(failures-1)`, capped at `max`, scaled into `[50%, 100%]`.
    pub fn failed(&mut self, now: Instant, jitter: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let wait = full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        self.retry_at = Some(now + wait);
        wait
    }

    /// Records a successful dial: the next failure starts from `base` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_reset_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(b.ready(t0).is_ok());
        let waits: Vec<_> = (0..6).map(|_| b.failed(t0, 1.0)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1000, 1000]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert_eq!(b.ready(t0), Err(Duration::from_secs(1)));
        assert!(b.ready(t0 + Duration::from_secs(1)).is_ok());
        b.succeeded();
        assert!(b.ready(t0).is_ok());
        assert_eq!(b.failed(t0, 0.0), Duration::from_millis(50));
    }
}
