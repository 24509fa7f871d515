//! Membership, failure detection and load summaries, by gossip (chitchat's scuttlebutt with a
//! phi-accrual failure detector) over the agent's mTLS QUIC endpoint.
//!
//! - [`transport`]: chitchat's `Transport` as unidirectional QUIC streams; the sender's claimed
//!   node ID must match its certificate.
//! - [`seal`]: every value a node publishes is signed with its key, so a relay cannot forge
//!   another node's state.
//! - [`publish`]: what this node publishes (its [`plexus_protocol::NodeSummary`] and dependency
//!   edges) and when (at most once per interval, only on meaningful change).
//! - [`view`]: the pure membership state machine and the [`MeshView`] that discovery, the admin
//!   API and the dependency map read; `observer` turns chitchat's state into it each round.

mod checks;
mod codec;
mod observer;
pub mod publish;
pub mod seal;
pub mod transport;
pub mod view;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{ConsensusSummary, DependencyEdges, GossipLeave, NodeId, NodeSummary};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::pki::{LiveCredentials, LiveTrust};
use crate::telemetry::{names, HostSampler, HostUsage, LoadBook, Telemetry};
use crate::transport::PeerPool;
use checks::SealChecks;
use observer::Observer;
pub use publish::NodeFacts;
use publish::{build_edges, build_summary, edges_changed, summary_changed, PublishGate};
use seal::{cert_value, SealVerifier, Sealer, CERT_KEY};
pub use transport::GossipInbox;
use view::Membership;
pub use view::{Member, MemberState, MeshView};

/// The key of a node's sealed [`NodeSummary`].
pub const SUMMARY_KEY: &str = "plexus:summary";
/// The key of a node's sealed [`DependencyEdges`].
pub const EDGES_KEY: &str = "plexus:edges";
/// The key of a voter's sealed [`ConsensusSummary`].
pub const CONSENSUS_KEY: &str = "plexus:consensus";
/// The key of a node's sealed [`plexus_protocol::PeerObservations`] (quarantine's evidence).
pub const OBSERVATIONS_KEY: &str = "plexus:observations";
/// How long dead members stay listed (as dead) before they are forgotten.
const DEAD_NODE_GRACE: Duration = Duration::from_secs(3600);
/// How long delivering one gossip message may take, dial included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Gossip timing, from the `[gossip]` config table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GossipSettings {
    /// How often this node starts a gossip round (with up to three live peers, one dead one
    /// and one seed).
    pub interval: Duration,
    /// Phi-accrual threshold: a node is dead once the silence since its last heartbeat exceeds
    /// this many times the mean interval between its heartbeats.
    pub phi_threshold: f64,
}

impl Default for GossipSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            phi_threshold: 8.0,
        }
    }
}

/// Everything gossip needs from the agent.
pub struct GossipSetup {
    pub node_id: NodeId,
    pub advertise: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub settings: GossipSettings,
    pub trust: Arc<LiveTrust>,
    pub credentials: Arc<LiveCredentials>,
    pub facts: NodeFacts,
    pub load: LoadBook,
    pub pool: Arc<PeerPool>,
    pub telemetry: Telemetry,
}

/// This agent's gossip: a running chitchat instance and the tasks around it.
pub struct Gossip {
    handle: ChitchatHandle,
    inbox: GossipInbox,
    view: watch::Receiver<Arc<MeshView>>,
    leaving: Arc<AtomicBool>,
    generation: u64,
    pool: Arc<PeerPool>,
    consensus: watch::Sender<Option<Vec<u8>>>,
    observations: watch::Sender<Option<Vec<u8>>>,
    tasks: JoinSet<()>,
}

impl Gossip {
    /// Starts gossip: chitchat, its transport, the publisher and the membership view.
    pub async fn start(setup: GossipSetup) -> anyhow::Result<Self> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let settings = setup.settings;
        let wire = transport::wire(
            setup.advertise,
            setup.node_id.clone(),
            generation,
            setup.telemetry.clone(),
        )
        .await?;
        let chitchat_id = ChitchatId::new(setup.node_id.as_str(), generation, setup.advertise);
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: setup.trust.trust_domain().to_string(),
            gossip_interval: settings.interval,
            listen_addr: setup.advertise,
            seed_nodes: setup.seeds.iter().map(|s| s.to_string()).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: settings.phi_threshold,
                sampling_window_size: 1000,
                // One long pause must not teach the detector to wait for ever.
                max_interval: settings.interval * 4,
                initial_interval: settings.interval,
                dead_node_grace_period: DEAD_NODE_GRACE,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let initial = vec![(
            CERT_KEY.to_owned(),
            cert_value(&setup.credentials.chain()[0]),
        )];
        let handle = spawn_chitchat(config, initial, &wire.transport).await?;

