//! The I/O shell around raft-rs: ticks, inbound messages, proposals, `Ready` handling, applying
//! committed decisions, bootstrapping the group and replacing dead voters.

mod apply;
mod cell;
mod screen;

pub(super) use apply::record_of_entry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_protocol::{CommittedState, NodeId, RaftEnvelope, RaftMessageKind};
use raft::{Config, RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, watch};

use super::ids::raft_id;
use super::logger::raft_logger;
use super::outbox::{Outbox, Undelivered};
use super::store::{LogStore, StoreError};
use super::wire::from_wire;
use super::{Command, ConsensusSettings, ConsensusSetup, ConsensusStatus};
use crate::gossip::MeshView;
use crate::telemetry::{names, Telemetry};

/// Raft messages from verified peers waiting for the driver.
const INBOX: usize = 1024;
/// Proposals waiting for the driver.
const COMMANDS: usize = 64;
/// Largest append message raft-rs builds.
const MAX_MESSAGE_BYTES: u64 = 256 * 1024;
/// How often the leader looks for a membership step.
const AUTOPILOT_EVERY: Duration = Duration::from_secs(1);
/// How often a voter republishes its view of the log in gossip (only changes travel).
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Where the accept loop hands Raft messages. The sender was checked against its certificate.
#[derive(Clone)]
pub struct RaftInbox {
    tx: mpsc::Sender<RaftEnvelope>,
}

impl RaftInbox {
    /// Hands one envelope from `peer` (its certificate's node ID) to the driver. Refused when
    /// the envelope names another node or its Raft ID is not the peer's; dropped when full.
    pub fn deliver(&self, peer: &NodeId, envelope: RaftEnvelope) -> Result<(), &'static str> {
        if envelope.sender != *peer || envelope.message.from != raft_id(peer.as_str()) {
            return Err("node_id_mismatch");
        }
        self.tx.try_send(envelope).map_err(|_| "inbox_full")
    }
}

/// The driver's loop, for the agent to run among its tasks.
pub type DriverTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub(super) struct Handle {
    pub status: watch::Receiver<ConsensusStatus>,
    pub state: watch::Receiver<Arc<CommittedState>>,
    pub commands: mpsc::Sender<Command>,
}

struct Driver {
    node: NodeId,
    id: u64,
    zone: String,
    settings: ConsensusSettings,
    store: LogStore,
    raw: Option<RawNode<LogStore>>,
    state: CommittedState,
    conf: plexus_protocol::RaftConfState,
    /// Raft ID to node ID and address, from gossip and the committed voters.
    peers: HashMap<u64, (String, Option<SocketAddr>)>,
    view: watch::Receiver<Arc<MeshView>>,
    publisher: Option<crate::gossip::ConsensusPublisher>,
    outbox: Outbox,
    status: watch::Sender<ConsensusStatus>,
    state_tx: watch::Sender<Arc<CommittedState>>,
    telemetry: Telemetry,
    logger: slog::Logger,
    proposals: u64,
    /// The members seen and since when, while waiting to bootstrap.
    settling: Option<(Vec<String>, Instant)>,
    last_autopilot: Instant,
    last_publish: Instant,
    pending_membership: Option<u64>,
    /// Peers a message could not be queued for during the current `Ready`.
    unreachable: Vec<u64>,
    /// Why consensus stopped on this node, if it did.
    failed: Option<String>,
}

pub(super) fn spawn(
    setup: ConsensusSetup,
    store: LogStore,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Handle, RaftInbox, DriverTask), StoreError> {
    let applied = store.applied();
    let saved = if store.initialized() {
        Some(applied.data.clone())
    } else {
        store.learned()
    };
    let mut unreadable = None;
    let state = match saved.filter(|data| !data.is_empty()) {
        None => CommittedState::default(),
        Some(data) => CommittedState::decode(&data, plexus_protocol::consensus::MAX_SNAPSHOT_DATA)
            .unwrap_or_else(|reason| {
                // Applying entries on top of an empty state would commit a wrong state and
                // serve it to others: stay out of the group instead.
                tracing::error!(%reason, "persisted decision state unreadable; consensus stays off");
                unreadable = Some(format!("persisted decision state unreadable: {reason}"));
                CommittedState::default()
            }),
    };
    let (status_tx, status) = watch::channel(ConsensusStatus {
        role: "waiting",
        ..ConsensusStatus::default()
    });
    let (state_tx, state_rx) = watch::channel(Arc::new(state.clone()));
    let (commands_tx, mut commands) = mpsc::channel(COMMANDS);
    let (inbox_tx, mut inbox) = mpsc::channel(INBOX);
    let (outbox, mut undelivered) = Outbox::new(setup.pool.clone());
    let id = raft_id(setup.node_id.as_str());
    let mut driver = Driver {
        logger: raft_logger(setup.node_id.as_str()),
        node: setup.node_id,
        id,
        zone: setup.zone,
        settings: setup.settings,
        store,
        raw: None,
        state,
        conf: applied.conf,
        peers: HashMap::new(),
        view: setup.view,
        publisher: setup.publisher,
        outbox,
        status: status_tx,
        state_tx,
        telemetry: setup.telemetry,
        proposals: 0,
        settling: None,
        last_autopilot: Instant::now(),
        last_publish: Instant::now(),
        pending_membership: None,
        unreachable: Vec::new(),
        failed: unreadable,
    };
    if driver.store.initialized() && driver.failed.is_none() {
        driver.start_node()?;
    }
    // Where this node stands is known before the first tick (a restarted voter is a voter).
    driver.publish_status();
    let task = Box::pin(async move {
        let mut ticker = tokio::time::interval(driver.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => driver.tick(),
                Some(envelope) = inbox.recv() => driver.step(envelope),
                Some(command) = commands.recv() => driver.command(command),
                Some(report) = undelivered.recv() => driver.undelivered(report),
                _ = shutdown.changed() => return,
            }
            if let Err(error) = driver.on_ready() {
                // A log that cannot be written must not vote or lead: stop here and keep the
                // last committed state (fail static); the agent's local loops go on.
                tracing::error!(%error, "decision log write failed; consensus stopped on this node");
                driver.raw = None;
                driver.publish_status();
                return;
            }
            driver.publish_status();
        }
    });
    Ok((
        Handle {
            status,
            state: state_rx,
            commands: commands_tx,
        },
        RaftInbox { tx: inbox_tx },
        task,
    ))
}

