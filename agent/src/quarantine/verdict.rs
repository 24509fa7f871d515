//! The leader's quarantine verdicts, pure: which nodes to quarantine and release, given what
//! every member reports in gossip and what the log has committed. Time is passed in.
//!
//! Each tick the verdict reads every routable member's published reports (an observer that is
//! itself quarantined is not heard) and remembers, per suspected node, the last time each
//! distinct observer reported it. A node is quarantined when, within `window`:
//!
//! - at least `min_observers` distinct observers reported it; by default a majority of the peers
//!   that talk to it (members with a dependency edge to a service it hosts, members hosting a
//!   service it calls, and the observers themselves), and **never fewer than 2**, so one faulty
//!   or lying observer cannot isolate anyone;
//! - it is alive in gossip (a dead node needs no quarantine), is not the leader, and its
//!   quarantine would leave fewer than a majority of the voters quarantined and at most
//!   `max_share` of the members quarantined (counting verdicts proposed and not committed yet).
//!
//! At most one node is quarantined per tick. Reports about a node that restarted (a new gossip
//! generation) or was just released are ignored for [`QUIET_AFTER_CHANGE`]: they describe the
//! process or the episode that is over.
//!
//! A quarantined node is released after its probation (`probation`, times the number of times
//! this leader saw it quarantined, up to [`MAX_STRIKES`]) once no observer has reported it since
//! the quarantine ([`SETTLE`] after it, so reports still in flight do not count). The probation
//! runs on this leader's clock from when it first saw the quarantine, so a new leader waits a
//! full probation: conservative rather than wrong. Operators release with [`release_decision`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use plexus_protocol::{CommittedState, Decision, DecisionKind, NodeId, PeerReport};
use serde::Serialize;

use super::{QuarantineSettings, SeenReleases};
use crate::decide::{Proposer, RESEND_AFTER};
use crate::gossip::view::{Member, MemberState, MeshView};

mod decisions;
use decisions::quarantine_decision;
pub use decisions::release_decision;

/// How long reports about a node are ignored after it restarted or was released.
pub const QUIET_AFTER_CHANGE: Duration = Duration::from_secs(5);
/// Reports seen this soon after a quarantine are still the ones that caused it.
pub const SETTLE: Duration = Duration::from_secs(5);
/// The largest multiple of `probation` a repeatedly quarantined node waits.
pub const MAX_STRIKES: u32 = 8;

/// A node under suspicion, as the leader sees it now (`/v1/quarantine`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspicion {
    pub node: NodeId,
    /// Distinct observers that reported it within the window, sorted.
    pub observers: Vec<NodeId>,
    /// What each observer reported (its most severe report), aligned with `observers`.
    pub reports: Vec<PeerReport>,
    /// Distinct observers a verdict needs.
    pub needed: usize,
    /// Peers that talk to it (dependency edges either way, and the observers).
    pub talking: usize,
    /// Why no verdict although enough observers reported it, if a rule holds it back.
    pub held: Option<String>,
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    report: PeerReport,
}

#[derive(Debug, Default)]
struct Subject {
    generation: Option<u64>,
    quiet_until: Option<Instant>,
    /// The latest report of each observer.
    seen: BTreeMap<NodeId, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Proposed {
    quarantine: bool,
    at: Instant,
}

/// The leader's memory for quarantine verdicts.
#[derive(Debug)]
pub struct QuarantineVerdict {
    settings: QuarantineSettings,
    subjects: BTreeMap<NodeId, Subject>,
    /// Committed quarantines, with when this leader first saw each.
    quarantined: BTreeMap<NodeId, Instant>,
    /// How many times this leader saw a node quarantined, and when it was last released.
    strikes: BTreeMap<NodeId, (u32, Option<Instant>)>,
    awaiting: BTreeMap<NodeId, Proposed>,
    suspicions: Vec<Suspicion>,
    releases: SeenReleases,
}

fn severity(report: &PeerReport) -> f64 {
    f64::from(report.value) / f64::from(report.reference).max(0.01)
}

impl QuarantineVerdict {
    pub fn new(settings: QuarantineSettings) -> Self {
        Self {
            settings,
            subjects: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            strikes: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            suspicions: Vec::new(),
            releases: SeenReleases::default(),
        }
    }

    pub fn settings(&self) -> &QuarantineSettings {
        &self.settings
    }

    /// The nodes under suspicion at the last tick.
    pub fn suspicions(&self) -> &[Suspicion] {
        &self.suspicions
    }

