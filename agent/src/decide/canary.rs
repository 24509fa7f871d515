//! Canary releases: step a new version's share of a service's traffic up while it behaves as
//! well as the version it replaces, and take it out when it does not.
//!
//! A [`CanaryDriver`] per service, run by the leader each tick:
//!
//! - A canary configured on the leader and not committed (or committed for another
//!   baseline/canary pair) is started: [`DecisionKind::CanaryStart`], share 0.
//! - While it is progressing, the driver compares the canary's endpoints (by version label)
//!   with the baseline's: error rate (errors over requests, summed over the version's routable
//!   endpoints) and p99 (the endpoints' p99s weighted by their requests: gossip carries
//!   percentiles, not histograms, so a weighted mean is the closest honest aggregate).
//!   - Out of bounds (error rate more than `max_error_rate_increase` above the baseline's, or
//!     p99 above `max_latency_ratio` times the baseline's) → rolled back to 0 **at once**: a
//!     bad canary is not left serving until the next interval.
//!   - In bounds, and `interval_ms` after the driver first saw the last committed step → the
//!     share grows by `step_percent` (reaching 100 is [`CanaryPhase::Promoted`]).
//! - No evidence, no step: a step up needs a ready canary endpoint and, once the canary has a
//!   share, at least [`MIN_CANARY_REQUESTS_PER_SEC`] on both versions (a comparison with an
//!   idle version says nothing). Without it the driver waits; it never guesses.
//! - Promoted or rolled back: nothing more. Running the same pair again needs a new version
//!   label, so a rolled-back release cannot restart itself in a loop.
//!
//! The interval is measured from when *this driver* first saw the committed step, on its own
//! clock: log entries carry no trustworthy time (the proposer's wall clock is informational).
//! After a leader change the new leader thus waits a full interval, which is conservative.
//! The bounds, step and interval used are the committed policy's (what every agent agreed),
//! not the leader's configuration, which only starts releases.

use std::time::{Duration, Instant};

use plexus_protocol::{
    CanaryPhase, CanaryPolicy, CanaryState, Decision, DecisionKind, Evidence, ServiceDecisions,
    ServiceName,
};

use super::{evidence, ms, percent, Awaiting, Proposer};
use crate::gossip::view::ServiceEndpoint;

/// Requests per second a version needs on its routable endpoints for a comparison.
pub const MIN_CANARY_REQUESTS_PER_SEC: f64 = 1.0;

/// What one version's endpoints carry, summed over its routable endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VersionLoad {
    /// Endpoints of the version whose service is ready.
    pub ready: usize,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    /// The endpoints' p99 weighted by their requests, microseconds.
    pub p99_us: f64,
}

impl VersionLoad {
    /// The load of the endpoints labelled `version`.
    pub fn of(endpoints: &[ServiceEndpoint], version: &str) -> Self {
        let mut load = Self::default();
        let mut weighted_p99 = 0.0;
        for e in endpoints.iter().filter(|e| e.version == version) {
            load.ready += usize::from(e.ready);
            if !e.routable {
                continue;
            }
            let requests = f64::from(e.requests_per_sec.max(0.0));
            load.requests_per_sec += requests;
            load.errors_per_sec += f64::from(e.errors_per_sec.max(0.0));
            weighted_p99 += requests * f64::from(e.p99_us);
        }
        if load.requests_per_sec > 0.0 {
            load.p99_us = weighted_p99 / load.requests_per_sec;
        }
        load
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests_per_sec > 0.0 {
            (self.errors_per_sec / self.requests_per_sec).min(1.0)
        } else {
            0.0
        }
    }

    fn has_evidence(&self) -> bool {
        self.requests_per_sec >= MIN_CANARY_REQUESTS_PER_SEC
    }
}

/// Intervals a canary with a share may go without measurable traffic (while the baseline has
/// some) before it is rolled back, as Flagger counts a check without metrics as failed.
pub const STARVED_INTERVALS: u32 = 3;

/// How a canary broke its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Breach {
    ErrorRate {
        canary: f64,
        baseline: f64,
    },
    Latency {
        canary_p99_us: f64,
        baseline_p99_us: f64,
    },
}

/// Whether the canary is out of its policy's bounds against the baseline. A baseline without
/// evidence counts as error-free for the error rate and gives no latency reference.
/// Consecutive checks (one per leader tick) a canary must break its bounds in before it is
/// rolled back, as Flagger's `threshold`: one p99 over a window of a few hundred requests is
/// one unlucky sample away from a false rollback, a failing canary breaks them every time.
pub const BREACH_CHECKS: u32 = 3;

