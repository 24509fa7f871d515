//! The decision log: a Raft group (raft-rs) among the agents of a cell, so the slow loops reach
//! the same answer everywhere without a control plane.
//!
//! - [`store`]: the log, hard state and applied state in redb under `data_dir`.
//! - [`wire`]: raft-rs's messages to and from the project's own encoding (never protobuf from
//!   the network).
//! - [`membership`]: who votes (pure): the first voters, spread across zones, and the
//!   Autopilot-style replacement of a dead voter.
//! - `driver`: the I/O shell: ticks, steps, `Ready` handling, applying committed decisions.
//! - `outbox`: one ordered queue per peer over the mTLS QUIC transport.
//!
//! [`Consensus`] is the handle the rest of the agent holds: the status, the committed state
//! (a watch), proposals, and the committed tail for `/v1/decisions`.

mod driver;
pub mod ids;
pub mod leader;
mod logger;
pub mod membership;
mod outbox;
pub mod store;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{CommittedState, Decision, NodeId};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::gossip::{ConsensusPublisher, MeshView};
use crate::telemetry::Telemetry;
use crate::transport::PeerPool;
pub use driver::RaftInbox;
pub use store::{LogStore, StoreError};

/// The `[consensus]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusSettings {
    /// How many voters the cell forms its group with, once that many agents have met (3 or 5).
    /// `None`: this agent never starts a group, and learns decisions from gossip.
    pub bootstrap_expect: Option<usize>,
    /// One Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How long a voter may be dead before the leader replaces it.
    pub dead_voter_after: Duration,
    /// How long the members seen must stay the same before a group forms.
    pub bootstrap_settle: Duration,
    /// How long every weight target must agree before a weight goes down (three times that
    /// before it goes up): the weights' damping.
    pub weights_window: Duration,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        Self {
            bootstrap_expect: None,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            dead_voter_after: Duration::from_secs(30),
            bootstrap_settle: Duration::from_secs(2),
            weights_window: crate::decide::WeightSettings::default().down_window,
        }
    }
}

/// Where this agent stands in the decision group.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConsensusStatus {
    /// `voter`, `learner`, `non_voter` (learns from gossip), `waiting` (no group yet), or
    /// `failed` (consensus stopped on this node; it serves its last committed state).
    pub role: &'static str,
    pub raft_id: u64,
    pub term: u64,
    pub leader: Option<String>,
    pub is_leader: bool,
    /// A leader that has committed an entry of its own term: only then is its `commit` the
    /// group's (a leader just elected may not yet know what its predecessor committed).
    #[serde(skip)]
    pub leader_caught_up: bool,
    pub commit: u64,
    pub applied: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Proposals made by this node as leader.
    pub proposals: u64,
}

/// One committed entry, as `/v1/decisions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub index: u64,
    pub term: u64,
    /// SHA-256 of the entry's data and context, hex, so voters' logs can be compared.
    pub digest: String,
    /// `weights`, `canary_step`, ..., `membership`, or `empty` (a new leader's first entry).
    pub kind: String,
    pub decision: Option<Decision>,
}

/// Why a proposal was not taken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProposeError {
    #[error("this agent is not the leader")]
    NotLeader,
    #[error("the decision log is busy; try again")]
    Busy,
    #[error("decision refused: {0}")]
    Invalid(String),
    #[error("the decision log has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Propose(Box<Decision>),
    /// Transfer leadership to the most caught-up voter (before a graceful exit).
    HandOver,
}

/// The agent's handle on the decision log.
#[derive(Clone)]
pub struct Consensus {
    status: watch::Receiver<ConsensusStatus>,
    state: watch::Receiver<Arc<CommittedState>>,
    commands: mpsc::Sender<Command>,
    store: LogStore,
}

/// Everything the driver needs from the agent.
pub struct ConsensusSetup {
    pub node_id: NodeId,
    pub zone: String,
    /// Where the log lives; `None` keeps it in memory (an agent that never votes).
    pub data_dir: Option<PathBuf>,
    pub settings: ConsensusSettings,
    pub pool: Arc<PeerPool>,
    pub view: watch::Receiver<Arc<MeshView>>,
    /// Where a voter publishes its view of the log in gossip.
    pub publisher: Option<ConsensusPublisher>,
    pub telemetry: Telemetry,
}

impl Consensus {
    /// Opens the log under `data_dir/consensus` (or in memory) and starts the driver. The returned inbox is
    /// where the accept loop hands Raft messages from verified peers.
    pub fn start(
        setup: ConsensusSetup,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, RaftInbox, driver::DriverTask), StoreError> {
        let store = match &setup.data_dir {
            Some(dir) => LogStore::open(&dir.join("consensus"))?,
            None => LogStore::in_memory()?,
        };
        let (handle, inbox, task) = driver::spawn(setup, store.clone(), shutdown)?;
        Ok((
            Self {
                status: handle.status,
                state: handle.state,
                commands: handle.commands,
                store,
            },
            inbox,
            task,
        ))
    }

    pub fn status(&self) -> ConsensusStatus {
        self.status.borrow().clone()
    }

    /// The committed state, as last applied (or restored from disk at start).
    pub fn state(&self) -> Arc<CommittedState> {
        self.state.borrow().clone()
    }

    /// A watch of the committed state, for the data plane.
    pub fn watch_state(&self) -> watch::Receiver<Arc<CommittedState>> {
        self.state.clone()
    }

    /// Proposes a decision; only the leader may.
    pub fn propose(&self, decision: Decision) -> Result<(), ProposeError> {
        decision.validate().map_err(ProposeError::Invalid)?;
        if !self.status.borrow().is_leader {
            return Err(ProposeError::NotLeader);
        }
        self.commands
            .try_send(Command::Propose(Box::new(decision)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Busy,
                mpsc::error::TrySendError::Closed(_) => ProposeError::Stopped,
            })
    }

    /// Before a graceful exit: a leader hands leadership to the most caught-up voter and waits,
    /// at most `limit`, until it no longer leads.
    pub async fn hand_over(&self, limit: Duration) {
        if !self.status.borrow().is_leader {
            return;
        }
        if self.commands.send(Command::HandOver).await.is_err() {
            return;
        }
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(limit, status.wait_for(|s| !s.is_leader)).await;
    }

    /// The committed tail of the log, oldest first, at most `max` entries.
    pub fn decisions(&self, max: usize) -> Vec<DecisionRecord> {
        let commit = self.status.borrow().commit;
        self.store
            .tail(commit, max)
            .into_iter()
            .map(driver::record_of_entry)
            .collect()
    }
}