    /// What to propose now: releases due, and at most one quarantine.
    pub fn decide(
        &mut self,
        view: &MeshView,
        committed: &CommittedState,
        proposer: &Proposer,
        now: Instant,
    ) -> Vec<Decision> {
        let quarantined = &committed.trust.quarantined;
        self.awaiting.retain(|node, p| {
            p.quarantine != quarantined.contains_key(node)
                && now.saturating_duration_since(p.at) < RESEND_AFTER
        });
        self.follow_committed(committed, now);
        self.follow_generations(view, now);
        self.ingest(view, committed, now);
        let mut out = self.releases(proposer, now);
        self.suspicions.clear();
        let mut proposed = false;
        let candidates: Vec<NodeId> = self
            .subjects
            .iter()
            .filter(|(node, s)| !s.seen.is_empty() && !quarantined.contains_key(*node))
            .map(|(node, _)| node.clone())
            .collect();
        for node in candidates {
            let Some(member) = view.members.iter().find(|m| m.node_id == node.as_str()) else {
                continue;
            };
            let mut suspicion = self.suspicion(view, committed, member, &node);
            if suspicion.observers.len() >= suspicion.needed {
                suspicion.held = self.held(view, committed, proposer, member, &node);
                if suspicion.held.is_none() && !self.settings.enabled {
                    suspicion.held = Some("quarantine is disabled on the leader".into());
                }
                if suspicion.held.is_none() && proposed {
                    suspicion.held = Some("one verdict per tick".into());
                }
                if suspicion.held.is_none() {
                    out.push(quarantine_decision(&suspicion, member, proposer));
                    self.awaiting.insert(
                        node.clone(),
                        Proposed {
                            quarantine: true,
                            at: now,
                        },
                    );
                    proposed = true;
                }
            }
            self.suspicions.push(suspicion);
        }
        out
    }

    /// Notices quarantines and releases the log committed.
    fn follow_committed(&mut self, committed: &CommittedState, now: Instant) {
        let quarantined = &committed.trust.quarantined;
        for node in quarantined.keys() {
            if !self.quarantined.contains_key(node) {
                self.quarantined.insert(node.clone(), now);
                let strikes = self.strikes.entry(node.clone()).or_insert((0, None));
                strikes.0 = (strikes.0 + 1).min(MAX_STRIKES);
                // The evidence has been used: what counts from now on is new.
                if let Some(subject) = self.subjects.get_mut(node) {
                    subject.seen.clear();
                }
            }
        }
        let mut released: BTreeSet<NodeId> = self
            .quarantined
            .keys()
            .filter(|n| !quarantined.contains_key(*n))
            .cloned()
            .collect();
        // A quarantine released between two ticks was never seen here, but its episode is
        // over all the same: the observers' reports about it are spent.
        released.extend(
            self.releases
                .news(&committed.trust.released)
                .into_iter()
                .filter(|n| !quarantined.contains_key(n)),
        );
        for node in released {
            self.quarantined.remove(&node);
            if let Some(strikes) = self.strikes.get_mut(&node) {
                strikes.1 = Some(now);
            }
            let subject = self.subjects.entry(node).or_default();
            subject.seen.clear();
            subject.quiet_until = Some(now + QUIET_AFTER_CHANGE);
        }
        let forget_after = self.settings.probation * 10;
        self.strikes.retain(|node, (_, released)| {
            self.quarantined.contains_key(node)
                || released.is_none_or(|at| now.saturating_duration_since(at) < forget_after)
        });
    }

    /// A member that restarted starts with a clean slate.
    fn follow_generations(&mut self, view: &MeshView, now: Instant) {
        for member in &view.members {
            let Ok(node) = NodeId::new(member.node_id.as_str()) else {
                continue;
            };
            let subject = self.subjects.entry(node).or_default();
            if subject.generation.is_some_and(|g| g != member.generation) {
                subject.seen.clear();
                subject.quiet_until = Some(now + QUIET_AFTER_CHANGE);
            }
            subject.generation = Some(member.generation);
        }
    }

    /// Reads every routable, unquarantined member's reports.
    fn ingest(&mut self, view: &MeshView, committed: &CommittedState, now: Instant) {
        let quarantined = &committed.trust.quarantined;
        for member in view.members.iter().filter(|m| m.state.routable()) {
            let Ok(observer) = NodeId::new(member.node_id.as_str()) else {
                continue;
            };
            if quarantined.contains_key(&observer) {
                continue;
            }
            for report in member.observations.iter().filter(|r| r.subject != observer) {
                let subject = self.subjects.entry(report.subject.clone()).or_default();
                if subject.quiet_until.is_some_and(|until| now < until) {
                    continue;
                }
                let replace = match subject.seen.get(&observer) {
                    Some(seen) if seen.at == now => severity(report) > severity(&seen.report),
                    _ => true,
                };
                if replace {
                    subject.seen.insert(
                        observer.clone(),
                        Seen {
                            at: now,
                            report: report.clone(),
                        },
                    );
                }
            }
        }
        let window = self.settings.window;
        let known: BTreeSet<&str> = view.members.iter().map(|m| m.node_id.as_str()).collect();
        self.subjects.retain(|node, subject| {
            subject
                .seen
                .retain(|_, seen| now.saturating_duration_since(seen.at) <= window);
            !subject.seen.is_empty() || known.contains(node.as_str())
        });
    }

