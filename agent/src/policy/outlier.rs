//! Outlier ejection and circuit breaking per endpoint, in the spirit of Envoy's outlier
//! detection.
//!
//! - **Consecutive failures**: [`OutlierConfig::consecutive_failures`] failures in a row (5xx,
//!   gateway errors, connection failures, timeouts) eject the endpoint.
//! - **Success rate**: every [`OutlierConfig::interval`], among endpoints with at least
//!   `success_rate_request_volume` requests in the interval (and at least
//!   `success_rate_min_hosts` of them), one whose success rate is below
//!   `mean − stdev_factor × stdev` is ejected.
//! - An ejection lasts `base_ejection × n` for its n-th ejection (capped at `max_ejection`);
//!   `n` falls by one for every interval the endpoint stays healthy.
//! - At most `max_ejected_percent` of the endpoints (at least one) are ejected at once, and
//!   never the last endpoint that is not ejected.
//! - When the ejection ends the endpoint is **probing** (half-open): it takes one request at a
//!   time; a success returns it, a failure ejects it again for longer.

use std::time::Duration;

use tokio::time::Instant;

/// Tuning of outlier detection (`[upstream.outlier]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
    pub success_rate_min_hosts: usize,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
            success_rate_min_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1.9,
        }
    }
}

/// Where an endpoint stands with outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    Healthy,
    Ejected {
        until: Instant,
    },
    /// Half-open: one request at a time decides whether it returns.
    Probing {
        probe_in_flight: bool,
    },
}

impl Ejection {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Ejected { .. } => "ejected",
            Self::Probing { .. } => "probing",
        }
    }
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    ConsecutiveFailures,
    SuccessRate,
    ProbeFailed,
}

impl EjectReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::SuccessRate => "success_rate",
            Self::ProbeFailed => "probe_failed",
        }
    }
}

/// One endpoint's outlier state.
#[derive(Debug, Clone)]
pub struct OutlierTracker {
    state: Ejection,
    consecutive: u32,
    ejections: u32,
    window_total: u32,
    window_ok: u32,
}

impl Default for OutlierTracker {
    fn default() -> Self {
        Self {
            state: Ejection::Healthy,
            consecutive: 0,
            ejections: 0,
            window_total: 0,
            window_ok: 0,
        }
    }
}

impl OutlierTracker {
    pub fn state(&self) -> Ejection {
        self.state
    }

    /// How many times in a row it has been ejected recently (the ejection-time multiplier).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Whether a request may go to this endpoint now.
    pub fn admits(&self) -> bool {
        match self.state {
            Ejection::Healthy => true,
            Ejection::Ejected { .. } => false,
            Ejection::Probing { probe_in_flight } => !probe_in_flight,
        }
    }

    /// A request was sent to this endpoint (marks the probe of a half-open endpoint).
    pub fn started(&mut self) {
        if let Ejection::Probing { .. } = self.state {
            self.state = Ejection::Probing {
                probe_in_flight: true,
            };
        }
    }

    /// The request sent to this endpoint was abandoned without an answer: a half-open
    /// endpoint may take another probe.
    pub fn abandoned(&mut self) {
        if let Ejection::Probing { .. } = self.state {
            self.state = Ejection::Probing {
                probe_in_flight: false,
            };
        }
    }

    fn eject(&mut self, config: &OutlierConfig, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        let time = config
            .base_ejection
            .saturating_mul(self.ejections)
            .min(config.max_ejection.max(config.base_ejection));
        self.state = Ejection::Ejected { until: now + time };
        self.consecutive = 0;
    }
}

/// Outlier detection over one upstream's endpoints. Endpoints are addressed by index into the
/// caller's endpoint list; [`OutlierDetector::resize`] follows that list.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    last_sweep: Instant,
}

