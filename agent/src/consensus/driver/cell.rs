//! The cell's membership from the driver's side: forming the group, learning decisions from
//! gossip when not in it, and the leader's Autopilot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_protocol::{
    CommittedState, Decision, DecisionKind, MembershipChange, MembershipStep, NodeId,
};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use raft::StateRole;

use super::{unix_ms, Driver};
use crate::consensus::ids::raft_id;
use crate::consensus::membership::{choose_voters, plan_step, Candidate, Group, Step};
use crate::gossip::MemberState;

impl Driver {
    pub(super) fn candidates(&self) -> Vec<Candidate> {
        let view = self.view.borrow().clone();
        view.members
            .iter()
            .map(|m| Candidate {
                node_id: m.node_id.clone(),
                eligible: if m.local {
                    self.settings.bootstrap_expect.is_some()
                } else {
                    m.summary.as_ref().is_some_and(|s| s.voter_eligible)
                },
                zone: if m.local {
                    self.zone.clone()
                } else {
                    m.summary
                        .as_ref()
                        .map(|s| s.zone.clone())
                        .unwrap_or_default()
                },
                healthy: m.local || m.state.routable(),
                down_for: if m.state.routable() {
                    Duration::ZERO
                } else {
                    m.heartbeat_age
                },
                left: m.state == MemberState::Left,
            })
            .collect()
    }

    /// A voter removed from the group while it was away comes back with its old configuration:
    /// the others no longer talk to it, and it would serve its old state for ever. When the
    /// voters of a newer committed state (one a majority of them publish) do not include this
    /// node, it forgets its Raft state, keeps what it applied, and learns from gossip again.
    pub(super) fn notice_removal(&mut self) {
        if self.raw.is_none() || !self.conf.voters.contains(&self.id) {
            return;
        }
        let me = self.node.as_str();
        let view = self.view.borrow().clone();
        let published = voter_summaries(&view);
        let removed = published.iter().find(|(_, summary)| {
            let agreeing = published
                .iter()
                .filter(|(_, other)| other.voters == summary.voters)
                .count();
            summary.state.applied_index > self.state.applied_index
                && !summary.voters.iter().any(|v| v.as_str() == me)
                && agreeing * 2 > summary.voters.len()
        });
        let Some((publisher, summary)) = removed else {
            return;
        };
        tracing::warn!(%publisher, voters = ?summary.voters, applied = self.state.applied_index,
            "this node was removed from the decision group while away");
        self.forget_group();
    }

    /// A node that applied its own removal (a configuration without it) leaves the group too.
    pub(super) fn leave_if_removed(&mut self) {
        let conf = &self.conf;
        let removed = self.raw.is_some()
            && !conf.voters.is_empty()
            && !conf.voters.contains(&self.id)
            && !conf.learners.contains(&self.id)
            && !conf.learners_next.contains(&self.id);
        if removed {
            tracing::warn!(voters = ?conf.voters, "this node was removed from the decision group");
            self.forget_group();
        }
    }

    /// Forgets the Raft state (keeping what was applied), withdraws this node's summary from
    /// gossip (a summary with no voters, which nobody trusts), and learns from gossip again.
    fn forget_group(&mut self) {
        self.raw = None;
        self.conf = plexus_protocol::RaftConfState::default();
        if let Err(error) = self.store.reset() {
            tracing::error!(%error, "cannot forget the old Raft state");
        }
        if let Some(publisher) = &self.publisher {
            publisher.publish(&plexus_protocol::ConsensusSummary {
                term: 0,
                leader: None,
                commit: 0,
                voters: Vec::new(),
                state: self.state.without_keys(),
                proposed: Vec::new(),
            });
        }
    }

    /// A non-voter adopts the newest committed state that voters publish. Trust: when it knows
    /// the voters already, only theirs; before that, a state whose publisher is one of its own
    /// voters and whose voter set a majority of those voters publish too.
    pub(super) fn learn_from_gossip(&mut self) {
        let view = self.view.borrow().clone();
        let published = voter_summaries(&view);
        let known = &self.state.voters;
        let trusted = |node: &str, summary: &plexus_protocol::ConsensusSummary| {
            if !known.is_empty() {
                return known.iter().any(|v| v.as_str() == node);
            }
            let agreeing = published
                .iter()
                .filter(|(other, c)| {
                    c.voters == summary.voters
                        && summary.voters.iter().any(|v| v.as_str() == *other)
                })
                .count();
            agreeing * 2 > summary.voters.len()
        };
        let Some((_, best)) = published
            .iter()
            .filter(|(node, summary)| trusted(node, summary))
            .max_by_key(|(_, summary)| summary.state.applied_index)
        else {
            return;
        };
        if best.state.applied_index <= self.state.applied_index {
            return;
        }
        self.state = best.state.clone();
        let _ = self.state_tx.send(Arc::new(self.state.clone()));
        if let Err(error) = self.store.persist_learned(self.state.encode()) {
            tracing::warn!(%error, "cannot keep the learned decision state");
        }
    }

