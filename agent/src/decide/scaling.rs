//! Scaling hints: how many replicas a service should have, with the Kubernetes Horizontal Pod
//! Autoscaler's formula and its downscale stabilization, so that an operator's (or a hook's)
//! autoscaler can follow a hint the whole mesh agreed on.
//!
//! - `current` is the number of **ready** endpoints: replicas that are starting or failing
//!   health checks serve nothing, and HPA likewise leaves unready pods out.
//! - `utilization` is the mean over ready endpoints of in flight over the concurrency limit
//!   (the capacity when the adaptive limit is off): the limit is what the endpoint can take
//!   *now* without queueing, which is what a replica more or less changes. Endpoints with
//!   neither are left out; with none left there is no hint.
//! - `desired = ceil(current × utilization ÷ target)`, unchanged while
//!   `|utilization ÷ target − 1| ≤ tolerance` (HPA's 10 %), then clamped to
//!   `[min_replicas, max_replicas]`.
//! - **Downscale stabilization** (HPA's, 5 minutes by default): the hint is the *highest*
//!   recommendation over the last `downscale_window`, so it goes up at once but down only after
//!   every recommendation in the window agreed. The window starts seeded with the committed
//!   hint (HPA seeds with the current replicas), so a fresh leader cannot scale down before a
//!   full window.
//!
//! A hint is proposed only when it differs from the committed one (or, before any, from
//! `current`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use plexus_protocol::{Decision, DecisionKind, ServiceDecisions, ServiceName};

use super::{evidence, Awaiting, Proposer};
use crate::gossip::view::ServiceEndpoint;

/// Tuning of scaling hints for one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingSettings {
    /// Utilization (in flight over the concurrency limit) to aim for.
    pub target_utilization: f64,
    /// How far utilization may stray from the target, relative, before the hint changes.
    pub tolerance: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// How long every recommendation must have been lower before the hint goes down.
    pub downscale_window: Duration,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self {
            target_utilization: 0.6,
            tolerance: 0.1,
            min_replicas: 1,
            max_replicas: 10,
            downscale_window: Duration::from_secs(300),
        }
    }
}

/// One evaluation of the HPA formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// Ready endpoints.
    pub current: u32,
    /// Mean in flight over limit of the ready endpoints.
    pub utilization: f64,
    /// Replicas wanted, clamped (before stabilization).
    pub desired: u32,
}

/// The HPA formula over one service's endpoints; `None` when no ready endpoint tells its
/// utilization.
pub fn recommend(
    endpoints: &[ServiceEndpoint],
    settings: &ScalingSettings,
) -> Option<Recommendation> {
    let ready: Vec<&ServiceEndpoint> = endpoints.iter().filter(|e| e.ready).collect();
    let current = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    let utilizations: Vec<f64> = ready
        .iter()
        .filter_map(|e| {
            let limit = if e.concurrency_limit > 0 {
                e.concurrency_limit
            } else {
                e.capacity
            };
            (limit > 0).then(|| f64::from(e.in_flight) / f64::from(limit))
        })
        .collect();
    if utilizations.is_empty() || settings.target_utilization <= 0.0 {
        return None;
    }
    let utilization = utilizations.iter().sum::<f64>() / utilizations.len() as f64;
    let ratio = utilization / settings.target_utilization;
    let raw = if (ratio - 1.0).abs() <= settings.tolerance {
        current
    } else {
        (f64::from(current) * ratio).ceil().min(f64::from(u32::MAX)) as u32
    };
    let desired = raw.clamp(
        settings.min_replicas,
        settings.max_replicas.max(settings.min_replicas),
    );
    Some(Recommendation {
        current,
        utilization,
        desired,
    })
}

/// One service's scaling hint, driven by the leader.
#[derive(Debug)]
pub struct ScalingDriver {
    settings: ScalingSettings,
    /// Recommendations over the window (and the seed), oldest first.
    recommendations: VecDeque<(Instant, u32)>,
    awaiting: Awaiting,
}

impl ScalingDriver {
    pub fn new(settings: ScalingSettings) -> Self {
        Self {
            settings,
            recommendations: VecDeque::new(),
            awaiting: Awaiting::default(),
        }
    }

    pub fn settings(&self) -> &ScalingSettings {
        &self.settings
    }

    /// The scaling hint to propose for `service` now, if it changed.
    pub fn decide(
        &mut self,
        service: &ServiceName,
        endpoints: &[ServiceEndpoint],
        committed: &ServiceDecisions,
        proposer: &Proposer,
        now: Instant,
    ) -> Option<Decision> {
        let rec = recommend(endpoints, &self.settings)?;
        let window = self.settings.downscale_window;
        let previous = committed.scaling.map_or(rec.current, |s| s.desired);
        let stale = self
            .recommendations
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) > window);
        if stale {
            // A fresh leader (or one back from a pause) starts from the committed hint.
            self.recommendations.clear();
            self.recommendations.push_back((now, previous));
        }
        self.recommendations.push_back((now, rec.desired));
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.recommendations.pop_front();
        }
        let desired = self
            .recommendations
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(rec.desired);
        let marker = committed.scaling.map_or(0, |s| s.index);
        if desired == previous || self.awaiting.waiting(marker, now) {
            return None;
        }
        self.awaiting.proposed(marker, now);
        let s = &self.settings;
        let mut reason = format!(
            "{service}: {} ready endpoints at {:.0}% utilization vs target {:.0}%: \
             desired replicas {previous} -> {desired}",
            rec.current,
            rec.utilization * 100.0,
            s.target_utilization * 100.0
        );
        if desired < previous {
            reason.push_str(&format!(
                " (lower for {})",
                humantime::format_duration(s.downscale_window)
            ));
        }
        let subject = service.as_str();
        Some(proposer.decision(
            DecisionKind::ScalingHint {
                service: service.clone(),
                current: rec.current,
                desired,
            },
            reason,
            vec![
                evidence(
                    subject,
                    "utilization",
                    rec.utilization,
                    Some(s.target_utilization),
                ),
                evidence(subject, "ready_endpoints", f64::from(rec.current), None),
            ],
        ))
    }
}

#[cfg(test)]
mod tests;