        let mut tasks = JoinSet::new();
        tasks.spawn(transport::deliver(
            wire.outbound,
            setup.pool.clone(),
            setup.telemetry.clone(),
            DELIVERY_TIMEOUT,
        ));
        tasks.spawn(transport::decode(
            wire.raw,
            wire.decoded,
            setup.telemetry.clone(),
        ));
        let leaving = Arc::new(AtomicBool::new(false));
        let (consensus, consensus_rx) = watch::channel(None);
        let (observations, observations_rx) = watch::channel(None);
        let sealer = Sealer::new(setup.credentials.key()).map_err(anyhow::Error::msg)?;
        let publisher = Publisher {
            chitchat: handle.chitchat(),
            node_id: setup.node_id.to_string(),
            generation,
            sealer,
            published_serial: setup.credentials.info().serial,
            credentials: setup.credentials.clone(),
            facts: setup.facts,
            load: setup.load,
            host: Arc::new(std::sync::Mutex::new(HostSampler::new())),
            host_sampled: None,
            summary_gate: PublishGate::default(),
            edges_gate: PublishGate::default(),
            leaving: leaving.clone(),
            consensus: consensus_rx,
            observations: observations_rx,
            telemetry: setup.telemetry.clone(),
        };
        let (view_tx, view) = watch::channel(Arc::new(MeshView::default()));
        tasks.spawn(publisher.run(settings.interval));
        let observer = Observer {
            chitchat: handle.chitchat(),
            membership: Membership::new(setup.node_id.as_str(), settings.interval * 4),
            checks: Arc::new(std::sync::Mutex::new(SealChecks::new(
                SealVerifier::new(setup.trust),
                setup.telemetry.clone(),
            ))),
            telemetry: setup.telemetry,
            view: view_tx,
        };
        tasks.spawn(observer.run(settings.interval / 2, wire.leaves));
        Ok(Self {
            handle,
            inbox: wire.inbox,
            view,
            leaving,
            generation,
            pool: setup.pool,
            consensus,
            observations,
            tasks,
        })
    }

    /// What the decision log publishes through (voters only).
    pub fn consensus_publisher(&self) -> ConsensusPublisher {
        ConsensusPublisher(self.consensus.clone())
    }

    /// What quarantine's reporter publishes this node's observations through.
    pub fn observations_publisher(&self) -> publish::ObservationsPublisher {
        publish::ObservationsPublisher::new(self.observations.clone())
    }
}

/// Publishes a voter's view of the decision log in gossip, at the publisher's next round.
#[derive(Clone)]
pub struct ConsensusPublisher(watch::Sender<Option<Vec<u8>>>);

impl ConsensusPublisher {
    pub fn publish(&self, summary: &ConsensusSummary) {
        match summary.encode() {
            Ok(payload) => {
                self.0.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&payload);
                    if changed {
                        *current = Some(payload);
                    }
                    changed
                });
            }
            Err(reason) => tracing::error!(%reason, "consensus summary over budget; not published"),
        }
    }
}

impl Gossip {
    /// Where the accept loop hands gossip streams.
    pub fn inbox(&self) -> GossipInbox {
        self.inbox.clone()
    }

    /// The mesh as this agent sees it, updated live.
    pub fn view(&self) -> watch::Receiver<Arc<MeshView>> {
        self.view.clone()
    }

    /// Announces a graceful leave: the next summary says so, and every routable peer is told
    /// directly, so peers drop this node at once instead of waiting for the failure detector.
    pub async fn leave(&self, within: Duration) {
        self.leaving.store(true, Ordering::Release);
        let peers: Vec<SocketAddr> = self
            .view
            .borrow()
            .members
            .iter()
            .filter(|m| !m.local && m.state.routable())
            .map(|m| m.address)
            .collect();
        let frame = GossipLeave {
            generation: self.generation,
        }
        .to_frame_bytes();
        let mut sends = JoinSet::new();
        for addr in peers {
            let pool = self.pool.clone();
            let frame = frame.clone();
            sends.spawn(async move {
                let peer = pool
                    .connection(addr, within)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut send = peer
                    .connection
                    .open_uni()
                    .await
                    .map_err(|e| e.to_string())?;
                send.write_all(&frame).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())?;
                // Wait until the peer has the bytes, so closing the endpoint cannot drop them.
                let _ = send.stopped().await;
                Ok::<_, String>(())
            });
        }
        let _ = tokio::time::timeout(within, async {
            while let Some(result) = sends.join_next().await {
                if let Ok(Err(reason)) = result {
                    tracing::debug!(%reason, "leave announcement not delivered");
                }
            }
        })
        .await;
    }

    /// Stops chitchat and the gossip tasks.
    pub async fn shutdown(mut self) {
        let _ = self.handle.initiate_shutdown();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.handle.abort();
    }
}

