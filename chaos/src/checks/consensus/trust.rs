//! The checks on trust decisions (pure): no healthy node quarantined, a quarantine within a
//! bound, a node under the leader's suspicion, and a CA rotation carried through. The evidence
//! is what the agents' `/v1/quarantine` and `/v1/certs` showed, looked at every second.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{ConsensusEvidence, Judged};
use crate::checks::window;
use crate::record::RunRecord;
use crate::scenario::{Check, CheckKind, Target};

/// A node the leader listed under suspicion at one look (`/v1/quarantine` `suspicions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspicionLook {
    pub at: Duration,
    pub node: String,
    /// The distinct observers that reported it.
    pub observers: Vec<String>,
    /// How many a verdict needs.
    pub needed: usize,
    /// Why no verdict although enough observers reported it, if a rule held it back.
    pub held: Option<String>,
}

/// One agent's `/v1/certs` at one look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertsLook {
    pub at: Duration,
    pub node: String,
    pub leaf_serial: String,
    /// The committed root the leaf chains to (`None`: none of them).
    pub issued_by: Option<String>,
    /// The root the leader signs with now.
    pub issuer: Option<String>,
    pub rotations: u64,
    /// The roots this agent trusts now, by serial.
    pub bundle: Vec<String>,
}

/// Fault kinds that are an operator's actions on healthy agents, not faults of theirs.
const OPERATOR_ACTIONS: [&str; 2] = ["ca-rotate", "policy-change"];

/// `no-healthy-quarantined` and `quarantine-within`, on the quarantines seen: (first time the
/// harness saw it, node).
pub(super) fn judge_quarantine(
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
                    let f = record
                        .faults
                        .iter()
                        .find(|f| !OPERATOR_ACTIONS.contains(&f.kind.as_str()));
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
            let who = node.unwrap_or_else(|| "(no faulted node)".into());
            match took {
                Some(t) => Judged {
                    pass: t <= *max,
                    measured: Some(t.as_secs_f64() * 1e3),
                    threshold,
                    detail: format!("{who} quarantined {:.1} s after its fault", t.as_secs_f64()),
                },
                None => Judged {
                    pass: false,
                    measured: None,
                    threshold,
                    detail: format!("{who} was never quarantined"),
                },
            }
        }
        _ => {
            // An operator's action (a CA rotation, a policy change) leaves its targets healthy.
            let faulted: Vec<&String> = record
                .faults
                .iter()
                .filter(|f| !OPERATOR_ACTIONS.contains(&f.kind.as_str()))
                .flat_map(|f| &f.targets)
                .collect();
            let mut healthy: Vec<&str> = quarantined
                .iter()
                .map(|(_, n)| n)
                .filter(|n| !faulted.contains(n))
                .map(|n| n.as_str())
                .collect();
            healthy.sort_unstable();
            healthy.dedup();
            let seen: BTreeSet<&str> = quarantined.iter().map(|(_, n)| n.as_str()).collect();
            Judged {
                pass: healthy.is_empty(),
                measured: Some(healthy.len() as f64),
                threshold: "0 nodes".into(),
                detail: match (healthy.is_empty(), seen.is_empty()) {
                    (true, true) => "no node was quarantined".into(),
                    (true, false) => format!(
                        "quarantined only faulted nodes: {}",
                        seen.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                    _ => format!("quarantined although healthy: {}", healthy.join(", ")),
                },
            }
        }
    }
}

/// `suspected`: from the window's start until the leader first listed the target under
/// suspicion.
pub(super) fn judge_suspected(check: &Check, record: &RunRecord, e: &ConsensusEvidence) -> Judged {
    let CheckKind::Suspected { target, max } = &check.kind else {
        return fail("not a suspicion check");
    };
    let threshold = format!("<= {} ms", max.as_millis());
    let Some(w) = window(check, record) else {
        return Judged {
            threshold,
            ..fail(&format!("no `{}` window in this run", check.mode.as_str()))
        };
    };
    let node = match target {
        Target::Node(n) => n.as_str(),
        _ => "",
    };
    let first = e
        .suspicions
        .iter()
        .find(|s| s.at >= w.start && s.node == node);
    match first {
        Some(s) => {
            let took = s.at.saturating_sub(w.start);
            Judged {
                pass: took <= *max,
                measured: Some(took.as_secs_f64() * 1e3),
                threshold,
                detail: format!(
                    "the leader suspected {node} (observers {}; a verdict needs {})",
                    s.observers.join(", "),
                    s.needed
                ),
            }
        }
        None => Judged {
            threshold,
            ..fail(&format!(
                "the leader never listed {node} under suspicion ({} looks at a leader's suspicions)",
                e.suspicion_looks
            ))
        },
    }
}

/// Where a CA rotation stood, from the agents' `/v1/certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old: String,
    pub new: String,
    /// When every agent answering at the end first showed a leaf issued by the new root.
    pub reissued: Option<Duration>,
    /// When, besides, none of them trusted the old root any more.
    pub retired: Option<Duration>,
    /// At the end, the agents still short of it: `node: why`.
    pub lagging: Vec<String>,
}