impl Driver {
    pub(super) fn start_node(&mut self) -> Result<(), StoreError> {
        let config = Config {
            id: self.id,
            election_tick: self.settings.election_ticks,
            heartbeat_tick: self.settings.heartbeat_ticks,
            applied: self.store.applied().index,
            max_size_per_msg: MAX_MESSAGE_BYTES,
            max_inflight_msgs: 64,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        match RawNode::new(&config, self.store.clone(), &self.logger) {
            Ok(raw) => {
                self.raw = Some(raw);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the Raft node");
                Ok(())
            }
        }
    }

    fn tick(&mut self) {
        if self.failed.is_some() {
            return;
        }
        self.refresh_peers();
        match self.raw.as_mut() {
            Some(raw) => {
                raw.tick();
            }
            None => self.maybe_bootstrap(),
        }
        self.leave_if_removed();
        if self.raw.is_none() {
            self.learn_from_gossip();
        }
        if self.last_autopilot.elapsed() >= AUTOPILOT_EVERY {
            self.last_autopilot = Instant::now();
            self.autopilot();
            self.notice_removal();
        }
    }

    fn step(&mut self, envelope: RaftEnvelope) {
        if envelope.message.to != self.id || self.failed.is_some() {
            return;
        }
        let from = envelope.message.from;
        let message = match screen::screen(self.raw.as_ref(), &self.conf, envelope.message) {
            Ok(message) => message,
            Err(reason) => {
                self.telemetry
                    .counter(names::RAFT_MESSAGES_DROPPED, &[("reason", reason)])
                    .increment(1);
                return;
            }
        };
        let sender = envelope.sender.to_string();
        self.peers.entry(from).or_insert((sender, None));
        if self.raw.is_none() {
            // Only a leader's message starts an empty node (one adding it as a learner, or a
            // group formed before this node bootstrapped).
            if !matches!(
                message.kind,
                RaftMessageKind::Append | RaftMessageKind::Snapshot | RaftMessageKind::Heartbeat
            ) {
                return;
            }
            if let Err(error) = self.start_node() {
                tracing::error!(%error, "cannot start the Raft node");
                return;
            }
        }
        let Some(raw) = self.raw.as_mut() else { return };
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            raw.step(from_wire(message))
        }));
        match stepped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "raft message not taken"),
            Err(_) => self.fail("raft-rs aborted on a peer's message"),
        }
    }

    /// Stops consensus on this node for good, keeping the last committed state (fail static):
    /// a log this node cannot trust must not vote, lead or be served to others.
    pub(super) fn fail(&mut self, why: &str) {
        tracing::error!(
            reason = why,
            "consensus stopped on this node; serving the last committed state"
        );
        self.failed = Some(why.to_owned());
        self.raw = None;
    }

    fn command(&mut self, command: Command) {
        let Some(raw) = self.raw.as_mut() else { return };
        match command {
            Command::Propose(decision) => {
                if raw.raft.state != StateRole::Leader {
                    return;
                }
                let Ok(data) = decision.encode() else { return };
                if raw.propose(Vec::new(), data).is_ok() {
                    self.proposals += 1;
                    self.telemetry
                        .counter(names::PROPOSALS, &[("kind", decision.kind.label())])
                        .increment(1);
                }
            }
            Command::HandOver => self.hand_over(),
        }
    }

    fn undelivered(&mut self, report: Undelivered) {
        let Some(raw) = self.raw.as_mut() else { return };
        raw.report_unreachable(report.to);
        if report.snapshot {
            raw.report_snapshot(report.to, SnapshotStatus::Failure);
        }
    }

    /// Before a graceful exit, a leader hands leadership to the most caught-up voter (the
    /// transfer's messages go out with the next `Ready`).
    fn hand_over(&mut self) {
        let Some(raw) = self.raw.as_mut() else { return };
        if raw.raft.state != StateRole::Leader {
            return;
        }
        let successor = raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.id && self.conf.voters.contains(id))
            .max_by_key(|(_, progress)| progress.matched)
            .map(|(id, _)| *id);
        if let Some(successor) = successor {
            tracing::info!(successor, "leaving: handing leadership over");
            raw.transfer_leader(successor);
        }
    }

    pub(super) fn refresh_peers(&mut self) {
        let view = self.view.borrow().clone();
        for member in &view.members {
            if member.local {
                continue;
            }
            let id = raft_id(&member.node_id);
            self.peers
                .insert(id, (member.node_id.clone(), Some(member.address)));
        }
        for voter in &self.state.voters {
            self.peers
                .entry(raft_id(voter.as_str()))
                .or_insert((voter.to_string(), None));
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
