//! The adaptive concurrency limit in front of a local service, after Envoy's adaptive
//! concurrency filter (a gradient controller) and Netflix's concurrency-limits.
//!
//! - The **baseline** is the service's latency without queueing. It is measured in the first
//!   window (at the initial limit) and again every [`LimitConfig::baseline_interval`]: for one
//!   window the limit drops to a quarter (at least `min`), and the average latency of requests
//!   admitted in that window becomes the baseline. Any later window faster than it lowers it.
//! - Latencies are gathered into **windows** (at least `window_samples` requests and
//!   `window_time`). After each window the limit moves toward
//!   `limit × clamp(tolerance × baseline ÷ window average, ½, 1) + √limit`, blended in by
//!   `smoothing`: queueing (latency above tolerance × baseline) shrinks it, at most halving,
//!   and otherwise it grows by a queue allowance of √limit.
//! - A limit that is not used (fewer than half its slots were in flight) does not grow.
//! - Requests over the limit are shed and counted.
//!
//! (A baseline that only follows a moving average would drift up with the queue it is meant to
//! detect; measuring it at low concurrency is what Envoy does for the same reason.)

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
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 4,
            max: 1024,
            tolerance: 1.5,
            smoothing: 0.2,
            window_samples: 10,
            window_time: Duration::from_millis(100),
            baseline_interval: Duration::from_secs(60),
        }
    }
}

/// Proof of admission; hand it back to [`ConcurrencyLimit::release`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    window: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring the baseline: the limit is `min` until the window completes; `resume` is the
    /// limit to return to.
    Baseline {
        resume: f64,
    },
    Steady,
}

/// The limit of one local service.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    config: LimitConfig,
    limit: f64,
    phase: Phase,
    in_flight: u32,
    /// Numbers the windows, so a baseline counts only requests admitted inside it.
    window: u64,
    window_peak: u32,
    window_start: Instant,
    window_sum: Duration,
    window_count: u32,
    baseline: Option<Duration>,
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
        let initial = f64::from(config.initial.clamp(min, max));
        Self {
            limit: initial,
            phase: Phase::Baseline { resume: initial },
            config,
            in_flight: 0,
            window: 0,
            window_peak: 0,
            window_start: now,
            window_sum: Duration::ZERO,
            window_count: 0,
            baseline: None,
            next_baseline: now + config.baseline_interval,
            shed: 0,
        }
    }

    /// The limit now (during a baseline measurement, a quarter of it).
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
        Some(Permit {
            window: self.window,
        })
    }

    /// An admitted request ended at `now` after `rtt`. `sample` is false for requests whose
    /// latency says nothing about the service's queue (it failed to connect, the caller left).
    pub fn release(&mut self, permit: Permit, now: Instant, rtt: Duration, sample: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let baseline_phase = matches!(self.phase, Phase::Baseline { .. });
        if !sample || (baseline_phase && permit.window != self.window) {
            return;
        }
        self.window_sum += rtt;
        self.window_count += 1;
        if self.window_count < self.config.window_samples
            || now.saturating_duration_since(self.window_start) < self.config.window_time
        {
            return;
        }
        let average = self.window_sum / self.window_count;
        match self.phase {
            Phase::Baseline { resume } => {
                self.baseline = Some(average);
                self.limit = resume;
                self.phase = Phase::Steady;
                self.next_baseline = now + self.config.baseline_interval;
            }
            Phase::Steady => {
                self.update(average);
                if now >= self.next_baseline {
                    // A quarter of the limit drains most of any queue without shedding most
                    // of the traffic while the baseline is measured.
                    self.phase = Phase::Baseline { resume: self.limit };
                    self.limit = (self.limit / 4.0).max(f64::from(self.config.min)).floor();
                }
            }
        }
        self.window += 1;
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
        let ratio = baseline.as_secs_f64() / average.as_secs_f64().max(1e-9);
        let gradient = (self.config.tolerance * ratio).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        let smoothed = self.limit * (1.0 - self.config.smoothing) + target * self.config.smoothing;
        self.limit = smoothed.clamp(f64::from(self.config.min), f64::from(self.config.max));
    }
}

#[cfg(test)]
mod tests;
