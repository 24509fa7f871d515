//! The checks that need the decision log: identical voter logs, no acknowledged decision
//! lost, a canary's outcome, voters replaced, decisions resuming, and the trust decisions
//! (`trust.rs`): no healthy node quarantined, quarantine within a bound, a node under the
//! leader's suspicion, a CA rotation carried through. Their logic is here and tested on
//! synthetic evidence; the evidence comes from the agents' `/v1/decisions`, `/v1/quarantine`
//! and `/v1/certs`, polled during the run, and every voter's log read at its end.
//!
//! Without `[consensus]` in the scenario there is no evidence and these checks say so
//! (`not-evaluated`). With it, missing evidence (no voter answered, nothing committed seen) is
//! a failure, never a vacuous pass.

mod logs;
pub mod roles;
#[cfg(test)]
mod tests;
pub mod trust;

use std::collections::BTreeMap;
use std::time::Duration;

pub use logs::{first_divergence, lost_decisions};
pub use trust::{rotation, CertsLook, Rotation, SuspicionLook};

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
    /// Quarantines seen during the run: (when the harness first saw it, node), one per
    /// quarantine; `None` when no agent ever answered `/v1/quarantine`.
    pub quarantined: Option<Vec<(Duration, String)>>,
    /// The nodes the leader listed under suspicion, at each look.
    pub suspicions: Vec<SuspicionLook>,
    /// How many looks at a leader's `/v1/quarantine` there were.
    pub suspicion_looks: usize,
    /// Every look at an agent's `/v1/certs` (with the CA in the decision log), in time order.
    pub certs: Vec<CertsLook>,
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
                | CheckKind::Suspected { .. }
                | CheckKind::CaRotated { .. }
        );
    if !needs {
        return None;
    }
    let Some(evidence) = evidence else {
        result.status = CheckStatus::NotEvaluated;
        result.detail = "needs the decision log: the scenario configures no [consensus]".into();
        return Some(false);
    };
    let judged = match (kind, &evidence.quarantined) {
        // Nothing seen is not "nothing quarantined": without answers there is no evidence.
        (_, None) if quarantine => Judged {
            pass: false,
            measured: None,
            threshold: String::new(),
            detail: "no agent answered /v1/quarantine during the run: nothing to judge".into(),
        },
        (_, Some(quarantined)) if quarantine => trust::judge_quarantine(kind, record, quarantined),
        (CheckKind::Suspected { .. }, _) => trust::judge_suspected(check, record, evidence),
        (CheckKind::CaRotated { .. }, _) => trust::judge_ca_rotated(check, record, evidence),
        (CheckKind::VoterLogsIdentical, _) => judge_logs(evidence),
        (CheckKind::NoDecisionLost, _) => judge_lost(evidence),
        _ => judge_timeline(check, record, evidence),
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
            | CheckKind::QuarantineWithin { .. }
            | CheckKind::Suspected { .. }
            | CheckKind::CaRotated { .. }
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
