//! Raft messages between agents, in the project's own encoding.
//!
//! raft-rs 0.7 speaks protobuf 2 (`eraftpb`), whose parser has a known advisory
//! (RUSTSEC-2024-0437). Plexus never hands bytes from the network to it: a Raft message travels
//! as a [`RaftEnvelope`], plain data decoded by bincode with every size bounded, and the agent
//! builds raft-rs's message from it field by field. Only the message types that are meant to
//! cross the network exist here: a proposal, a local tick or a status report cannot be sent by a
//! peer at all, and a conf-change entry's data is carried as opaque bytes that no one parses.

use serde::{Deserialize, Serialize};

use crate::frame::{FrameMessage, FrameType, MAX_FRAME_PAYLOAD};
use crate::identity::NodeId;

/// Largest snapshot payload a message may carry.
pub const MAX_SNAPSHOT_DATA: usize = 768 * 1024;
/// Most voters or learners in one configuration.
pub const MAX_MEMBERS: usize = 16;

/// One Raft message from one agent to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// The sending node; must be the node of the connection's certificate, and the Raft ID in
    /// `message.from` must be this node's.
    pub sender: NodeId,
    pub message: RaftMessage,
}

/// The Raft message types that travel between agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessageKind {
    Append,
    AppendResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    Heartbeat,
    HeartbeatResponse,
    TransferLeader,
    TimeoutNow,
    RequestPreVote,
    RequestPreVoteResponse,
}

/// The kind of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftEntryKind {
    Normal,
    ConfChange,
    ConfChangeV2,
}

/// A Raft log entry. `data` is a [`crate::Decision`] for normal entries and opaque otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEntry {
    pub kind: RaftEntryKind,
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// A Raft configuration (raft-rs's `ConfState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

/// A snapshot of the committed state at `index`/`term`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftSnapshot {
    pub data: Vec<u8>,
    pub conf_state: RaftConfState,
    pub index: u64,
    pub term: u64,
}

/// raft-rs's `Message`, minus what only a local node may say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMessage {
    pub kind: RaftMessageKind,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<RaftEntry>,
    pub commit: u64,
    pub commit_term: u64,
    pub snapshot: Option<RaftSnapshot>,
    pub request_snapshot: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Vec<u8>,
    pub priority: i64,
}

impl FrameMessage for RaftEnvelope {
    const FRAME_TYPE: FrameType = FrameType::Raft;
    const MAX_PAYLOAD: usize = MAX_FRAME_PAYLOAD;

    fn validate(&self) -> Result<(), String> {
        let message = &self.message;
        if message.from == 0 || message.to == 0 {
            return Err("raft IDs must not be 0".into());
        }
        if let Some(snapshot) = &message.snapshot {
            if snapshot.data.len() > MAX_SNAPSHOT_DATA {
                return Err(format!(
                    "snapshot of {} bytes exceeds {MAX_SNAPSHOT_DATA}",
                    snapshot.data.len()
                ));
            }
            let conf = &snapshot.conf_state;
            if [
                &conf.voters,
                &conf.learners,
                &conf.voters_outgoing,
                &conf.learners_next,
            ]
            .iter()
            .any(|ids| ids.len() > MAX_MEMBERS)
            {
                return Err(format!(
                    "a configuration lists more than {MAX_MEMBERS} nodes"
                ));
            }
        }
        if message.kind == RaftMessageKind::Snapshot && message.snapshot.is_none() {
            return Err("a snapshot message without a snapshot".into());
        }
        // raft-rs trusts its peers: entries that are not the run `index + 1, index + 2, ...`
        // with terms that never fall and never pass the message's make it slice out of bounds
        // or abort. Such a message is refused here, before raft-rs sees it.
        let mut previous_term = 0;
        for (i, entry) in message.entries.iter().enumerate() {
            if Some(entry.index) != message.index.checked_add(i as u64 + 1) {
                return Err(format!(
                    "entry {i} has index {}, not {} + {}",
                    entry.index,
                    message.index,
                    i + 1
                ));
            }
            if entry.term < previous_term || entry.term > message.term || entry.term == 0 {
                return Err(format!(
                    "entry {} has term {} out of order",
                    entry.index, entry.term
                ));
            }
            previous_term = entry.term;
        }
        if let Some(snapshot) = &message.snapshot {
            check_conf(&snapshot.conf_state)?;
            if snapshot.index == 0 || snapshot.term == 0 || snapshot.term > message.term {
                return Err("a snapshot with a zero or future index or term".into());
            }
        }
        Ok(())
    }
}