/// A canary's p99 must also be this much above the baseline's to count as a regression: at
/// sub-millisecond latencies a ratio alone turns scheduling jitter into a rollback.
pub const LATENCY_FLOOR_US: f64 = 1_000.0;

pub fn breach(
    policy: &CanaryPolicy,
    canary: &VersionLoad,
    baseline: &VersionLoad,
) -> Option<Breach> {
    let base_errors = if baseline.has_evidence() {
        baseline.error_rate()
    } else {
        0.0
    };
    if canary.error_rate() - base_errors > policy.max_error_rate_increase {
        return Some(Breach::ErrorRate {
            canary: canary.error_rate(),
            baseline: base_errors,
        });
    }
    if baseline.has_evidence()
        && baseline.p99_us > 0.0
        && canary.p99_us > policy.max_latency_ratio * baseline.p99_us
        && canary.p99_us > baseline.p99_us + LATENCY_FLOOR_US
    {
        return Some(Breach::Latency {
            canary_p99_us: canary.p99_us,
            baseline_p99_us: baseline.p99_us,
        });
    }
    None
}

/// One service's canary release, driven by the leader.
#[derive(Debug, Default)]
pub struct CanaryDriver {
    /// The committed step index last seen, and when it was first seen.
    seen: Option<(u64, Instant)>,
    awaiting: Awaiting,
    /// Consecutive checks in which the canary broke its bounds.
    breaches: u32,
}

impl CanaryDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// The canary decision to propose for `service` now, if any. `policy` is the leader's
    /// configured release (none: nothing to do), `committed` what the log decided about the
    /// service, `endpoints` every member hosting it.
    pub fn decide(
        &mut self,
        service: &ServiceName,
        policy: Option<&CanaryPolicy>,
        committed: &ServiceDecisions,
        endpoints: &[ServiceEndpoint],
        proposer: &Proposer,
        now: Instant,
    ) -> Option<Decision> {
        // A policy the log would refuse is not proposed (configuration validation reports it).
        let policy = policy.filter(|p| (1..=100).contains(&p.step_percent))?;
        let marker = committed.canary.as_ref().map_or(0, |c| c.last_step_index);
        if let Some(canary) = &committed.canary {
            if self
                .seen
                .is_none_or(|(index, _)| index != canary.last_step_index)
            {
                self.seen = Some((canary.last_step_index, now));
            }
        }
        if self.awaiting.waiting(marker, now) {
            return None;
        }
        let decision = match &committed.canary {
            Some(canary) if same_release(&canary.policy, policy) => {
                self.progress(service, canary, endpoints, proposer, now)
            }
            _ => Some(start(service, policy, endpoints, proposer)),
        };
        if decision.is_some() {
            self.awaiting.proposed(marker, now);
        }
        decision
    }

    fn progress(
        &mut self,
        service: &ServiceName,
        canary: &CanaryState,
        endpoints: &[ServiceEndpoint],
        proposer: &Proposer,
        now: Instant,
    ) -> Option<Decision> {
        if canary.phase != CanaryPhase::Progressing {
            return None;
        }
        let policy = &canary.policy;
        let new = VersionLoad::of(endpoints, &policy.canary);
        let old = VersionLoad::of(endpoints, &policy.baseline);
        let evidence = compare(service, policy, &new, &old);
        let share = canary.share_percent;
        let broken = (share > 0 && new.has_evidence())
            .then(|| breach(policy, &new, &old))
            .flatten();
        self.breaches = if broken.is_some() {
            self.breaches + 1
        } else {
            0
        };
        if self.breaches >= BREACH_CHECKS {
            if let Some(breach) = broken {
                let why = match breach {
                    Breach::ErrorRate { canary, baseline } => format!(
                        "canary {} error rate {} is more than {:.1} points above baseline {} {}",
                        policy.canary,
                        percent(canary),
                        policy.max_error_rate_increase * 100.0,
                        policy.baseline,
                        percent(baseline)
                    ),
                    Breach::Latency {
                        canary_p99_us,
                        baseline_p99_us,
                    } => format!(
                        "canary {} p99 {} is {:.1}x baseline {} {} (max {:.1}x)",
                        policy.canary,
                        ms(canary_p99_us),
                        canary_p99_us / baseline_p99_us,
                        policy.baseline,
                        ms(baseline_p99_us),
                        policy.max_latency_ratio
                    ),
                };
                return Some(step(
                    service,
                    format!("{why}: rolled back from {share}% to 0%"),
                    evidence,
                    0,
                    CanaryPhase::RolledBack,
                    proposer,
                ));
            }
        }
        let (_, seen_at) = self.seen?;
        let interval = Duration::from_millis(policy.interval_ms);
        let since = now.saturating_duration_since(seen_at);
        if share > 0
            && old.has_evidence()
            && !new.has_evidence()
            && since >= interval * STARVED_INTERVALS
        {
            // Callers route around the canary (ejected, crashed, unready): a canary that
            // cannot be measured cannot be promoted, and one its callers avoid is failing.
            return Some(step(
                service,
                format!(
                    "canary {} at {share}% has served {:.1} req/s for {} while baseline {} \
                     serves {:.1} req/s: callers route around it; rolled back to 0%",
                    policy.canary,
                    new.requests_per_sec,
                    humantime::format_duration(interval * STARVED_INTERVALS),
                    policy.baseline,
                    old.requests_per_sec
                ),
                evidence,
                0,
                CanaryPhase::RolledBack,
                proposer,
            ));
        }
        if since < interval {
            return None;
        }
        if new.ready == 0 || (share > 0 && !(new.has_evidence() && old.has_evidence())) {
            return None;
        }
        let next = share.saturating_add(policy.step_percent).min(100);
        let (phase, promoted) = if next == 100 {
            (CanaryPhase::Promoted, ", promoted")
        } else {
            (CanaryPhase::Progressing, "")
        };
        let why = if share == 0 {
            format!("canary {} has {} ready endpoints", policy.canary, new.ready)
        } else {
            format!(
                "canary {} error rate {}, p99 {} within bounds of baseline {} ({}, {})",
                policy.canary,
                percent(new.error_rate()),
                ms(new.p99_us),
                policy.baseline,
                percent(old.error_rate()),
                ms(old.p99_us)
            )
        };
        Some(step(
            service,
            format!("{why}: share {share}% -> {next}%{promoted}"),
            evidence,
            next,
            phase,
            proposer,
        ))
    }
}

