//! The trust decisions during a run: the quarantines every agent shows, the nodes its leader
//! suspects, and (with the CA in the decision log) each agent's certificates, looked at once a
//! second; turned into the evidence of the trust checks at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::{lock, Seen};
use crate::checks::{ConsensusEvidence, SuspicionLook};
use crate::observe::trust;

/// What the watcher saw of the trust decisions.
#[derive(Debug, Default)]
pub(super) struct Collected {
    /// Each quarantine, as (node, since Unix ms): when the harness first saw it.
    quarantines: BTreeMap<(String, u64), Duration>,
    /// Some agent answered `/v1/quarantine`.
    answered: bool,
    suspicions: Vec<SuspicionLook>,
    leader_looks: usize,
    certs: Vec<crate::checks::CertsLook>,
}

impl Collected {
    /// Adds what was seen to the decision log's evidence.
    pub(super) fn into_evidence(self, evidence: &mut ConsensusEvidence) {
        let mut quarantined: Vec<(Duration, String)> = self
            .quarantines
            .into_iter()
            .map(|((node, _), at)| (at, node))
            .collect();
        quarantined.sort();
        evidence.quarantined = self.answered.then_some(quarantined);
        evidence.suspicions = self.suspicions;
        evidence.suspicion_looks = self.leader_looks;
        evidence.certs = self.certs;
    }
}

/// One look at every running agent's `/v1/quarantine` (and `/v1/certs` when `certs`).
pub(super) async fn look(
    nodes: &[(String, SocketAddr)],
    at: Duration,
    certs: bool,
    seen: &Mutex<Seen>,
) {
    let mut answers = Vec::new();
    for (node, admin) in nodes {
        let quarantine = trust::quarantine(*admin).await;
        let leaf = match certs {
            true => trust::certs(*admin).await,
            false => None,
        };
        answers.push((node, quarantine, leaf));
    }
    let mut s = lock(seen);
    let collected = &mut s.trust;
    for (node, quarantine, leaf) in answers {
        if let Some(q) = quarantine {
            collected.answered = true;
            for (subject, since) in q.quarantined {
                collected.quarantines.entry((subject, since)).or_insert(at);
            }
            if q.leader {
                collected.leader_looks += 1;
                collected.suspicions.extend(q.suspicions.into_iter().map(
                    |(subject, observers, needed, held)| SuspicionLook {
                        at,
                        node: subject,
                        observers,
                        needed,
                        held,
                    },
                ));
            }
        }
        if let Some(mut leaf) = leaf {
            leaf.at = at;
            leaf.node = node.clone();
            collected.certs.push(leaf);
        }
    }
}
