//! The decision log during a run: waiting for the group to form, asking the agents who leads
//! and who votes when a fault aims at a role, the looks the watcher takes, and the evidence
//! read from every voter at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, Seen};
use crate::checks::{roles, AgentConsensus, ConsensusEvidence, ConsensusLook, LogEntry, VoterLog};
use crate::cluster::{Cluster, ProcState};
use crate::observe::decisions::{self, Answer};
use crate::record::{Event, EventKind};
use crate::schedule::Roles;

/// How long a fault aimed at a role waits for the agents to name it.
const ROLES_LIMIT: Duration = Duration::from_secs(10);
/// How long the end of a run waits for the voters' logs to end on the same entry.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(250);

/// What the watcher saw of the decision log.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub looks: Vec<ConsensusLook>,
    /// Every committed (index → digests) seen on any agent.
    pub acknowledged: BTreeMap<u64, BTreeSet<String>>,
}

/// The running agents' admin addresses.
fn running(cluster: &Mutex<Cluster>) -> Vec<(String, SocketAddr)> {
    let c = lock(cluster);
    c.nodes
        .iter()
        .filter(|n| n.state == ProcState::Running)
        .map(|n| (n.name.clone(), n.admin))
        .collect()
}

/// Asks every agent in `nodes`.
pub(super) async fn ask(nodes: &[(String, SocketAddr)]) -> Vec<(String, Option<Answer>)> {
    let mut out = Vec::new();
    for (name, admin) in nodes {
        out.push((name.clone(), decisions::get(*admin).await));
    }
    out
}

fn standing(answers: &[(String, Option<Answer>)]) -> Vec<(&str, &AgentConsensus)> {
    answers
        .iter()
        .filter_map(|(n, a)| Some((n.as_str(), &a.as_ref()?.0)))
        .collect()
}

/// Why the group is not formed yet, for warm-up: empty once `expect` voters agree on a leader
/// and every agent knows them.
pub(super) async fn not_ready(expect: usize, nodes: &[(String, SocketAddr)]) -> Vec<String> {
    let answers: Vec<(String, Option<AgentConsensus>)> = ask(nodes)
        .await
        .into_iter()
        .map(|(n, a)| (n, a.map(|a| a.0)))
        .collect();
    roles::not_ready(expect, &answers)
}

/// The roles the running agents report, once they name a leader (when `leader` is needed) or
/// any voters, within [`ROLES_LIMIT`].
pub(super) async fn roles_now(cluster: &Mutex<Cluster>, leader: bool) -> Result<Roles, String> {
    let deadline = Instant::now() + ROLES_LIMIT;
    loop {
        let answers = ask(&running(cluster)).await;
        let given = standing(&answers);
        let roles = Roles {
            leader: roles::leader(&given),
            voters: roles::voter_set(&given),
        };
        let known = if leader {
            roles.leader.is_some()
        } else {
            !roles.voters.is_empty()
        };
        if known {
            return Ok(roles);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the agents named no {} within {ROLES_LIMIT:?}",
                if leader { "leader" } else { "voters" }
            ));
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One look at every running agent's decision log, for the watcher: the looks, the committed
/// entries seen (acknowledged), and a timeline event for each newly committed one.
pub(super) async fn look(nodes: &[(String, SocketAddr)], at: Duration, seen: &Mutex<Seen>) {
    let answers = ask(nodes).await;
    let mut s = lock(seen);
    let Seen {
        events, consensus, ..
    } = &mut *s;
    for (node, answer) in answers {
        let Some((agent, entries)) = answer else {
            continue;
        };
        for (entry, what) in entries {
            let digests = consensus.acknowledged.entry(entry.index).or_default();
            let new_index = digests.is_empty();
            if digests.insert(entry.digest.clone()) {
                let detail = if new_index {
                    format!("committed #{} (term {}) {what}", entry.index, entry.term)
                } else {
                    format!(
                        "#{} committed again with another digest on {node}: {what}",
                        entry.index
                    )
                };
                events.push(Event {
                    at,
                    kind: EventKind::Decision,
                    subject: Some(node.clone()),
                    observer: Some(node.clone()),
                    detail,
                });
            }
        }
        consensus.looks.push(ConsensusLook { at, node, agent });
    }
}

/// The voters' logs at the end: the voters the agents name, each one's committed tail, read
/// again (bounded) until every voter's log ends on the same entry, so a commit in flight at
/// the end is not taken for a divergence.
pub(super) async fn evidence(cluster: &Mutex<Cluster>, collected: Collected) -> ConsensusEvidence {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let (logs, silent) = loop {
        let answers = ask(&running(cluster)).await;
        let voters = roles::voter_set(&standing(&answers));
        let mut logs: Vec<VoterLog> = Vec::new();
        let mut silent = Vec::new();
        for voter in &voters {
            match answers.iter().find(|(n, _)| n == voter) {
                Some((_, Some((_, entries)))) => logs.push((
                    voter.clone(),
                    entries
                        .iter()
                        .map(|(e, _)| e.clone())
                        .collect::<Vec<LogEntry>>(),
                )),
                _ => silent.push(voter.clone()),
            }
        }
        let last = logs.first().and_then(|(_, l)| l.last());
        let settled =
            !logs.is_empty() && silent.is_empty() && logs.iter().all(|(_, l)| l.last() == last);
        if settled || Instant::now() >= deadline {
            break (logs, silent);
        }
        tokio::time::sleep(RETRY).await;
    };
    let acknowledged = collected
        .acknowledged
        .into_iter()
        .flat_map(|(i, digests)| digests.into_iter().map(move |d| (i, d)))
        .collect();
    ConsensusEvidence {
        logs,
        silent,
        acknowledged,
        quarantined: None,
        looks: collected.looks,
        ..ConsensusEvidence::default()
    }
}
