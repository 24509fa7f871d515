//! The `[consensus]` table: how the decision log's Raft group forms and keeps its voters.

use std::time::Duration;

use super::Checker;
use crate::config::raw::RawConsensus;
use crate::consensus::ConsensusSettings;

pub(super) fn settings(c: &mut Checker<'_>, raw: &RawConsensus) -> ConsensusSettings {
    let defaults = ConsensusSettings::default();
    let bootstrap_expect = match raw.bootstrap_expect {
        None => None,
        Some(n @ (1 | 3 | 5 | 7)) => Some(n as usize),
        Some(n) => {
            c.error(
                "consensus.bootstrap_expect",
                format!("{n} is not 1, 3, 5 or 7 (an odd number of voters; 3 or 5 for a cell)"),
            );
            None
        }
    };
    let election = c.duration(
        "consensus.election_timeout",
        raw.election_timeout.as_deref(),
        defaults.tick * defaults.election_ticks as u32,
    );
    if election < Duration::from_millis(300) || election > Duration::from_secs(30) {
        c.error(
            "consensus.election_timeout",
            "must be between 300ms and 30s (1s is the default)",
        );
    }
    let dead_voter_after = c.duration(
        "consensus.dead_voter_after",
        raw.dead_voter_after.as_deref(),
        defaults.dead_voter_after,
    );
    if dead_voter_after < election * 2 {
        c.error(
            "consensus.dead_voter_after",
            "must be at least twice consensus.election_timeout",
        );
    }
    let election_ticks = (election.as_millis() / defaults.tick.as_millis()).max(3) as usize;
    ConsensusSettings {
        bootstrap_expect,
        election_ticks,
        heartbeat_ticks: (election_ticks / 5).max(1),
        dead_voter_after,
        ..defaults
    }
}
