//! raft-rs's protobuf types to and from the project's own [`plexus_protocol::RaftEnvelope`].
//!
//! Conversion is field by field: nothing here serializes or parses protobuf. A message type that
//! must not cross the network (a proposal, a local tick, a status report) has no wire form, so
//! [`to_wire`] refuses it and no peer can send one.

use bytes::Bytes;
use plexus_protocol::{
    RaftConfState, RaftEntry, RaftEntryKind, RaftMessage, RaftMessageKind, RaftSnapshot,
};
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

/// raft-rs's message as it travels, or `None` for a type that never leaves the node.
pub fn to_wire(message: &Message) -> Option<RaftMessage> {
    Some(RaftMessage {
        kind: kind_to_wire(message.msg_type)?,
        to: message.to,
        from: message.from,
        term: message.term,
        log_term: message.log_term,
        index: message.index,
        entries: message.entries.iter().map(entry_to_wire).collect(),
        commit: message.commit,
        commit_term: message.commit_term,
        snapshot: message.snapshot.as_ref().map(snapshot_to_wire),
        request_snapshot: message.request_snapshot,
        reject: message.reject,
        reject_hint: message.reject_hint,
        context: message.context.to_vec(),
        priority: message.priority,
    })
}

/// raft-rs's message from its wire form.
pub fn from_wire(message: RaftMessage) -> Message {
    let mut out = Message {
        msg_type: kind_from_wire(message.kind),
        to: message.to,
        from: message.from,
        term: message.term,
        log_term: message.log_term,
        index: message.index,
        commit: message.commit,
        commit_term: message.commit_term,
        request_snapshot: message.request_snapshot,
        reject: message.reject,
        reject_hint: message.reject_hint,
        context: Bytes::from(message.context),
        priority: message.priority,
        ..Message::default()
    };
    out.set_entries(message.entries.into_iter().map(entry_from_wire).collect());
    if let Some(snapshot) = message.snapshot {
        out.set_snapshot(snapshot_from_wire(snapshot));
    }
    out
}

pub fn entry_to_wire(entry: &Entry) -> RaftEntry {
    RaftEntry {
        kind: match entry.entry_type {
            EntryType::EntryNormal => RaftEntryKind::Normal,
            EntryType::EntryConfChange => RaftEntryKind::ConfChange,
            EntryType::EntryConfChangeV2 => RaftEntryKind::ConfChangeV2,
        },
        term: entry.term,
        index: entry.index,
        data: entry.data.to_vec(),
        context: entry.context.to_vec(),
    }
}

pub fn entry_from_wire(entry: RaftEntry) -> Entry {
    Entry {
        entry_type: match entry.kind {
            RaftEntryKind::Normal => EntryType::EntryNormal,
            RaftEntryKind::ConfChange => EntryType::EntryConfChange,
            RaftEntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
        },
        term: entry.term,
        index: entry.index,
        data: Bytes::from(entry.data),
        context: Bytes::from(entry.context),
        ..Entry::default()
    }
}

pub fn conf_to_wire(conf: &ConfState) -> RaftConfState {
    RaftConfState {
        voters: conf.voters.clone(),
        learners: conf.learners.clone(),
        voters_outgoing: conf.voters_outgoing.clone(),
        learners_next: conf.learners_next.clone(),
        auto_leave: conf.auto_leave,
    }
}

pub fn conf_from_wire(conf: RaftConfState) -> ConfState {
    ConfState {
        voters: conf.voters,
        learners: conf.learners,
        voters_outgoing: conf.voters_outgoing,
        learners_next: conf.learners_next,
        auto_leave: conf.auto_leave,
        ..ConfState::default()
    }
}

pub fn snapshot_to_wire(snapshot: &Snapshot) -> RaftSnapshot {
    let meta = snapshot.get_metadata();
    RaftSnapshot {
        data: snapshot.data.to_vec(),
        conf_state: conf_to_wire(meta.get_conf_state()),
        index: meta.index,
        term: meta.term,
    }
}