fn same_release(committed: &CanaryPolicy, configured: &CanaryPolicy) -> bool {
    committed.baseline == configured.baseline && committed.canary == configured.canary
}

fn start(
    service: &ServiceName,
    policy: &CanaryPolicy,
    endpoints: &[ServiceEndpoint],
    proposer: &Proposer,
) -> Decision {
    let ready = VersionLoad::of(endpoints, &policy.canary).ready;
    proposer.decision(
        DecisionKind::CanaryStart {
            service: service.clone(),
            policy: policy.clone(),
        },
        format!(
            "canary {} of {service} starts against baseline {} at 0%, +{}% every {}",
            policy.canary,
            policy.baseline,
            policy.step_percent,
            humantime::format_duration(Duration::from_millis(policy.interval_ms))
        ),
        vec![evidence(
            format!("{service}/{}", policy.canary),
            "ready_endpoints",
            ready as f64,
            None,
        )],
    )
}

fn step(
    service: &ServiceName,
    reason: String,
    evidence: Vec<Evidence>,
    share_percent: u8,
    phase: CanaryPhase,
    proposer: &Proposer,
) -> Decision {
    proposer.decision(
        DecisionKind::CanaryStep {
            service: service.clone(),
            share_percent,
            phase,
        },
        reason,
        evidence,
    )
}

/// The comparison behind a step, as evidence (subject `service/version`).
fn compare(
    service: &ServiceName,
    policy: &CanaryPolicy,
    canary: &VersionLoad,
    baseline: &VersionLoad,
) -> Vec<Evidence> {
    let subject = format!("{service}/{}", policy.canary);
    vec![
        evidence(&subject, "ready_endpoints", canary.ready as f64, None),
        evidence(
            &subject,
            "requests_per_sec",
            canary.requests_per_sec,
            Some(baseline.requests_per_sec),
        ),
        evidence(
            &subject,
            "error_rate",
            canary.error_rate(),
            Some(baseline.error_rate()),
        ),
        evidence(&subject, "p99_us", canary.p99_us, Some(baseline.p99_us)),
    ]
}

#[cfg(test)]
mod tests;
