//! The checks that need the decision log: identical voter logs, no acknowledged decision
//! lost, a canary's outcome, voters replaced, decisions resuming, and (once the agents have
//! quarantine) no healthy node quarantined, quarantine within a bound. Their logic is here and
//! tested on synthetic evidence; the evidence comes from the agents' `/v1/decisions`, polled
//! during the run and read from every voter at its end.
//!
//! Without `[consensus]` in the scenario there is no evidence and these checks say so
//! (`not-evaluated`). With it, missing evidence (no voter answered, nothing committed seen) is
//! a failure, never a vacuous pass.

mod logs;
pub mod roles;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

pub use logs::{first_divergence, lost_decisions};

use super::{targets, window};
use crate::record::{CheckResult, CheckStatus, RunRecord};
use crate::scenario::{Check, CheckKind, Target};

/// One committed entry of a voter's decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// A digest of the entry's command.
    pub digest: String,
}

/// A voter's name and the committed tail of its log, in order.
pub type VoterLog = (String, Vec<LogEntry>);

/// One agent's `/v1/decisions` status and committed state, entries aside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentConsensus {
    /// `voter`, `learner`, `non_voter` or `waiting`.
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    /// The voters it knows (a voter's configuration, a non-voter's learned state).
    pub voters: Vec<String>,
    /// Per service with a release: its phase (`Progressing`, `Promoted`, `RolledBack`) and
    /// the canary's share in percent.
    pub canaries: BTreeMap<String, (String, u64)>,
}

/// One look at one agent during the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusLook {
    pub at: Duration,
    pub node: String,
    pub agent: AgentConsensus,
}

/// What the agents exposed about their decision log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsensusEvidence {
    /// Each voter's committed log at the end (the voters the agents named then).
    pub logs: Vec<VoterLog>,
    /// Voters the agents named at the end that did not answer.
    pub silent: Vec<String>,
    /// Committed entries the harness saw during the run, as (index, digest).
    pub acknowledged: Vec<(u64, String)>,
    /// Quarantines committed during the run: (time, node); `None` while the agents have no
    /// quarantine decisions.
    pub quarantined: Option<Vec<(Duration, String)>>,
    /// Every look at an agent's `/v1/decisions` during the run, in time order.
    pub looks: Vec<ConsensusLook>,
}