/// What a call into the detector changed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Ejected(EjectReason),
    Probing,
    Returned,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig, now: Instant) -> Self {
        Self {
            config,
            last_sweep: now,
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn may_eject(&self, trackers: &[OutlierTracker], me: usize) -> bool {
        let ejected = trackers
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != me && !matches!(t.state, Ejection::Healthy))
            .count();
        let cap = (trackers.len() * self.config.max_ejected_percent as usize / 100).max(1);
        ejected < cap && ejected + 1 < trackers.len()
    }

    /// Folds in the result of one request to endpoint `i` (`failure` as [`super::Outcome`]
    /// counts it); returns a transition if the endpoint changed state.
    pub fn record(
        &mut self,
        trackers: &mut [OutlierTracker],
        i: usize,
        now: Instant,
        failure: bool,
    ) -> Option<Transition> {
        let may_eject = self.may_eject(trackers, i);
        let config = self.config;
        let t = trackers.get_mut(i)?;
        t.window_total = t.window_total.saturating_add(1);
        if !failure {
            t.window_ok = t.window_ok.saturating_add(1);
        }
        match t.state {
            Ejection::Probing { .. } if failure => {
                // Re-ejected regardless of the cap: it was already counted as out.
                t.eject(&config, now);
                Some(Transition::Ejected(EjectReason::ProbeFailed))
            }
            Ejection::Probing { .. } => {
                t.state = Ejection::Healthy;
                t.consecutive = 0;
                Some(Transition::Returned)
            }
            // A request that was in flight when the endpoint was ejected.
            Ejection::Ejected { .. } => None,
            Ejection::Healthy if failure => {
                t.consecutive = t.consecutive.saturating_add(1);
                if t.consecutive >= config.consecutive_failures && may_eject {
                    t.eject(&config, now);
                    Some(Transition::Ejected(EjectReason::ConsecutiveFailures))
                } else {
                    None
                }
            }
            Ejection::Healthy => {
                t.consecutive = 0;
                None
            }
        }
    }

    /// Advances time: ended ejections become probing, and once per interval the success-rate
    /// sweep runs. Returns the transitions by endpoint index.
    pub fn tick(
        &mut self,
        trackers: &mut [OutlierTracker],
        now: Instant,
    ) -> Vec<(usize, Transition)> {
        let mut changed = Vec::new();
        for (i, t) in trackers.iter_mut().enumerate() {
            if let Ejection::Ejected { until } = t.state {
                if now >= until {
                    t.state = Ejection::Probing {
                        probe_in_flight: false,
                    };
                    changed.push((i, Transition::Probing));
                }
            }
        }
        if now.saturating_duration_since(self.last_sweep) >= self.config.interval {
            self.last_sweep = now;
            self.sweep(trackers, now, &mut changed);
        }
        changed
    }

    fn sweep(
        &mut self,
        trackers: &mut [OutlierTracker],
        now: Instant,
        changed: &mut Vec<(usize, Transition)>,
    ) {
        let volume = self.config.success_rate_request_volume.max(1);
        let rates: Vec<(usize, f64)> = trackers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.state == Ejection::Healthy && t.window_total >= volume)
            .map(|(i, t)| (i, f64::from(t.window_ok) / f64::from(t.window_total)))
            .collect();
        if rates.len() >= self.config.success_rate_min_hosts.max(2) {
            let n = rates.len() as f64;
            let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
            let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
            let threshold = mean - self.config.success_rate_stdev_factor * variance.sqrt();
            for (i, rate) in rates {
                if rate < threshold && self.may_eject(trackers, i) {
                    trackers[i].eject(&self.config, now);
                    changed.push((i, Transition::Ejected(EjectReason::SuccessRate)));
                }
            }
        }
        for t in trackers.iter_mut() {
            if t.state == Ejection::Healthy {
                t.ejections = t.ejections.saturating_sub(1);
            }
            t.window_total = 0;
            t.window_ok = 0;
        }
    }
}

#[cfg(test)]
mod tests;
