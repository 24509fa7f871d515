//! Validating one `[[check]]`.

use std::time::Duration;

use super::super::raw::{RawCheck, RawNodeList};
use super::{Names, Validator};
use crate::scenario::*;

impl Validator<'_> {
    pub(super) fn check(
        &mut self,
        key: &str,
        raw: &RawCheck,
        names: &Names,
        phases: &[String],
        (consensus, canaries): (Option<&ConsensusSpec>, &[CanarySpec]),
    ) -> Option<Check> {
        let hour = Duration::from_secs(3600);
        // A check names nodes it can find in the record: one node, all, or the faulted ones
        // (a role target would be drawn again, and might not be the nodes the fault hit).
        let target = |v: &mut Self| -> Option<Target> {
            let allow = ["node:", "all", "faulted"];
            v.target(
                &format!("{key}.target"),
                raw.target.as_deref().unwrap_or("faulted"),
                names,
                &allow,
            )
        };
        let max_duration = |v: &mut Self| -> Option<Duration> {
            match &raw.max {
                Some(toml::Value::String(s)) => {
                    v.duration(&format!("{key}.max"), s, Duration::ZERO, hour)
                }
                _ => {
                    v.error(format!("{key}.max"), "missing: a duration such as \"2s\"");
                    None
                }
            }
        };
        let max_number = |v: &mut Self, required: bool| -> Option<Option<f64>> {
            match &raw.max {
                Some(toml::Value::Float(f)) => Some(Some(*f)),
                Some(toml::Value::Integer(i)) => Some(Some(*i as f64)),
                None if !required => Some(None),
                None => {
                    v.error(format!("{key}.max"), "missing: a number");
                    None
                }
                Some(other) => {
                    v.error(format!("{key}.max"), format!("`{other}` is not a number"));
                    None
                }
            }
        };
        let mut used: Vec<&str> = Vec::new();
        let kind = match raw.kind.as_str() {
            "success-rate" => {
                used.extend(["min", "from"]);
                let from = self.sources_of(key, raw.from.as_ref());
                Some(CheckKind::SuccessRate {
                    min: self.ratio(&format!("{key}.min"), raw.min)?,
                    from,
                })
            }
            "policy-denied" => {
                used.extend(["min", "from"]);
                if !self.http {
                    self.error(
                        format!("{key}.kind"),
                        "an agent refuses a TCP stream with a plain reset: `policy-denied` needs an http workload",
                    );
                }
                let from = self.sources_of(key, raw.from.as_ref());
                if raw.from.is_none() {
                    self.error(
                        format!("{key}.from"),
                        "missing: the workload sources whose requests the policy refuses",
                    );
                }
                let min = self.ratio(&format!("{key}.min"), raw.min)?;
                if min == 0.0 {
                    self.error(format!("{key}.min"), "a share of at least 0 cannot fail");
                }
                Some(CheckKind::PolicyDenied { min, from })
            }
            "latency" => {
                used.extend(["quantile", "max"]);
                let quantile = raw.quantile.unwrap_or(0.99);
                if !(0.0..=1.0).contains(&quantile) || quantile == 0.0 {
                    self.error(
                        format!("{key}.quantile"),
                        format!("{quantile}: between 0 and 1, e.g. 0.99"),
                    );
                    return None;
                }
                Some(CheckKind::Latency {
                    quantile,
                    max: max_duration(self)?,
                })
            }
            "traffic-share" => {
                used.extend(["target", "min", "max"]);
                let max = max_number(self, false)?;
                if raw.min.is_none() && max.is_none() {
                    self.error(
                        key,
                        "traffic-share needs `min`, `max` or both (shares from 0 to 1)",
                    );
                    return None;
                }
                for (k, v) in [("min", raw.min), ("max", max)] {
                    if let Some(v) = v {
                        if !(0.0..=1.0).contains(&v) {
                            self.error(
                                format!("{key}.{k}"),
                                format!("{v} is not a share between 0 and 1"),
                            );
                        }
                    }
                }
                if let (Some(lo), Some(hi)) = (raw.min, max) {
                    if lo > hi {
                        self.error(
                            key,
                            format!("min {lo} is above max {hi}: no share can pass"),
                        );
                    }
                }
                if raw.min == Some(0.0) || max == Some(1.0) {
                    self.error(
                        key,
                        "a share of at least 0 or at most 1 cannot fail; tighten it",
                    );
                }
                Some(CheckKind::TrafficShare {
                    target: target(self)?,
                    min: raw.min,
                    max,
                })
            }
            "time-to-shift" => {
                used.extend(["target", "below", "max"]);
                Some(CheckKind::TimeToShift {
                    target: target(self)?,
                    below: raw
                        .below
                        .map_or(Some(0.05), |b| self.ratio(&format!("{key}.below"), Some(b)))?,
                    max: max_duration(self)?,
                })
            }
            "time-to-eject" => {
                used.extend(["target", "max"]);
                Some(CheckKind::TimeToEject {
                    target: target(self)?,
                    max: max_duration(self)?,
                })
            }
            "time-to-detect" => {
                used.extend(["target", "max"]);
                Some(CheckKind::TimeToDetect {
                    target: target(self)?,
                    max: max_duration(self)?,
                })
            }
            "retry-amplification" => {
                used.push("max");
                match max_number(self, true)? {
                    Some(m) if m >= 1.0 => Some(CheckKind::RetryAmplification { max: m }),
                    m => {
                        self.error(
                            format!("{key}.max"),
                            format!("{m:?}: attempts per request are at least 1"),
                        );
                        None
                    }
                }
            }
            "agent-rss" => {
                used.push("max");
                let max_mib = max_number(self, true)??;
                if max_mib <= 0.0 {
                    self.error(format!("{key}.max"), "MiB above 0");
                }
                Some(CheckKind::AgentRss { max_mib })
            }
            "failed-handshakes" => {
                used.push("max");
                Some(CheckKind::FailedHandshakes {
                    max: max_number(self, false)?.unwrap_or(0.0),
                })
            }
            "no-healthy-quarantined" => Some(CheckKind::NoHealthyQuarantined),
            "quarantine-within" => {
                used.extend(["target", "max"]);
                Some(CheckKind::QuarantineWithin {
                    target: target(self)?,
                    max: max_duration(self)?,
                })
            }
            "suspected" => {
                used.extend(["target", "max"]);
                let target = match raw.target.as_deref() {
                    Some(t) if t.starts_with("node:") => {
                        self.target(&format!("{key}.target"), t, names, &["node:"])
                    }
                    _ => {
                        self.error(
                            format!("{key}.target"),
                            "the node under suspicion, e.g. \"node:node-5\"",
                        );
                        None
                    }
                };
                match (target, max_duration(self)) {
                    (Some(target), Some(max)) => Some(CheckKind::Suspected { target, max }),
                    _ => None,
                }
            }
            "ca-rotated" => {
                used.push("max");
                if !self.ca_in_log {
                    self.error(
                        format!("{key}.kind"),
                        "`ca-rotated` needs [trust] ca = \"decision-log\"",
                    );
                } else if !self.rotates {
                    self.error(
                        format!("{key}.kind"),
                        "no `ca-rotate` fault in the scenario: nothing rotates the CA",
                    );
                }
                max_duration(self).map(|max| CheckKind::CaRotated { max })
            }
            "voter-logs-identical" => Some(CheckKind::VoterLogsIdentical),
            "no-decision-lost" => Some(CheckKind::NoDecisionLost),
            "canary-outcome" => {
                used.extend(["service", "expect", "max"]);
                let service = match raw.service.as_deref() {
                    None => {
                        self.error(
                            format!("{key}.service"),
                            "missing: the service a [[canary]] releases",
                        );
                        None
                    }
                    Some(s) if !canaries.iter().any(|c| c.service == s) => {
                        self.error(
                            format!("{key}.service"),
                            format!("`{s}` has no [[canary]]: no release to judge"),
                        );
                        None
                    }
                    Some(s) => Some(s.to_owned()),
                };
                let expect = match raw.expect.as_deref() {
                    Some("promoted") => Some(CanaryEnd::Promoted),
                    Some("rolled_back") => Some(CanaryEnd::RolledBack),
                    other => {
                        self.error(
                            format!("{key}.expect"),
                            format!(
                                "{}: use \"promoted\" or \"rolled_back\"",
                                other.map_or("missing".to_owned(), |o| format!("`{o}`"))
                            ),
                        );
                        None
                    }
                };
                match (service, expect, max_duration(self)) {
                    (Some(service), Some(expect), Some(max)) => Some(CheckKind::CanaryOutcome {
                        service,
                        expect,
                        max,
                    }),
                    _ => None,
                }
            }
            "voters-replaced" => {
                used.extend(["target", "max"]);
                let voters = self
                    .needs_consensus(key, consensus, &raw.kind)
                    .map(|c| c.bootstrap_expect);
                match (voters, target(self), max_duration(self)) {
                    (Some(voters), Some(target), Some(max)) => Some(CheckKind::VotersReplaced {
                        target,
                        max,
                        voters,
                    }),
                    _ => None,
                }
            }
            "decisions-resume" => {
                used.push("max");
                let consensus = self.needs_consensus(key, consensus, &raw.kind);
                let max = max_duration(self);
                consensus
                    .and(max)
                    .map(|max| CheckKind::DecisionsResume { max })
            }
            other => {
                self.error(
                    format!("{key}.kind"),
                    format!(
                        "`{other}` is not a check; use success-rate, latency, traffic-share, time-to-shift, \
                         time-to-eject, time-to-detect, retry-amplification, agent-rss, failed-handshakes, \
                         no-healthy-quarantined, quarantine-within, suspected, ca-rotated, policy-denied, \
                         voter-logs-identical, no-decision-lost, canary-outcome, voters-replaced or decisions-resume"
                    ),
                );
                return None;
            }
        };
        let set = [
            ("min", raw.min.is_some()),
            ("max", raw.max.is_some()),
            ("quantile", raw.quantile.is_some()),
            ("target", raw.target.is_some()),
            ("below", raw.below.is_some()),
            ("service", raw.service.is_some()),
            ("expect", raw.expect.is_some()),
            ("from", raw.from.is_some()),
        ];
        for (k, is_set) in set {
            if is_set && !used.contains(&k) {
                self.error(
                    format!("{key}.{k}"),
                    format!("does not apply to `{}`", raw.kind),
                );
            }
        }
        let kind = kind?;
        // Live abort checks see the run so far, not the decision log (read at the end).
        let from_log = matches!(
            kind,
            CheckKind::VoterLogsIdentical
                | CheckKind::NoDecisionLost
                | CheckKind::NoHealthyQuarantined
                | CheckKind::QuarantineWithin { .. }
                | CheckKind::Suspected { .. }
                | CheckKind::CaRotated { .. }
                | CheckKind::CanaryOutcome { .. }
                | CheckKind::VotersReplaced { .. }
                | CheckKind::DecisionsResume { .. }
        );
        if from_log && raw.abort == Some(true) {
            self.error(
                format!("{key}.abort"),
                format!(
                    "does not apply to `{}`: it is judged on the decision log at the end of the run",
                    raw.kind
                ),
            );
        }
        let default_mode = match kind {
            CheckKind::TimeToShift { .. }
            | CheckKind::TimeToEject { .. }
            | CheckKind::TimeToDetect { .. }
            | CheckKind::QuarantineWithin { .. }
            | CheckKind::Suspected { .. }
            | CheckKind::CaRotated { .. }
            | CheckKind::VotersReplaced { .. }
            | CheckKind::TrafficShare { .. } => Mode::During,
            CheckKind::VoterLogsIdentical
            | CheckKind::NoDecisionLost
            | CheckKind::DecisionsResume { .. }
            | CheckKind::PolicyDenied { .. } => Mode::After,
            _ => Mode::Continuous,
        };
        let mode = match raw.mode.as_deref() {
            None => default_mode,
            Some("before") => Mode::Before,
            Some("during") => Mode::During,
            Some("after") => Mode::After,
            Some("continuous") => Mode::Continuous,
            Some(other) => {
                self.error(
                    format!("{key}.mode"),
                    format!("`{other}`: use before, during, after or continuous"),
                );
                return None;
            }
        };
        if let Some(phase) = &raw.phase {
            if !phases.contains(phase) {
                self.error(
                    format!("{key}.phase"),
                    format!("`{phase}` is not a phase of this scenario"),
                );
            }
        }
        let pass_percent = raw.pass_percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pass_percent) || pass_percent == 0.0 {
            self.error(
                format!("{key}.pass_percent"),
                format!("{pass_percent}: above 0 and at most 100"),
            );
        }
        Some(Check {
            kind,
            mode,
            phase: raw.phase.clone(),
            after: self.opt_duration(
                &format!("{key}.after"),
                raw.after.as_deref(),
                Duration::ZERO,
                hour,
            ),
            abort: raw.abort.unwrap_or(false),
            pass_percent,
        })
    }
}

impl Validator<'_> {
    /// A check's `from`: workload sources (empty when not given: every source).
    fn sources_of(&mut self, key: &str, raw: Option<&RawNodeList>) -> Vec<String> {
        let list = match raw {
            None => return Vec::new(),
            Some(RawNodeList::One(n)) => vec![n.clone()],
            Some(RawNodeList::Many(v)) => v.clone(),
        };
        for n in &list {
            if !self.sources.contains(n) {
                self.error(
                    format!("{key}.from"),
                    format!(
                        "`{n}` is not a workload source ({})",
                        self.sources.join(", ")
                    ),
                );
            }
        }
        if list.is_empty() {
            self.error(format!("{key}.from"), "name at least one workload source");
        }
        list
    }

    /// The scenario's `[consensus]`, or an error saying the check needs it (without it the
    /// check could only ever fail).
    fn needs_consensus<'c>(
        &mut self,
        key: &str,
        consensus: Option<&'c ConsensusSpec>,
        kind: &str,
    ) -> Option<&'c ConsensusSpec> {
        if consensus.is_none() {
            self.error(
                format!("{key}.kind"),
                format!("`{kind}` needs [consensus] in the scenario"),
            );
        }
        consensus
    }
}