/// A rotation started at `from`: the issuer before it, the new one, and when the agents
/// answering at the end (a look in the last 3 s of looks) all had leaves of the new root and
/// no longer trusted the old one. Each poll round is judged on every such agent's latest look
/// so far (an agent that did not answer that round keeps its previous look).
pub fn rotation(looks: &[CertsLook], from: Duration) -> Result<Rotation, String> {
    let old = looks
        .iter()
        .filter(|l| l.at <= from)
        .filter_map(|l| l.issuer.clone().map(|i| (l.at, i)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, i)| i)
        .ok_or_else(|| {
            format!(
                "no agent named the CA's issuer before the rotation at {:.1} s",
                from.as_secs_f64()
            )
        })?;
    let new = looks
        .iter()
        .filter(|l| l.at >= from)
        .find_map(|l| l.issuer.clone().filter(|i| *i != old))
        .ok_or_else(|| format!("the issuer stayed {old}: no rotation was committed"))?;
    let end = looks.iter().map(|l| l.at).max().unwrap_or_default();
    let nodes: BTreeSet<&str> = looks
        .iter()
        .filter(|l| l.at + Duration::from_secs(3) >= end)
        .map(|l| l.node.as_str())
        .collect();
    let rounds: BTreeSet<Duration> = looks
        .iter()
        .filter(|l| l.at >= from)
        .map(|l| l.at)
        .collect();
    let mut sorted: Vec<&CertsLook> = looks.iter().collect();
    sorted.sort_by_key(|l| l.at);
    let mut latest: BTreeMap<&str, &CertsLook> = BTreeMap::new();
    let mut pending = sorted.into_iter().peekable();
    let (mut reissued, mut retired) = (None, None);
    let mut lagging = Vec::new();
    for round in rounds {
        while let Some(l) = pending.next_if(|l| l.at <= round) {
            latest.insert(l.node.as_str(), l);
        }
        let short: Vec<(&str, Short)> = nodes
            .iter()
            .filter_map(|n| {
                let why = match latest.get(n) {
                    None => Short::NoLook,
                    Some(l) if l.issued_by.as_ref() != Some(&new) => Short::OldLeaf(format!(
                        "leaf {} issued by {}",
                        short(&l.leaf_serial),
                        l.issued_by.as_deref().map_or("no committed root", short)
                    )),
                    Some(l) if l.bundle.contains(&old) => Short::TrustsOld,
                    Some(_) => return None,
                };
                Some((*n, why))
            })
            .collect();
        if reissued.is_none() && short.iter().all(|(_, s)| *s == Short::TrustsOld) {
            reissued = Some(round);
        }
        if retired.is_none() && short.is_empty() {
            retired = Some(round);
        }
        lagging = short
            .into_iter()
            .map(|(n, s)| match s {
                Short::NoLook => format!("{n}: no look"),
                Short::OldLeaf(why) => format!("{n}: {why}"),
                Short::TrustsOld => format!("{n}: still trusts the old root"),
            })
            .collect();
    }
    Ok(Rotation {
        old,
        new,
        reissued,
        retired: retired.filter(|_| lagging.is_empty()),
        lagging,
    })
}

/// What keeps one agent from counting as rotated.
#[derive(Debug, PartialEq, Eq)]
enum Short {
    NoLook,
    OldLeaf(String),
    TrustsOld,
}

/// `ca-rotated`: measured from the first `ca-rotate` fault at or after the window's start.
pub(super) fn judge_ca_rotated(check: &Check, record: &RunRecord, e: &ConsensusEvidence) -> Judged {
    let CheckKind::CaRotated { max } = &check.kind else {
        return fail("not a rotation check");
    };
    let threshold = format!("<= {} ms to retire the old root", max.as_millis());
    let start = window(check, record).and_then(|w| {
        record
            .faults
            .iter()
            .filter(|f| f.kind == "ca-rotate" && f.start >= w.start)
            .map(|f| f.start)
            .min()
    });
    let Some(start) = start else {
        return Judged {
            threshold,
            ..fail("no ca-rotate fault was applied in the check's window")
        };
    };
    if e.certs.is_empty() {
        return Judged {
            threshold,
            ..fail("no agent answered /v1/certs during the run")
        };
    }
    let r = match rotation(&e.certs, start) {
        Ok(r) => r,
        Err(why) => {
            return Judged {
                threshold,
                ..fail(&why)
            }
        }
    };
    let secs = |d: Option<Duration>| {
        d.map_or("never".to_owned(), |d| {
            format!("after {:.1} s", d.saturating_sub(start).as_secs_f64())
        })
    };
    let mut detail = format!(
        "root {} -> {}; every leaf reissued {}; old root retired everywhere {}",
        short(&r.old),
        short(&r.new),
        secs(r.reissued),
        secs(r.retired)
    );
    if !r.lagging.is_empty() {
        detail.push_str(&format!("; at the end: {}", r.lagging.join(", ")));
    }
    let took = r.retired.map(|t| t.saturating_sub(start));
    Judged {
        pass: took.is_some_and(|t| t <= *max),
        measured: took.map(|t| t.as_secs_f64() * 1e3),
        threshold,
        detail,
    }
}

/// A serial's first 12 hex digits, for people.
fn short(serial: &str) -> &str {
    serial.get(..12).unwrap_or(serial)
}

fn fail(detail: &str) -> Judged {
    Judged {
        pass: false,
        measured: None,
        threshold: String::new(),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests;