    /// Forms the group once `bootstrap_expect` members have been seen, unchanged, for a while;
    /// or joins the first voters another agent chose, when they include this node.
    pub(super) fn maybe_bootstrap(&mut self) {
        let Some(expect) = self.settings.bootstrap_expect else {
            return;
        };
        let members = self.candidates();
        let view = self.view.borrow().clone();
        let me = self.node.as_str();
        let groups: Vec<&plexus_protocol::ConsensusSummary> = view
            .members
            .iter()
            .filter_map(|m| m.consensus.as_ref())
            .filter(|c| !c.voters.is_empty())
            .collect();
        let voters = if let Some(group) = groups.first() {
            // A group exists: join it as a first voter if it names this node (and this node
            // was never removed from it: then only the leader may add it back), otherwise
            // wait for its leader to add this node (or learn its decisions from gossip).
            if !groups.iter().all(|g| g.voters == group.voters)
                || !group.voters.iter().any(|v| v.as_str() == me)
                || self.store.was_removed()
            {
                return;
            }
            group.voters.iter().map(|v| v.to_string()).collect()
        } else {
            let mut healthy: Vec<String> = members
                .iter()
                .filter(|m| m.healthy && m.eligible)
                .map(|m| m.node_id.clone())
                .collect();
            healthy.sort_unstable();
            if healthy.len() < expect {
                self.settling = None;
                return;
            }
            match &self.settling {
                Some((seen, since)) if *seen == healthy => {
                    if since.elapsed() < self.settings.bootstrap_settle {
                        return;
                    }
                }
                _ => {
                    self.settling = Some((healthy, Instant::now()));
                    return;
                }
            }
            let mine = choose_voters(&members, expect);
            if !self.agreed(&view, &mine) {
                return;
            }
            mine
        };
        if !voters.iter().any(|v| v == me) {
            return;
        }
        let mut voter_ids: Vec<NodeId> = voters
            .iter()
            .filter_map(|v| NodeId::new(v.clone()).ok())
            .collect();
        voter_ids.sort_unstable();
        let state = CommittedState {
            applied_index: 1,
            applied_term: 1,
            voters: voter_ids,
            services: Default::default(),
            trust: Default::default(),
        };
        let ids = voters.iter().map(|v| raft_id(v)).collect();
        tracing::info!(?voters, "forming the decision group");
        if let Err(error) = self.store.bootstrap(ids, state.encode()) {
            tracing::error!(%error, "cannot write the decision group's first state");
            return;
        }
        self.conf = self.store.applied().conf;
        self.state = state;
        let _ = self.state_tx.send(Arc::new(self.state.clone()));
        if let Err(error) = self.start_node() {
            tracing::error!(%error, "cannot start the Raft node");
        }
    }

    /// Publishes this node's proposed first voters, and says whether every one of them proposes
    /// the same set (then, and only then, the group forms).
    fn agreed(&self, view: &crate::gossip::MeshView, mine: &[String]) -> bool {
        let proposed: Vec<NodeId> = mine
            .iter()
            .filter_map(|v| NodeId::new(v.clone()).ok())
            .collect();
        if let Some(publisher) = &self.publisher {
            publisher.publish(&plexus_protocol::ConsensusSummary {
                term: 0,
                leader: None,
                commit: 0,
                voters: Vec::new(),
                state: CommittedState::default(),
                proposed: proposed.clone(),
            });
        }
        let me = self.node.as_str();
        mine.iter().filter(|v| v.as_str() != me).all(|voter| {
            view.members.iter().any(|m| {
                m.node_id == *voter && m.consensus.as_ref().is_some_and(|c| c.proposed == proposed)
            })
        })
    }