/// Judges a consensus check; `None` for the other kinds. `Some(passed)` when judged.
pub(super) fn evaluate(
    check: &Check,
    record: &RunRecord,
    evidence: Option<&ConsensusEvidence>,
    result: &mut CheckResult,
) -> Option<bool> {
    let kind = &check.kind;
    let quarantine = matches!(
        kind,
        CheckKind::NoHealthyQuarantined | CheckKind::QuarantineWithin { .. }
    );
    let needs = quarantine
        || matches!(
            kind,
            CheckKind::VoterLogsIdentical
                | CheckKind::NoDecisionLost
                | CheckKind::CanaryOutcome { .. }
                | CheckKind::VotersReplaced { .. }
                | CheckKind::DecisionsResume { .. }
        );
    if !needs {
        return None;
    }
    let Some(evidence) = evidence else {
        result.status = CheckStatus::NotEvaluated;
        result.detail = "needs the decision log: the scenario configures no [consensus]".into();
        return Some(false);
    };
    let judged = if quarantine {
        let Some(quarantined) = &evidence.quarantined else {
            result.status = CheckStatus::NotEvaluated;
            result.detail = "needs quarantine decisions, which the agents do not make yet".into();
            return Some(false);
        };
        judge_quarantine(kind, record, quarantined)
    } else {
        match kind {
            CheckKind::VoterLogsIdentical => judge_logs(evidence),
            CheckKind::NoDecisionLost => judge_lost(evidence),
            _ => judge_timeline(check, record, evidence),
        }
    };
    let Judged {
        pass,
        measured,
        threshold,
        detail,
    } = judged;
    result.status = if pass {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    result.measured = measured.filter(|m| m.is_finite());
    result.threshold = threshold;
    result.detail = detail;
    if matches!(
        kind,
        CheckKind::CanaryOutcome { .. }
            | CheckKind::VotersReplaced { .. }
            | CheckKind::DecisionsResume { .. }
    ) {
        result.unit = "ms".into();
    }
    Some(pass)
}

struct Judged {
    pass: bool,
    measured: Option<f64>,
    threshold: String,
    detail: String,
}

fn judge_logs(evidence: &ConsensusEvidence) -> Judged {
    let threshold = "0 divergent entries".to_owned();
    let problem = if evidence.logs.is_empty() && evidence.silent.is_empty() {
        Some("no voter answered /v1/decisions at the end".to_owned())
    } else if !evidence.silent.is_empty() {
        Some(format!(
            "voters {} did not answer at the end",
            evidence.silent.join(", ")
        ))
    } else {
        first_divergence(&evidence.logs)
    };
    match problem {
        None => Judged {
            pass: true,
            measured: Some(0.0),
            threshold,
            detail: format!(
                "{} voters agree up to index {}",
                evidence.logs.len(),
                evidence.logs[0].1.last().map_or(0, |e| e.index)
            ),
        },
        Some(d) => Judged {
            pass: false,
            measured: Some(1.0),
            threshold,
            detail: d,
        },
    }
}

fn judge_lost(evidence: &ConsensusEvidence) -> Judged {
    let threshold = "0 lost".to_owned();
    let missing = if evidence.logs.is_empty() {
        Some("no voter's log to look in: no voter answered at the end")
    } else if evidence.acknowledged.is_empty() {
        Some("no committed entry was seen during the run: nothing to vouch for")
    } else {
        None
    };
    if let Some(why) = missing {
        return Judged {
            pass: false,
            measured: None,
            threshold,
            detail: why.into(),
        };
    }
    let lost = lost_decisions(&evidence.acknowledged, &evidence.logs);
    let detail = if lost.is_empty() {
        format!(
            "all {} acknowledged decisions are in the voters' logs",
            evidence.acknowledged.len()
        )
    } else {
        let list: Vec<String> = lost.iter().map(|i| i.to_string()).collect();
        format!("lost (index): {}", list.join(", "))
    };
    Judged {
        pass: lost.is_empty(),
        measured: Some(lost.len() as f64),
        threshold,
        detail,
    }
}

/// The checks judged on the looks during the run, from their window's start.
fn judge_timeline(check: &Check, record: &RunRecord, evidence: &ConsensusEvidence) -> Judged {
    let Some(w) = window(check, record) else {
        return Judged {
            pass: false,
            measured: None,
            threshold: String::new(),
            detail: format!("no `{}` window in this run", check.mode.as_str()),
        };
    };
    let looks = &evidence.looks;
    let within = |max: &Duration, at: Duration, detail: String| {
        let took = at.saturating_sub(w.start);
        Judged {
            pass: took <= *max,
            measured: Some(took.as_secs_f64() * 1e3),
            threshold: format!("<= {} ms", max.as_millis()),
            detail,
        }
    };
    let never = |max: &Duration, detail: String| Judged {
        pass: false,
        measured: None,
        threshold: format!("<= {} ms", max.as_millis()),
        detail,
    };
    match &check.kind {
        CheckKind::CanaryOutcome {
            service,
            expect,
            max,
        } => {
            let (first, last) = roles::canary_end(looks, service, *expect, w.start);
            let want = expect.agent_phase();
            let stray: Vec<String> = last
                .iter()
                .filter(|(_, p)| !p.starts_with(want))
                .map(|(n, p)| format!("{n}: {p}"))
                .collect();
            match first {
                None => {
                    let seen: Vec<String> = last.iter().map(|(n, p)| format!("{n}: {p}")).collect();
                    never(
                        max,
                        format!("never {}; at the end {}", expect.as_str(), seen.join(", ")),
                    )
                }
                Some(at) if !stray.is_empty() => {
                    let mut j = within(max, at, String::new());
                    j.pass = false;
                    j.detail = format!(
                        "committed {} but at the end not every agent shows it: {}",
                        expect.as_str(),
                        stray.join(", ")
                    );
                    j
                }
                Some(at) => within(
                    max,
                    at,
                    format!("{service}: {} on every agent at the end", expect.as_str()),
                ),
            }
        }
        CheckKind::VotersReplaced {
            target,
            max,
            voters,
        } => {
            let dead = match target {
                Target::Node(n) => vec![n.clone()],
                _ => targets(target, record, &w),
            };
            match roles::replaced(looks, &dead, *voters, w.start) {
                Err(e) => never(max, e),
                Ok(None) => never(
                    max,
                    format!(
                        "the voters never left out {} with {voters} members",
                        dead.join(", ")
                    ),
                ),
                Ok(Some(at)) => within(
                    max,
                    at,
                    format!("{} replaced; {voters} voters again", dead.join(", ")),
                ),
            }
        }
        CheckKind::DecisionsResume { max } => {
            match roles::resumed(looks, w.start, w.end, &|node, at| {
                // Agents a process or network fault holds at that moment are out by design.
                record.faults.iter().any(|f| {
                    !f.kind.starts_with("backend-")
                        && f.targets.iter().any(|t| t == node)
                        && f.start <= at
                        && at < f.end
                })
            }) {
                Err(e) => never(max, format!("at the window's end: {e}")),
                Ok(at) => within(
                    max,
                    at,
                    "one leader named by every voter; every agent caught up".into(),
                ),
            }
        }
        _ => never(&Duration::ZERO, "not a timeline check".into()),
    }
}

fn judge_quarantine(
    kind: &CheckKind,
    record: &RunRecord,
    quarantined: &[(Duration, String)],
) -> Judged {
    match kind {
        CheckKind::QuarantineWithin { target, max } => {
            let (node, start) = match target {
                Target::Node(n) => (
                    Some(n.clone()),
                    record
                        .faults
                        .iter()
                        .filter(|f| f.targets.contains(n))
                        .map(|f| f.start)
                        .min(),
                ),
                _ => {
                    let f = record.faults.first();
                    (
                        f.and_then(|f| f.targets.first().cloned()),
                        f.map(|f| f.start),
                    )
                }
            };
            let took = node.as_ref().zip(start).and_then(|(node, start)| {
                quarantined
                    .iter()
                    .filter(|(at, n)| n == node && *at >= start)
                    .map(|(at, _)| at.saturating_sub(start))
                    .min()
            });
            let threshold = format!("<= {} ms", max.as_millis());
            match took {
                Some(t) => Judged {
                    pass: t <= *max,
                    measured: Some(t.as_secs_f64() * 1e3),
                    threshold,
                    detail: String::new(),
                },
                None => Judged {
                    pass: false,
                    measured: None,
                    threshold,
                    detail: "never quarantined".into(),
                },
            }
        }
        _ => {
            let faulted: Vec<&String> = record.faults.iter().flat_map(|f| &f.targets).collect();
            let healthy: Vec<&str> = quarantined
                .iter()
                .map(|(_, n)| n)
                .filter(|n| !faulted.contains(n))
                .map(|n| n.as_str())
                .collect();
            Judged {
                pass: healthy.is_empty(),
                measured: Some(healthy.len() as f64),
                threshold: "0 nodes".into(),
                detail: if healthy.is_empty() {
                    "no node outside the faults' targets was quarantined".into()
                } else {
                    format!("quarantined although healthy: {}", healthy.join(", "))
                },
            }
        }
    }
}
