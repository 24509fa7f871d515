//! What raft-rs must not see. raft-rs trusts its peers: a heartbeat committing past the log, an
//! append rewriting committed entries or an acknowledgement of entries that do not exist makes
//! it abort. The envelope's own validation (protocol) refuses malformed messages; this refuses
//! the ones that are well formed but impossible for this node's log, and votes from agents
//! outside the group. Honest peers never send them.

use plexus_protocol::{RaftConfState, RaftMessage, RaftMessageKind};
use raft::RawNode;

use crate::consensus::store::LogStore;

/// The message to step, adjusted where that is harmless, or why it is dropped.
pub(super) fn screen(
    raw: Option<&RawNode<LogStore>>,
    conf: &RaftConfState,
    mut message: RaftMessage,
) -> Result<RaftMessage, &'static str> {
    let member = [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&message.from));
    let vote = matches!(
        message.kind,
        RaftMessageKind::RequestVote | RaftMessageKind::RequestPreVote
    );
    if vote && conf.voters.is_empty() {
        // A node with no configuration yet (waiting to be added) must not help elect anyone.
        return Err("not_in_group");
    }
    if vote && !member {
        // A removed voter that has not noticed, or a stray group: it must not disturb the term.
        // Its appends and heartbeats are still taken: a leader this node does not know of yet
        // (added while this node was down) is how it learns its configuration.
        return Err("not_a_member");
    }
    let Some(raw) = raw else {
        return Ok(message);
    };
    let log = &raw.raft.raft_log;
    let last = log.last_index();
    match message.kind {
        RaftMessageKind::Heartbeat => message.commit = message.commit.min(last),
        RaftMessageKind::Append => {
            let committed = log.committed;
            let conflicts = message
                .entries
                .iter()
                .filter(|e| e.index <= committed)
                .any(|e| log.term(e.index).is_ok_and(|term| term != e.term));
            if conflicts {
                return Err("rewrites_committed");
            }
        }
        RaftMessageKind::AppendResponse if !message.reject && message.index > last => {
            return Err("acknowledges_unknown_entries");
        }
        _ => {}
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use plexus_protocol::{RaftEntry, RaftEntryKind};
    use raft::Config;

    use super::*;
    use crate::consensus::logger::raft_logger;
    use crate::consensus::wire::from_wire;

    fn node() -> (RawNode<LogStore>, RaftConfState) {
        let store = LogStore::in_memory().unwrap();
        store.bootstrap(vec![1, 2, 3], Vec::new()).unwrap();
        let config = Config {
            id: 1,
            applied: 1,
            ..Config::default()
        };
        let conf = store.applied().conf;
        (
            RawNode::new(&config, store, &raft_logger("test")).unwrap(),
            conf,
        )
    }

    fn message(kind: RaftMessageKind, from: u64) -> RaftMessage {
        RaftMessage {
            kind,
            to: 1,
            from,
            term: 2,
            log_term: 1,
            index: 1,
            entries: Vec::new(),
            commit: 0,
            commit_term: 0,
            snapshot: None,
            request_snapshot: 0,
            reject: false,
            reject_hint: 0,
            context: Vec::new(),
            priority: 0,
        }
    }

    #[test]
    fn a_heartbeat_committing_past_the_log_is_clamped_not_fatal() {
        let (mut raw, conf) = node();
        let mut hostile = message(RaftMessageKind::Heartbeat, 2);
        hostile.commit = 1_000;
        // Unscreened, raft-rs aborts on it.
        let (mut other, _) = node();
        let unscreened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            other.step(from_wire(hostile.clone()))
        }));
        assert!(unscreened.is_err(), "raft-rs trusts the commit index");
        let screened = screen(Some(&raw), &conf, hostile).unwrap();
        assert_eq!(screened.commit, 1);
        raw.step(from_wire(screened)).unwrap();
    }

    #[test]
    fn impossible_appends_and_acknowledgements_and_outside_votes_are_dropped() {
        let (raw, conf) = node();
        let mut rewrite = message(RaftMessageKind::Append, 2);
        rewrite.index = 0;
        rewrite.entries = vec![RaftEntry {
            kind: RaftEntryKind::Normal,
            term: 2,
            index: 1,
            data: Vec::new(),
            context: Vec::new(),
        }];
        assert_eq!(
            screen(Some(&raw), &conf, rewrite).err(),
            Some("rewrites_committed")
        );
        let mut ack = message(RaftMessageKind::AppendResponse, 2);
        ack.index = 50;
        assert_eq!(
            screen(Some(&raw), &conf, ack).err(),
            Some("acknowledges_unknown_entries")
        );
        let vote = message(RaftMessageKind::RequestPreVote, 9);
        assert_eq!(screen(Some(&raw), &conf, vote).err(), Some("not_a_member"));
        let vote = message(RaftMessageKind::RequestVote, 2);
        assert!(screen(Some(&raw), &conf, vote.clone()).is_ok());
        assert_eq!(
            screen(None, &RaftConfState::default(), vote).err(),
            Some("not_in_group")
        );
        // A leader this node does not know yet may still append and heartbeat.
        let heartbeat = message(RaftMessageKind::Heartbeat, 9);
        assert!(screen(Some(&raw), &conf, heartbeat).is_ok());
    }
}