    /// The leader's Autopilot: at most one membership step at a time.
    pub(super) fn autopilot(&mut self) {
        let members = self.candidates();
        let Some(raw) = self.raw.as_mut() else { return };
        if raw.raft.state != StateRole::Leader {
            return;
        }
        let Some(target) = self
            .settings
            .bootstrap_expect
            .or(Some(self.conf.voters.len()))
        else {
            return;
        };
        let me = self.node.to_string();
        let name = |id: &u64| {
            if *id == self.id {
                Some(me.clone())
            } else {
                self.peers.get(id).map(|(n, _)| n.clone())
            }
        };
        let known = |ids: &[u64]| ids.iter().all(|id| name(id).is_some());
        if !known(&self.conf.voters) || !known(&self.conf.learners) {
            // A member this node cannot name yet: no membership step on partial knowledge.
            return;
        }
        let commit = raw.raft.raft_log.committed;
        let group = Group {
            voters: self.conf.voters.iter().filter_map(name).collect(),
            learners: self.conf.learners.iter().filter_map(name).collect(),
            caught_up: self
                .conf
                .learners
                .iter()
                .filter(|id| {
                    raw.raft
                        .prs()
                        .get(**id)
                        .is_some_and(|p| p.matched >= commit)
                })
                .filter_map(name)
                .collect(),
            target,
            pending: self
                .pending_membership
                .is_some_and(|i| i > self.state.applied_index)
                || raw.raft.has_pending_conf(),
        };
        let Some(step) = plan_step(&group, &members, self.settings.dead_voter_after) else {
            return;
        };
        let mut voters = group.voters.clone();
        let (kind, node, reason, down_for) = match &step {
            Step::AddLearner { node, replaces } => (
                MembershipStep::AddLearner,
                node.clone(),
                format!("voter {replaces} is down; {node} joins as a learner to replace it"),
                None,
            ),
            Step::Promote { node } => {
                voters.push(node.clone());
                (
                    MembershipStep::Promote,
                    node.clone(),
                    format!("learner {node} has caught up; it becomes a voter"),
                    None,
                )
            }
            Step::Remove { node, down_for } => {
                voters.retain(|v| v != node);
                (
                    MembershipStep::Remove,
                    node.clone(),
                    format!(
                        "voter {node} has been down for {}s; removed",
                        down_for.as_secs()
                    ),
                    Some(down_for.as_secs_f64()),
                )
            }
        };
        let Ok(node_id) = NodeId::new(node.clone()) else {
            return;
        };
        voters.sort_unstable();
        let decision = Decision {
            kind: DecisionKind::Voters {
                voters: voters
                    .iter()
                    .filter_map(|v| NodeId::new(v.clone()).ok())
                    .collect(),
            },
            reason,
            evidence: down_for
                .map(|secs| plexus_protocol::Evidence {
                    subject: node.clone(),
                    signal: "down_seconds".into(),
                    value: secs,
                    reference: Some(self.settings.dead_voter_after.as_secs_f64()),
                })
                .into_iter()
                .collect(),
            proposer: self.node.clone(),
            proposed_at_ms: unix_ms(),
        };
        let change = MembershipChange {
            step: kind,
            node: node_id,
            raft_id: raft_id(&node),
            decision,
        };
        let Ok(context) = change.encode() else { return };
        tracing::info!(step = ?change.step, node = %change.node, "membership change proposed");
        let cc = conf_change(&change);
        if raw.propose_conf_change(context, cc).is_ok() {
            self.pending_membership = Some(raw.raft.raft_log.last_index());
            self.proposals += 1;
        }
    }
}

/// raft-rs's conf change for one membership step, built field by field.
pub(super) fn conf_change(change: &MembershipChange) -> ConfChangeV2 {
    let mut single = ConfChangeSingle {
        node_id: change.raft_id,
        ..ConfChangeSingle::default()
    };
    single.set_change_type(match change.step {
        MembershipStep::AddLearner => ConfChangeType::AddLearnerNode,
        MembershipStep::Promote => ConfChangeType::AddNode,
        MembershipStep::Remove => ConfChangeType::RemoveNode,
    });
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc
}

/// The consensus summaries routable peers publish as voters of the set they name (a summary
/// whose publisher is not among its own voters is a proposal or a withdrawal: never trusted).
fn voter_summaries(
    view: &crate::gossip::MeshView,
) -> Vec<(&str, &plexus_protocol::ConsensusSummary)> {
    view.members
        .iter()
        .filter(|m| !m.local && m.state.routable())
        .filter_map(|m| m.consensus.as_ref().map(|c| (m.node_id.as_str(), c)))
        .filter(|(node, c)| c.voters.iter().any(|v| v.as_str() == *node))
        .collect()
}
