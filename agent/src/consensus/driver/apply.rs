//! Raft's `Ready` from the driver's side: persist, send, apply committed decisions, and
//! publish where this node stands.

use std::sync::Arc;
use std::time::Instant;

use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{
    CommittedState, Decision, MembershipChange, NodeId, RaftEntry, RaftEntryKind, RaftEnvelope,
};
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use ring::digest;

use super::{cell::conf_change, Driver, PUBLISH_EVERY};
use crate::consensus::store::{record_of, Batch, LogStore, SnapshotRecord, StoreError};
use crate::consensus::wire::{conf_to_wire, to_wire};
use crate::consensus::{ConsensusStatus, DecisionRecord};
use crate::telemetry::names;

impl Driver {
    pub(super) fn on_ready(&mut self) -> Result<(), StoreError> {
        let Some(mut raw) = self.raw.take() else {
            return Ok(());
        };
        let handled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle_ready(&mut raw)));
        let result = match handled {
            Ok(result) => result,
            Err(_) => {
                self.fail("raft-rs aborted while handling a Ready");
                return Ok(());
            }
        };
        if self.failed.is_some() {
            return Ok(());
        }
        for id in self.unreachable.drain(..) {
            raw.report_unreachable(id);
        }
        self.raw = Some(raw);
        result
    }

    fn handle_ready(&mut self, raw: &mut RawNode<LogStore>) -> Result<(), StoreError> {
        if !raw.has_ready() {
            return Ok(());
        }
        let mut ready = raw.ready();
        self.send(ready.take_messages());
        let mut received = None;
        if !ready.snapshot().is_empty() {
            let record = record_of(ready.snapshot());
            self.restore(&record);
            if self.failed.is_some() {
                return Ok(());
            }
            received = Some(record);
        }
        let applied = self.apply(raw, ready.take_committed_entries());
        self.store.persist(Batch {
            entries: ready.entries(),
            hard_state: ready.hs().cloned(),
            received,
            applied: applied.then(|| self.applied_record()),
        })?;
        self.send(ready.take_persisted_messages());
        let mut light = raw.advance(ready);
        self.send(light.take_messages());
        let applied = self.apply(raw, light.take_committed_entries());
        if applied || light.commit_index().is_some() {
            self.store.persist(Batch {
                applied: Some(self.applied_record()),
                ..Batch::default()
            })?;
        }
        raw.advance_apply();
        Ok(())
    }

    fn restore(&mut self, record: &SnapshotRecord) {
        match CommittedState::decode(&record.data, plexus_protocol::consensus::MAX_SNAPSHOT_DATA) {
            Ok(state) => self.state = state,
            Err(reason) => {
                // Stamping the old state with the snapshot's index would serve a wrong state.
                self.fail(&format!("snapshot from the leader is unreadable: {reason}"));
                return;
            }
        }
        self.state.applied_index = record.index;
        self.state.applied_term = record.term;
        self.conf = record.conf.clone();
        let _ = self.state_tx.send(Arc::new(self.state.clone()));
    }

    fn applied_record(&self) -> SnapshotRecord {
        SnapshotRecord {
            index: self.state.applied_index,
            term: self.state.applied_term,
            conf: self.conf.clone(),
            data: self.state.encode(),
        }
    }

    /// Applies committed entries in order; true when any was applied.
    fn apply(&mut self, raw: &mut RawNode<LogStore>, entries: Vec<Entry>) -> bool {
        if entries.is_empty() {
            return false;
        }
        for entry in entries {
            if entry.index <= self.state.applied_index {
                continue;
            }
            match entry.entry_type {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.state.skip(entry.index, entry.term)
                }
                EntryType::EntryNormal => match Decision::decode(&entry.data) {
                    Ok(decision) => {
                        self.state.apply(entry.index, entry.term, &decision);
                        self.applied(&decision);
                    }
                    Err(reason) => {
                        tracing::error!(index = entry.index, %reason, "committed entry unreadable; skipped");
                        self.state.skip(entry.index, entry.term);
                    }
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_membership(raw, &entry)
                }
            }
        }
        let _ = self.state_tx.send(Arc::new(self.state.clone()));
        true
    }

    fn apply_membership(&mut self, raw: &mut RawNode<LogStore>, entry: &Entry) {
        let change = match MembershipChange::decode(&entry.context) {
            Ok(change) => change,
            Err(reason) => {
                tracing::error!(index = entry.index, %reason, "membership entry unreadable; skipped");
                self.state.skip(entry.index, entry.term);
                return;
            }
        };
        match raw.apply_conf_change(&conf_change(&change)) {
            Ok(conf) => {
                self.conf = conf_to_wire(&conf);
                self.state.apply(entry.index, entry.term, &change.decision);
                self.peers
                    .entry(change.raft_id)
                    .or_insert((change.node.to_string(), None));
                tracing::info!(step = ?change.step, node = %change.node, voters = ?self.conf.voters,
                    "membership change applied");
                self.applied(&change.decision);
            }
            Err(error) => {
                tracing::error!(%error, "membership change refused by raft");
                self.state.skip(entry.index, entry.term);
            }
        }
    }

    fn applied(&self, decision: &Decision) {
        self.telemetry
            .counter(names::DECISIONS_APPLIED, &[("kind", decision.kind.label())])
            .increment(1);
        tracing::info!(kind = decision.kind.label(), reason = %decision.reason, "decision applied");
    }

    pub(super) fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let Some(wire) = to_wire(&message) else {
                continue;
            };
            let addr = self.peers.get(&to).and_then(|(_, addr)| *addr);
            let snapshot = wire.snapshot.is_some();
            let envelope = RaftEnvelope {
                sender: self.node.clone(),
                message: wire,
            };
            let sent = match addr {
                Some(addr) => self
                    .outbox
                    .send(to, addr, envelope.to_frame_bytes(), snapshot),
                None => false,
            };
            if !sent {
                self.telemetry
                    .counter(names::RAFT_MESSAGES_DROPPED, &[])
                    .increment(1);
                // Reported once the `Ready` is handled (raw-rs is borrowed until then).
                self.unreachable.push(to);
            }
        }
    }

    pub(super) fn publish_status(&mut self) {
        let name = |id: &u64| {
            if *id == self.id {
                Some(self.node.to_string())
            } else {
                self.peers.get(id).map(|(n, _)| n.clone())
            }
        };
        let status = match &self.raw {
            None => ConsensusStatus {
                role: if self.failed.is_some() {
                    "failed"
                } else if self.state.voters.is_empty() {
                    "waiting"
                } else {
                    "non_voter"
                },
                raft_id: self.id,
                applied: self.state.applied_index,
                voters: self.state.voters.iter().map(|v| v.to_string()).collect(),
                ..ConsensusStatus::default()
            },
            Some(raw) => {
                let leader = raw.raft.leader_id;
                ConsensusStatus {
                    role: if self.conf.voters.contains(&self.id) {
                        "voter"
                    } else if self.conf.learners.contains(&self.id) {
                        "learner"
                    } else {
                        "non_voter"
                    },
                    raft_id: self.id,
                    term: raw.raft.term,
                    leader: (leader != 0).then(|| name(&leader)).flatten(),
                    is_leader: raw.raft.state == StateRole::Leader,
                    leader_caught_up: raw.raft.state == StateRole::Leader
                        && raw.raft.commit_to_current_term(),
                    commit: raw.raft.raft_log.committed,
                    applied: self.state.applied_index,
                    voters: self.conf.voters.iter().filter_map(name).collect(),
                    learners: self.conf.learners.iter().filter_map(name).collect(),
                    proposals: self.proposals,
                }
            }
        };
        if status.role == "voter" && self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.last_publish = Instant::now();
            if let Some(publisher) = &self.publisher {
                publisher.publish(&plexus_protocol::ConsensusSummary {
                    term: status.term,
                    leader: status
                        .leader
                        .as_ref()
                        .and_then(|l| NodeId::new(l.clone()).ok()),
                    commit: status.commit,
                    voters: {
                        let mut voters: Vec<NodeId> = status
                            .voters
                            .iter()
                            .filter_map(|v| NodeId::new(v.clone()).ok())
                            .collect();
                        voters.sort_unstable();
                        voters
                    },
                    state: self.state.without_keys(),
                    proposed: Vec::new(),
                });
            }
        }
        let changed = *self.status.borrow() != status;
        if changed {
            let t = &self.telemetry;
            t.gauge(names::RAFT_TERM, &[]).set(status.term as f64);
            t.gauge(names::RAFT_IS_LEADER, &[])
                .set(if status.is_leader { 1.0 } else { 0.0 });
            t.gauge(names::RAFT_COMMIT_INDEX, &[])
                .set(status.commit as f64);
            t.gauge(names::RAFT_APPLIED_INDEX, &[])
                .set(status.applied as f64);
            t.gauge(names::RAFT_VOTERS, &[])
                .set(status.voters.len() as f64);
            let _ = self.status.send(status);
        }
    }
}

/// `/v1/decisions`' view of one log entry.
pub(in crate::consensus) fn record_of_entry(entry: RaftEntry) -> DecisionRecord {
    let mut hasher = digest::Context::new(&digest::SHA256);
    hasher.update(&entry.data);
    hasher.update(&entry.context);
    let digest: String = hasher
        .finish()
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let (kind, decision) = match entry.kind {
        RaftEntryKind::Normal if entry.data.is_empty() => ("empty".to_owned(), None),
        RaftEntryKind::Normal => match Decision::decode(&entry.data) {
            Ok(d) => (d.kind.label().to_owned(), Some(d)),
            Err(_) => ("unreadable".to_owned(), None),
        },
        _ => match MembershipChange::decode(&entry.context) {
            Ok(c) => ("membership".to_owned(), Some(c.decision)),
            Err(_) => ("membership".to_owned(), None),
        },
    };
    DecisionRecord {
        index: entry.index,
        term: entry.term,
        digest,
        kind,
        decision,
    }
}