/// A configuration raft-rs can restore: no ID twice in a list, none both voter and learner
/// (incoming or outgoing), at least one voter.
fn check_conf(conf: &RaftConfState) -> Result<(), String> {
    let unique = |ids: &[u64]| {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] != w[1]) && !sorted.contains(&0)
    };
    let lists = [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ];
    if !lists.iter().all(|ids| unique(ids)) {
        return Err("a configuration lists a node twice, or node 0".into());
    }
    let overlaps = |a: &[u64], b: &[u64]| a.iter().any(|id| b.contains(id));
    if overlaps(&conf.voters, &conf.learners)
        || overlaps(&conf.voters_outgoing, &conf.learners)
        || overlaps(&conf.voters, &conf.learners_next)
    {
        return Err("a configuration lists a node as voter and learner".into());
    }
    if conf.voters.is_empty() {
        return Err("a configuration without voters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn envelope() -> RaftEnvelope {
        RaftEnvelope {
            sender: NodeId::new("node-a").unwrap(),
            message: RaftMessage {
                kind: RaftMessageKind::Append,
                to: 2,
                from: 1,
                term: 3,
                log_term: 3,
                index: 7,
                entries: vec![RaftEntry {
                    kind: RaftEntryKind::Normal,
                    term: 3,
                    index: 8,
                    data: b"decision".to_vec(),
                    context: vec![],
                }],
                commit: 7,
                commit_term: 3,
                snapshot: None,
                request_snapshot: 0,
                reject: false,
                reject_hint: 0,
                context: vec![],
                priority: 0,
            },
        }
    }

    #[test]
    fn envelope_round_trips_through_a_frame() {
        let bytes = envelope().to_frame_bytes();
        let (frame, used) = Frame::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(RaftEnvelope::from_frame(&frame).unwrap(), envelope());
    }

    #[test]
    fn oversized_snapshot_and_zero_ids_are_refused() {
        let mut zero = envelope();
        zero.message.from = 0;
        assert!(zero.validate().is_err());
        let mut big = envelope();
        big.message.kind = RaftMessageKind::Snapshot;
        big.message.snapshot = Some(RaftSnapshot {
            data: vec![0; MAX_SNAPSHOT_DATA + 1],
            conf_state: RaftConfState::default(),
            index: 1,
            term: 1,
        });
        assert!(big.validate().is_err());
        let mut missing = envelope();
        missing.message.kind = RaftMessageKind::Snapshot;
        assert!(missing.validate().is_err());
    }

    #[test]
    fn entries_raft_rs_would_trip_over_are_refused() {
        let mut gap = envelope();
        gap.message.entries[0].index = 9;
        assert!(gap.validate().is_err(), "not index + 1");
        let mut future = envelope();
        future.message.entries[0].term = 4;
        assert!(future.validate().is_err(), "entry term above the message's");
        let mut falling = envelope();
        let mut second = falling.message.entries[0].clone();
        second.index = 9;
        second.term = 2;
        falling.message.entries.push(second);
        assert!(falling.validate().is_err(), "terms must not fall");
        let snapshot = |conf: RaftConfState| {
            let mut e = envelope();
            e.message.kind = RaftMessageKind::Snapshot;
            e.message.entries.clear();
            e.message.snapshot = Some(RaftSnapshot {
                data: vec![],
                conf_state: conf,
                index: 5,
                term: 3,
            });
            e
        };
        let both = RaftConfState {
            voters: vec![1, 2],
            learners: vec![2],
            ..RaftConfState::default()
        };
        assert!(snapshot(both).validate().is_err());
        let twice = RaftConfState {
            voters: vec![1, 1],
            ..RaftConfState::default()
        };
        assert!(snapshot(twice).validate().is_err());
        assert!(snapshot(RaftConfState::default()).validate().is_err());
        let good = RaftConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..RaftConfState::default()
        };
        assert!(snapshot(good).validate().is_ok());
    }

    #[test]
    fn every_truncation_of_an_envelope_is_an_error() {
        let bytes = envelope().to_frame_bytes();
        let payload = &bytes[crate::FRAME_HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(RaftEnvelope::from_payload(&payload[..cut]).is_err());
        }
    }
}
