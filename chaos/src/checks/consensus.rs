//! The checks that need the consensus log (identical voter logs, no acknowledged decision
//! lost, no healthy node quarantined, quarantine within a bound). Their logic is here and
//! tested; the evidence comes from the agents' `/v1/decisions` and `/v1/quarantine`, which
//! agents do not serve until consensus exists: then these checks say so (`not-evaluated`)
//! instead of passing.

use std::time::Duration;

use crate::record::{CheckResult, CheckStatus, RunRecord};
use crate::scenario::{CheckKind, Target};

/// One committed entry of a voter's decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    /// A digest of the entry's command.
    pub digest: String,
}

/// A voter's name and its committed log, in order.
pub type VoterLog = (String, Vec<LogEntry>);

/// What the agents exposed about their decision log at the end of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsensusEvidence {
    /// Each voter's committed log.
    pub logs: Vec<VoterLog>,
    /// Decisions the harness saw acknowledged (committed) during the run, as (index, digest).
    pub acknowledged: Vec<(u64, String)>,
    /// Quarantines committed during the run: (time, node).
    pub quarantined: Vec<(Duration, String)>,
}

/// Judges a consensus check; `None` for the other kinds. `Some(passed)` when judged.
pub(super) fn evaluate(
    kind: &CheckKind,
    record: &RunRecord,
    evidence: Option<&ConsensusEvidence>,
    result: &mut CheckResult,
) -> Option<bool> {
    let needs = matches!(
        kind,
        CheckKind::NoHealthyQuarantined
            | CheckKind::QuarantineWithin { .. }
            | CheckKind::VoterLogsIdentical
            | CheckKind::NoDecisionLost
    );
    if !needs {
        return None;
    }
    let Some(evidence) = evidence else {
        result.status = CheckStatus::NotEvaluated;
        result.detail =
            "needs the consensus decision log: the agents serve no /v1/decisions yet".into();
        return Some(false);
    };
    let (pass, measured, threshold, detail) = match kind {
        CheckKind::VoterLogsIdentical => match first_divergence(&evidence.logs) {
            None => (
                true,
                0.0,
                "0 divergent entries".to_owned(),
                format!("{} voters agree", evidence.logs.len()),
            ),
            Some(d) => (false, 1.0, "0 divergent entries".to_owned(), d),
        },
        CheckKind::NoDecisionLost => {
            let lost = lost_decisions(&evidence.acknowledged, &evidence.logs);
            let detail = if lost.is_empty() {
                format!(
                    "all {} acknowledged decisions committed",
                    evidence.acknowledged.len()
                )
            } else {
                format!(
                    "lost: {}",
                    lost.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (
                lost.is_empty(),
                lost.len() as f64,
                "0 lost".to_owned(),
                detail,
            )
        }
        CheckKind::NoHealthyQuarantined => {
            let faulted: Vec<&String> = record.faults.iter().flat_map(|f| &f.targets).collect();
            let healthy: Vec<&String> = evidence
                .quarantined
                .iter()
                .map(|(_, n)| n)
                .filter(|n| !faulted.contains(n))
                .collect();
            let detail = if healthy.is_empty() {
                "no node outside the faults' targets was quarantined".to_owned()
            } else {
                format!(
                    "quarantined although healthy: {}",
                    healthy
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (
                healthy.is_empty(),
                healthy.len() as f64,
                "0 nodes".to_owned(),
                detail,
            )
        }
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
                evidence
                    .quarantined
                    .iter()
                    .filter(|(at, n)| n == node && *at >= start)
                    .map(|(at, _)| at.saturating_sub(start))
                    .min()
            });
            match took {
                Some(t) => (
                    t <= *max,
                    t.as_secs_f64() * 1e3,
                    format!("<= {} ms", max.as_millis()),
                    String::new(),
                ),
                None => (
                    false,
                    f64::NAN,
                    format!("<= {} ms", max.as_millis()),
                    "never quarantined".into(),
                ),
            }
        }
        _ => return None,
    };
    result.status = if pass {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    result.measured = measured.is_finite().then_some(measured);
    result.threshold = threshold;
    result.detail = detail;
    Some(pass)
}

/// Where two voters' logs first disagree on an index both hold, if anywhere.
pub fn first_divergence(logs: &[VoterLog]) -> Option<String> {
    let (first_name, first) = logs.first()?;
    for (name, log) in &logs[1..] {
        for (a, b) in first.iter().zip(log) {
            if a != b {
                return Some(format!(
                    "{first_name} and {name} differ at index {}: term {} `{}` vs index {} term {} `{}`",
                    a.index, a.term, a.digest, b.index, b.term, b.digest
                ));
            }
        }
        if first.len() != log.len() {
            return Some(format!(
                "{first_name} holds {} entries, {name} {}",
                first.len(),
                log.len()
            ));
        }
    }
    None
}

/// Acknowledged decisions missing from (or different in) any voter's final log.
pub fn lost_decisions(acknowledged: &[(u64, String)], logs: &[VoterLog]) -> Vec<u64> {
    acknowledged
        .iter()
        .filter(|(index, digest)| {
            logs.iter()
                .any(|(_, log)| !log.iter().any(|e| e.index == *index && &e.digest == digest))
        })
        .map(|(i, _)| *i)
        .collect()
}
