//! Validating `[consensus]` and `[[canary]]`: what the agent would refuse, and what could
//! never happen in this topology (a canary version no node runs).

use std::time::Duration;

use super::super::raw::{RawCanary, RawConsensus};
use super::Validator;
use crate::scenario::*;

impl Validator<'_> {
    pub(super) fn consensus(
        &mut self,
        raw: Option<&RawConsensus>,
        nodes: usize,
        topology_voters: Option<usize>,
    ) -> Option<ConsensusSpec> {
        let raw = raw?;
        let expect = match raw.bootstrap_expect {
            None => {
                self.error(
                    "consensus.bootstrap_expect",
                    "missing: how many voters the agents form their group with (3 or 5)",
                );
                return None;
            }
            Some(n @ (1 | 3 | 5 | 7)) if n as usize <= nodes => n as usize,
            Some(n @ (1 | 3 | 5 | 7)) => {
                self.error(
                    "consensus.bootstrap_expect",
                    format!("{n} voters but only {nodes} nodes"),
                );
                return None;
            }
            Some(n) => {
                self.error(
                    "consensus.bootstrap_expect",
                    format!("{n}: an odd number of voters, 1, 3, 5 or 7 (3 or 5 for a cell)"),
                );
                return None;
            }
        };
        if let Some(declared) = topology_voters.filter(|v| *v != expect) {
            self.error(
                "topology.voters",
                format!(
                    "{declared} but consensus.bootstrap_expect is {expect}; the agents choose \
                     their voters: leave topology.voters out"
                ),
            );
        }
        let limit = Duration::from_secs(3600);
        let election = raw.election_timeout.as_deref().and_then(|v| {
            self.duration(
                "consensus.election_timeout",
                v,
                Duration::from_millis(300),
                Duration::from_secs(30),
            )
        });
        let dead_voter_after = raw.dead_voter_after.as_deref().and_then(|v| {
            self.duration(
                "consensus.dead_voter_after",
                v,
                Duration::from_millis(600),
                limit,
            )
        });
        let floor = election.unwrap_or(Duration::from_secs(1)) * 2;
        if dead_voter_after.is_some_and(|d| d < floor) {
            self.error(
                "consensus.dead_voter_after",
                format!(
                    "at least twice the election timeout ({})",
                    humantime::format_duration(floor)
                ),
            );
        }
        let weights_window = raw.weights_window.as_deref().and_then(|v| {
            self.duration(
                "consensus.weights_window",
                v,
                Duration::from_millis(100),
                limit,
            )
        });
        Some(ConsensusSpec {
            bootstrap_expect: expect,
            election_timeout: election,
            dead_voter_after,
            weights_window,
        })
    }

    pub(super) fn canaries(
        &mut self,
        raw: &[RawCanary],
        consensus: bool,
        services: &[ServiceSpec],
    ) -> Vec<CanarySpec> {
        if !raw.is_empty() && !consensus {
            self.error(
                "canary",
                "a canary release needs [consensus]: the decision log's leader runs it",
            );
        }
        let mut out: Vec<CanarySpec> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = |k: &str| format!("canary[{i}].{k}");
            let Some(service) = services.iter().find(|s| s.name == r.service) else {
                self.error(
                    key("service"),
                    format!("`{}` is not a service of the topology", r.service),
                );
                continue;
            };
            if out.iter().any(|c| c.service == r.service) {
                self.error(
                    key("service"),
                    format!("`{}` has a canary already", r.service),
                );
            }
            for (k, version) in [("baseline", &r.baseline), ("canary", &r.canary)] {
                if !service.versions.values().any(|v| v == version) {
                    self.error(
                        key(k),
                        format!("no node of `{}` runs version `{version}`", r.service),
                    );
                }
            }
            if r.baseline == r.canary {
                self.error(key("canary"), "must differ from baseline");
            }
            let step = r.step_percent.map(|s| match u8::try_from(s) {
                Ok(s @ 1..=100) => s,
                _ => {
                    self.error(key("step_percent"), format!("{s} is not 1 to 100"));
                    10
                }
            });
            let interval = r.interval.as_deref().and_then(|v| {
                self.duration(
                    &key("interval"),
                    v,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                )
            });
            if let Some(e) = r.max_error_rate_increase {
                if !(0.0..=1.0).contains(&e) {
                    self.error(key("max_error_rate_increase"), format!("{e} is not 0 to 1"));
                }
            }
            if let Some(l) = r.max_latency_ratio {
                if !(l.is_finite() && l >= 1.0) {
                    self.error(key("max_latency_ratio"), format!("{l} is not 1 or more"));
                }
            }
            out.push(CanarySpec {
                service: r.service.clone(),
                baseline: r.baseline.clone(),
                canary: r.canary.clone(),
                step_percent: step,
                interval,
                max_error_rate_increase: r.max_error_rate_increase,
                max_latency_ratio: r.max_latency_ratio,
            });
        }
        out
    }
}