    /// Releases whose probation is over without fresh reports.
    fn releases(&mut self, proposer: &Proposer, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        for (node, since) in &self.quarantined {
            if self.awaiting.contains_key(node) {
                continue;
            }
            let strikes = self.strikes.get(node).map_or(1, |s| s.0.max(1));
            let probation = self.settings.probation * strikes;
            if now.saturating_duration_since(*since) < probation {
                continue;
            }
            let fresh = self.subjects.get(node).is_some_and(|s| {
                s.seen
                    .values()
                    .any(|seen| seen.at.saturating_duration_since(*since) >= SETTLE)
            });
            if fresh {
                continue;
            }
            out.push(proposer.decision(
                DecisionKind::Release { node: node.clone() },
                format!(
                    "{node}: probation of {} over without a new report",
                    humantime::format_duration(probation)
                ),
                Vec::new(),
            ));
            self.awaiting.insert(
                node.clone(),
                Proposed {
                    quarantine: false,
                    at: now,
                },
            );
        }
        out
    }

    fn suspicion(
        &self,
        view: &MeshView,
        committed: &CommittedState,
        member: &Member,
        node: &NodeId,
    ) -> Suspicion {
        let seen = &self.subjects[node].seen;
        let quarantined = &committed.trust.quarantined;
        let mut talking = talking_peers(view, member);
        talking.extend(seen.keys().map(|o| o.to_string()));
        talking
            .retain(|peer| NodeId::new(peer.as_str()).is_ok_and(|p| !quarantined.contains_key(&p)));
        let needed = self
            .settings
            .min_observers
            .unwrap_or(talking.len() / 2 + 1)
            .max(2);
        Suspicion {
            node: node.clone(),
            observers: seen.keys().cloned().collect(),
            reports: seen.values().map(|s| s.report.clone()).collect(),
            needed,
            talking: talking.len(),
            held: None,
        }
    }

    /// Why a node with enough observers is not quarantined now, if anything holds it back.
    fn held(
        &self,
        view: &MeshView,
        committed: &CommittedState,
        proposer: &Proposer,
        member: &Member,
        node: &NodeId,
    ) -> Option<String> {
        if *node == proposer.node {
            return Some("the leader never quarantines itself".into());
        }
        if member.state != MemberState::Alive {
            return Some(format!("{} in gossip", member.state.as_label()));
        }
        if self.awaiting.contains_key(node) {
            return Some("verdict proposed, not committed yet".into());
        }
        let in_quarantine: BTreeSet<&NodeId> = committed
            .trust
            .quarantined
            .keys()
            .chain(
                self.awaiting
                    .iter()
                    .filter(|(_, p)| p.quarantine)
                    .map(|(n, _)| n),
            )
            .collect();
        let voters = &committed.voters;
        if voters.contains(node) {
            let majority = voters.len() / 2 + 1;
            let out = voters.iter().filter(|v| in_quarantine.contains(v)).count();
            if out + 1 >= majority {
                return Some(format!(
                    "{} of {} voters would be quarantined: never a majority",
                    out + 1,
                    voters.len()
                ));
            }
        }
        let mut members: BTreeSet<&str> = view
            .members
            .iter()
            .filter(|m| m.state.routable())
            .map(|m| m.node_id.as_str())
            .collect();
        members.extend(in_quarantine.iter().map(|n| n.as_str()));
        let cap = (members.len() as f64 * self.settings.max_share + 1e-9).floor() as usize;
        if in_quarantine.len() + 1 > cap {
            return Some(format!(
                "at most {cap} of {} members may be quarantined at once",
                members.len()
            ));
        }
        None
    }
}

/// Members that talk to `subject`: with a dependency edge to a service it hosts, or hosting a
/// service it calls. Routable members only, never the subject itself.
fn talking_peers(view: &MeshView, subject: &Member) -> BTreeSet<String> {
    let hosted: Vec<&plexus_protocol::ServiceName> = subject
        .summary
        .iter()
        .flat_map(|s| &s.services)
        .map(|s| &s.name)
        .collect();
    let called: Vec<&plexus_protocol::ServiceName> =
        subject.edges.iter().map(|e| &e.callee).collect();
    view.members
        .iter()
        .filter(|m| m.state.routable() && m.node_id != subject.node_id)
        .filter(|m| {
            m.edges.iter().any(|e| hosted.contains(&&e.callee))
                || m.summary
                    .iter()
                    .flat_map(|s| &s.services)
                    .any(|s| called.contains(&&s.name))
        })
        .map(|m| m.node_id.clone())
        .collect()
}

#[cfg(test)]
mod tests;
