//! The `[consensus]` table: how the decision log's Raft group forms and keeps its voters.

use std::time::Duration;

use plexus_protocol::{CanaryPolicy, ServiceName};

use super::Checker;
use crate::config::raw::{RawCanary, RawConsensus, RawScaling};
use crate::config::ScalingPolicy;
use crate::consensus::ConsensusSettings;
use crate::decide::ScalingSettings;

pub(super) fn settings(c: &mut Checker<'_>, raw: &RawConsensus) -> ConsensusSettings {
    let defaults = ConsensusSettings::default();
    let bootstrap_expect = match raw.bootstrap_expect {
        None => None,
        Some(n @ (1 | 3 | 5 | 7)) => Some(n as usize),
        Some(n) => {
            c.error(
                "consensus.bootstrap_expect",
                format!("{n} is not 1, 3, 5 or 7 (an odd number of voters; 3 or 5 for a cell)"),
            );
            None
        }
    };
    let election = c.duration(
        "consensus.election_timeout",
        raw.election_timeout.as_deref(),
        defaults.tick * defaults.election_ticks as u32,
    );
    if election < Duration::from_millis(300) || election > Duration::from_secs(30) {
        c.error(
            "consensus.election_timeout",
            "must be between 300ms and 30s (1s is the default)",
        );
    }
    let dead_voter_after = c.duration(
        "consensus.dead_voter_after",
        raw.dead_voter_after.as_deref(),
        defaults.dead_voter_after,
    );
    if dead_voter_after < election * 2 {
        c.error(
            "consensus.dead_voter_after",
            "must be at least twice consensus.election_timeout",
        );
    }
    let weights_window = c.duration(
        "consensus.weights_window",
        raw.weights_window.as_deref(),
        defaults.weights_window,
    );
    let election_ticks = (election.as_millis() / defaults.tick.as_millis()).max(3) as usize;
    ConsensusSettings {
        bootstrap_expect,
        election_ticks,
        heartbeat_ticks: (election_ticks / 5).max(1),
        dead_voter_after,
        weights_window,
        ..defaults
    }
}

/// `[[canary]]`: releases the leader runs (one per service).
pub(super) fn canaries(c: &mut Checker<'_>, raw: &[RawCanary]) -> Vec<(ServiceName, CanaryPolicy)> {
    let mut out: Vec<(ServiceName, CanaryPolicy)> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("canary[{i}].{k}");
        let service = match ServiceName::new(r.service.clone()) {
            Ok(s) => s,
            Err(e) => {
                c.error(key("service"), e.to_string());
                continue;
            }
        };
        if out.iter().any(|(s, _)| *s == service) {
            c.error(key("service"), format!("{service} has a canary already"));
        }
        for (k, v) in [("baseline", &r.baseline), ("canary", &r.canary)] {
            if v.is_empty() || v.len() > 64 {
                c.error(key(k), "must be a version label of 1 to 64 bytes");
            }
        }
        if r.baseline == r.canary {
            c.error(key("canary"), "must differ from baseline");
        }
        let step = r.step_percent.unwrap_or(10);
        if !(1..=100).contains(&step) {
            c.error(key("step_percent"), format!("{step} is not 1 to 100"));
        }
        let interval = c.duration(
            &key("interval"),
            r.interval.as_deref(),
            Duration::from_secs(30),
        );
        let errors = r.max_error_rate_increase.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&errors) {
            c.error(
                key("max_error_rate_increase"),
                format!("{errors} is not 0 to 1"),
            );
        }
        let latency = r.max_latency_ratio.unwrap_or(1.5);
        if !(latency.is_finite() && latency >= 1.0) {
            c.error(
                key("max_latency_ratio"),
                format!("{latency} is not 1 or more"),
            );
        }
        out.push((
            service,
            CanaryPolicy {
                baseline: r.baseline.clone(),
                canary: r.canary.clone(),
                step_percent: step.clamp(1, 100) as u8,
                interval_ms: interval.as_millis() as u64,
                max_error_rate_increase: errors,
                max_latency_ratio: latency,
            },
        ));
    }
    out
}

/// `[[scaling]]`: services that get scaling hints, and the hook this agent runs.
pub(super) fn scaling(c: &mut Checker<'_>, raw: &[RawScaling]) -> Vec<ScalingPolicy> {
    let defaults = ScalingSettings::default();
    let mut out: Vec<ScalingPolicy> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("scaling[{i}].{k}");
        let service = match ServiceName::new(r.service.clone()) {
            Ok(s) => s,
            Err(e) => {
                c.error(key("service"), e.to_string());
                continue;
            }
        };
        if out.iter().any(|p| p.service == service) {
            c.error(
                key("service"),
                format!("{service} has scaling settings already"),
            );
        }
        let target = r.target_utilization.unwrap_or(defaults.target_utilization);
        if !(target > 0.0 && target <= 1.0) {
            c.error(
                key("target_utilization"),
                format!("{target} is not above 0 and at most 1"),
            );
        }
        let min = r.min_replicas.unwrap_or(defaults.min_replicas);
        let max = r.max_replicas.unwrap_or(defaults.max_replicas);
        if min == 0 || min > max {
            c.error(
                key("min_replicas"),
                format!("{min} must be at least 1 and at most max_replicas ({max})"),
            );
        }
        let window = c.duration(
            &key("downscale_window"),
            r.downscale_window.as_deref(),
            defaults.downscale_window,
        );
        if let Some(hook) = &r.scale_hook {
            if !hook.is_absolute() {
                c.error(
                    key("scale_hook"),
                    format!("{} is not an absolute path", hook.display()),
                );
            }
        }
        out.push(ScalingPolicy {
            service,
            settings: ScalingSettings {
                target_utilization: target,
                min_replicas: min,
                max_replicas: max,
                downscale_window: window,
                ..defaults
            },
            scale_hook: r.scale_hook.clone(),
        });
    }
    out
}