pub fn snapshot_from_wire(snapshot: RaftSnapshot) -> Snapshot {
    let mut out = Snapshot::default();
    out.set_data(Bytes::from(snapshot.data));
    let meta = out.mut_metadata();
    meta.index = snapshot.index;
    meta.term = snapshot.term;
    meta.set_conf_state(conf_from_wire(snapshot.conf_state));
    out
}

fn kind_to_wire(kind: MessageType) -> Option<RaftMessageKind> {
    Some(match kind {
        MessageType::MsgAppend => RaftMessageKind::Append,
        MessageType::MsgAppendResponse => RaftMessageKind::AppendResponse,
        MessageType::MsgRequestVote => RaftMessageKind::RequestVote,
        MessageType::MsgRequestVoteResponse => RaftMessageKind::RequestVoteResponse,
        MessageType::MsgSnapshot => RaftMessageKind::Snapshot,
        MessageType::MsgHeartbeat => RaftMessageKind::Heartbeat,
        MessageType::MsgHeartbeatResponse => RaftMessageKind::HeartbeatResponse,
        MessageType::MsgTransferLeader => RaftMessageKind::TransferLeader,
        MessageType::MsgTimeoutNow => RaftMessageKind::TimeoutNow,
        MessageType::MsgRequestPreVote => RaftMessageKind::RequestPreVote,
        MessageType::MsgRequestPreVoteResponse => RaftMessageKind::RequestPreVoteResponse,
        MessageType::MsgHup
        | MessageType::MsgBeat
        | MessageType::MsgPropose
        | MessageType::MsgUnreachable
        | MessageType::MsgSnapStatus
        | MessageType::MsgCheckQuorum
        | MessageType::MsgReadIndex
        | MessageType::MsgReadIndexResp => return None,
    })
}

fn kind_from_wire(kind: RaftMessageKind) -> MessageType {
    match kind {
        RaftMessageKind::Append => MessageType::MsgAppend,
        RaftMessageKind::AppendResponse => MessageType::MsgAppendResponse,
        RaftMessageKind::RequestVote => MessageType::MsgRequestVote,
        RaftMessageKind::RequestVoteResponse => MessageType::MsgRequestVoteResponse,
        RaftMessageKind::Snapshot => MessageType::MsgSnapshot,
        RaftMessageKind::Heartbeat => MessageType::MsgHeartbeat,
        RaftMessageKind::HeartbeatResponse => MessageType::MsgHeartbeatResponse,
        RaftMessageKind::TransferLeader => MessageType::MsgTransferLeader,
        RaftMessageKind::TimeoutNow => MessageType::MsgTimeoutNow,
        RaftMessageKind::RequestPreVote => MessageType::MsgRequestPreVote,
        RaftMessageKind::RequestPreVoteResponse => MessageType::MsgRequestPreVoteResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_entries_and_a_snapshot_round_trips() {
        let mut message = Message {
            msg_type: MessageType::MsgSnapshot,
            to: 2,
            from: 1,
            term: 4,
            commit: 9,
            ..Message::default()
        };
        message.set_entries(
            vec![Entry {
                entry_type: EntryType::EntryConfChangeV2,
                term: 4,
                index: 10,
                data: Bytes::from_static(b"opaque"),
                context: Bytes::from_static(b"ctx"),
                ..Entry::default()
            }]
            .into(),
        );
        let conf = ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(Bytes::from_static(b"state"));
        snapshot.mut_metadata().index = 9;
        snapshot.mut_metadata().term = 4;
        snapshot.mut_metadata().set_conf_state(conf);
        message.set_snapshot(snapshot);
        let back = from_wire(to_wire(&message).unwrap());
        assert_eq!(back, message);
    }

    #[test]
    fn local_messages_have_no_wire_form() {
        for kind in [
            MessageType::MsgPropose,
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            let message = Message {
                msg_type: kind,
                ..Message::default()
            };
            assert!(to_wire(&message).is_none(), "{kind:?}");
        }
    }
}