struct Publisher {
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    node_id: String,
    generation: u64,
    sealer: Sealer,
    /// The certificate published under `CERT_KEY`, followed through renewals.
    credentials: Arc<LiveCredentials>,
    published_serial: String,
    facts: NodeFacts,
    load: LoadBook,
    /// Shared with the blocking thread that samples it.
    host: Arc<std::sync::Mutex<HostSampler>>,
    /// The last host sample and when it was taken.
    host_sampled: Option<(Instant, HostUsage)>,
    summary_gate: PublishGate<NodeSummary>,
    edges_gate: PublishGate<DependencyEdges>,
    leaving: Arc<AtomicBool>,
    consensus: watch::Receiver<Option<Vec<u8>>>,
    observations: watch::Receiver<Option<Vec<u8>>>,
    telemetry: Telemetry,
}

impl Publisher {
    async fn run(mut self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval / 2);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.publish_once(interval).await;
        }
    }

    async fn publish_once(&mut self, interval: Duration) {
        self.follow_renewal().await;
        let now = Instant::now();
        let leaving = self.leaving.load(Ordering::Acquire);
        let host = self.host_usage(now, interval).await;
        let summary = build_summary(&self.facts, host, &self.load.hosted(now), leaving);
        // A leave is published at once; everything else at most once per interval.
        let gap = if leaving { Duration::ZERO } else { interval };
        if self.summary_gate.offer(now, gap, &summary, summary_changed) {
            match summary.encode() {
                Ok(payload) => self.set(SUMMARY_KEY, payload).await,
                Err(reason) => tracing::error!(%reason, "node summary over budget; not published"),
            }
        }
        if self.consensus.has_changed().unwrap_or(false) {
            let payload = self.consensus.borrow_and_update().clone();
            if let Some(payload) = payload {
                self.set(CONSENSUS_KEY, payload).await;
            }
        }
        if self.observations.has_changed().unwrap_or(false) {
            let payload = self.observations.borrow_and_update().clone();
            if let Some(payload) = payload {
                self.set(OBSERVATIONS_KEY, payload).await;
            }
        }
        let edges = build_edges(&self.load.edges(now));
        if self.edges_gate.offer(now, interval, &edges, edges_changed) {
            match edges.encode() {
                Ok(payload) => self.set(EDGES_KEY, payload).await,
                Err(reason) => {
                    tracing::error!(%reason, "dependency edges over budget; not published")
                }
            }
        }
    }

    /// The host's and the agent's usage, sampled at most once per `interval`: reading `/proc`
    /// takes a few hundred microseconds, so a blocking thread does it and the worker serves on.
    async fn host_usage(&mut self, now: Instant, interval: Duration) -> HostUsage {
        match self.host_sampled {
            Some((at, usage)) if now.saturating_duration_since(at) < interval => usage,
            _ => {
                let host = self.host.clone();
                let usage = tokio::task::spawn_blocking(move || {
                    host.lock().unwrap_or_else(|p| p.into_inner()).sample()
                })
                .await
                .unwrap_or_else(|_| {
                    self.host_sampled
                        .map(|(_, usage)| usage)
                        .unwrap_or_default()
                });
                self.host_sampled = Some((now, usage));
                usage
            }
        }
    }

    /// Publishes a renewed certificate (same key, so earlier seals still verify) and its
    /// serial and expiry in the summary.
    async fn follow_renewal(&mut self) {
        let info = self.credentials.info();
        if info.serial == self.published_serial {
            return;
        }
        let leaf = cert_value(&self.credentials.chain()[0]);
        self.chitchat
            .lock()
            .await
            .self_node_state()
            .set(CERT_KEY, leaf);
        self.facts.cert_serial = crate::pki::hex_bytes(&info.serial);
        self.facts.cert_not_after = info.not_after;
        self.published_serial = info.serial;
    }

    async fn set(&self, key: &'static str, payload: Vec<u8>) {
        let size = payload.len();
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        // `set` stores a changed value at max_version + 1: sign that version.
        let version = state.max_version() + 1;
        match self
            .sealer
            .seal(&self.node_id, self.generation, key, version, payload)
        {
            Ok(value) => {
                state.set(key, value);
                drop(chitchat);
                self.telemetry
                    .gauge(names::GOSSIP_SUMMARY_BYTES, &[("key", key)])
                    .set(size as f64);
            }
            Err(reason) => tracing::error!(%reason, key, "cannot sign gossip value"),
        }
    }
}
