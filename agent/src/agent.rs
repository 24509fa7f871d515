//! A running agent: binds its sockets, starts its tasks, and stops them cleanly.
//!
//! ```text
//!  app ──tcp──▶ [[upstream]] listener ──▶ PeerPool ══ QUIC/mTLS ══▶ peer's accept loop
//!                 (proxy::outbound)          (transport)             (proxy::inbound) ──tcp──▶ service
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_protocol::{NodeId, ServiceName};
use quinn::Endpoint;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin;

mod admin_view;
mod peers;
mod running;
use crate::config::{AgentConfig, LocalService, Upstream};
use crate::consensus::{Consensus, ConsensusSetup};
use crate::gossip::{Gossip, GossipSetup, MeshView, NodeFacts};
use crate::pki::{CertInfo, LiveCredentials};
use crate::proxy::{InboundProxy, UpstreamProxy};
use crate::telemetry::{LoadBook, Telemetry};
use crate::transport::{self, PeerPool, TransportError};

/// How long shutdown waits for peers to acknowledge the close of their connections.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a leaving leader waits for another voter to take over.
const HAND_OVER_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown spends telling peers this node is leaving.
const LEAVE_GRACE: Duration = Duration::from_secs(1);
/// How long a stopping agent lets requests and connections in flight finish (SIGTERM's one
/// deadline; systemd's `TimeoutStopSec` must exceed it with the graces above).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How often draining looks at what is still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Why an agent could not start (a runtime failure, not a configuration mistake).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("gossip could not start: {0}")]
    Gossip(String),
    #[error("the decision log could not open: {0}")]
    Consensus(String),
    #[error("cannot listen for {what} on tcp {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started agent. Dropping it without [`RunningAgent::shutdown`] aborts its tasks.
pub struct RunningAgent {
    pub node_id: NodeId,
    /// The bound QUIC (UDP) address.
    pub quic_addr: SocketAddr,
    /// The bound admin HTTP address.
    pub admin_addr: SocketAddr,
    /// The bound listener of each `[[upstream]]`, in config order.
    pub upstream_addrs: Vec<(ServiceName, SocketAddr)>,
    pub telemetry: Telemetry,
    /// The agent's handle on the decision log.
    pub consensus: Consensus,
    /// What this agent observes about its peers (quarantine's evidence).
    observer: crate::quarantine::PeerObserver,
    shutdown: watch::Sender<bool>,
    /// Turns true when the agent drains: upstream listeners stop accepting.
    draining: watch::Sender<bool>,
    state: Arc<AgentState>,
    /// The `[[policy]]`/`[access]` the leader proposes; [`RunningAgent::reload`] replaces it.
    access_config: watch::Sender<Option<plexus_protocol::AccessPolicy>>,
    endpoint: Endpoint,
    gossip: Gossip,
    tasks: JoinSet<()>,
}

#[derive(Debug, Clone)]
struct InboundPeer {
    node_id: NodeId,
    address: SocketAddr,
    connection: quinn::Connection,
}

/// The agent's shared state, as the admin endpoint sees it.
struct AgentState {
    node_id: NodeId,
    spiffe_id: String,
    trust_domain: String,
    zone: Option<String>,
    config_file: PathBuf,
    certificate: CertInfo,
    started: Instant,
    ready: AtomicBool,
    telemetry: Telemetry,
    pool: Arc<PeerPool>,
    inbound: Mutex<HashMap<usize, InboundPeer>>,
    quic_addr: SocketAddr,
    advertise: SocketAddr,
    admin_addr: SocketAddr,
    services: Vec<LocalService>,
    upstreams: Vec<(Upstream, SocketAddr)>,
    view: watch::Receiver<Arc<MeshView>>,
    load: LoadBook,
    routes: Vec<Arc<crate::proxy::route::Route>>,
    consensus: Consensus,
    /// Quarantine: this agent's reports and (leading) suspicions, for `/v1/quarantine`.
    observer: crate::quarantine::PeerObserver,
    quarantine: crate::quarantine::QuarantineSettings,
    trust_service: crate::trust::TrustService,
    /// The certificate served now (renewals replace it).
    credentials: Arc<LiveCredentials>,
    live_trust: Arc<crate::pki::LiveTrust>,
    pki: crate::config::PkiSettings,
    /// What mutating admin calls must present (`<data_dir>/admin.token`).
    admin_token: Option<String>,
}

impl AgentState {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Inbound peer connections, by node (quarantine closes a quarantined node's).
    fn inbound_connections(&self) -> Vec<(NodeId, quinn::Connection)> {
        let inbound = self.inbound.lock().expect("inbound peers lock poisoned");
        inbound
            .values()
            .map(|p| (p.node_id.clone(), p.connection.clone()))
            .collect()
    }
}

async fn bind_tcp(what: impl Into<String>, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.into(),
            addr,
            source,
        })
}

/// Binds every socket of `config` and starts the agent's tasks.
pub async fn start(config: AgentConfig) -> Result<RunningAgent, StartError> {
    let telemetry = Telemetry::new();
    let trust = config.trust.live();
    let credentials = LiveCredentials::new(&config.credentials)
        .map_err(|e| StartError::Transport(TransportError::Tls(e)))?;
    let endpoint = transport::bind_endpoint(
        config.listen,
        &trust,
        &credentials,
        &config.transport,
        &telemetry,
    )?;
    let quic_addr = endpoint.local_addr().map_err(|source| {
        StartError::Transport(TransportError::Bind {
            addr: config.listen,
            source,
        })
    })?;
    let admin_listener = bind_tcp("the admin API", config.admin).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
    let mut upstream_listeners = Vec::new();
    for upstream in &config.upstreams {
        let listener = bind_tcp(format!("upstream {}", upstream.service), upstream.listen).await?;
        let bound = listener.local_addr().unwrap_or(upstream.listen);
        upstream_listeners.push((upstream.clone(), listener, bound));
    }

    let advertise = if config.advertise.port() == 0 {
        quic_addr
    } else {
        config.advertise
    };
    let pool = Arc::new(PeerPool::new(endpoint.clone(), telemetry.clone()));
    let observer = crate::quarantine::PeerObserver::new();
    let load = LoadBook::new(
        config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.capacity, s.limit)),
    );
    let gossip = Gossip::start(GossipSetup {
        node_id: config.node_id.clone(),
        advertise,
        seeds: config.seeds.clone(),
        settings: config.gossip,
        trust: trust.clone(),
        credentials: credentials.clone(),
        facts: NodeFacts {
            zone: config.zone.clone().unwrap_or_default(),
            voter_eligible: config.consensus.bootstrap_expect.is_some(),
            cert_serial: crate::pki::hex_bytes(&config.credentials.info.serial),
            cert_not_after: config.credentials.info.not_after,
            services: config.services.clone(),
        },
        load: load.clone(),
        pool: pool.clone(),
        telemetry: telemetry.clone(),
    })
    .await
    .map_err(|e| StartError::Gossip(format!("{e:#}")))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (consensus, raft_inbox, consensus_task) = Consensus::start(
        ConsensusSetup {
            node_id: config.node_id.clone(),
            zone: config.zone.clone().unwrap_or_default(),
            data_dir: config.state_dir(),
            settings: config.consensus.clone(),
            pool: pool.clone(),
            view: gossip.view(),
            publisher: Some(gossip.consensus_publisher()),
            telemetry: telemetry.clone(),
        },
        shutdown_rx.clone(),
    )
    .map_err(|e| StartError::Consensus(e.to_string()))?;
    let spans = config.otlp_endpoint.clone().map(|endpoint| {
        crate::telemetry::otlp::start(endpoint, config.node_id.to_string(), &telemetry)
    });
    let proxies: Vec<(Arc<UpstreamProxy>, TcpListener, SocketAddr)> = upstream_listeners
        .into_iter()
        .map(|(upstream, listener, bound)| {
            let proxy = UpstreamProxy::new(
                upstream,
                pool.clone(),
                telemetry.clone(),
                gossip.view(),
                load.clone(),
                spans.clone(),
            );
            proxy.route().follow_decisions(consensus.watch_state());
            proxy.route().observe_peers(observer.clone());
            (Arc::new(proxy), listener, bound)
        })
        .collect();
    let mut tasks = JoinSet::new();
    let trust_service = crate::trust::start(
        crate::trust::TrustSetup {
            node_id: config.node_id.clone(),
            trust_domain: config.trust.trust_domain().clone(),
            consensus: consensus.clone(),
            view: gossip.view(),
            pool: pool.clone(),
            trust: trust.clone(),
            credentials: credentials.clone(),
            pki: config.pki.clone(),
            ca_file: config.tls_files.ca.clone(),
            telemetry: telemetry.clone(),
        },
        &mut tasks,
        shutdown_rx.clone(),
    );
    let state = Arc::new(AgentState {
        node_id: config.node_id.clone(),
        spiffe_id: config.credentials.spiffe_id.to_string(),
        trust_domain: config.trust.trust_domain().to_string(),
        zone: config.zone.clone(),
        config_file: config.source.clone(),
        certificate: config.credentials.info.clone(),
        started: Instant::now(),
        ready: AtomicBool::new(false),
        telemetry: telemetry.clone(),
        pool: pool.clone(),
        inbound: Mutex::default(),
        quic_addr,
        advertise,
        admin_addr,
        services: config.services.clone(),
        upstreams: proxies
            .iter()
            .map(|(p, _, bound)| (p.route().upstream().clone(), *bound))
            .collect(),
        view: gossip.view(),
        load: load.clone(),
        routes: proxies.iter().map(|(p, _, _)| p.route().clone()).collect(),
        consensus,
        observer: observer.clone(),
        quarantine: config.quarantine,
        trust_service,
        credentials: credentials.clone(),
        live_trust: trust.clone(),
        pki: config.pki.clone(),
        admin_token: config
            .state_dir()
            .and_then(|dir| crate::trust::admin::admin_token(&dir)),
    });

    tasks.spawn(consensus_task);
    let (access_config, access_config_rx) = watch::channel(config.access.clone());
    tasks.spawn(crate::consensus::leader::propose_decisions(
        state.consensus.clone(),
        config.node_id.clone(),
        gossip.view(),
        decider_settings(&config),
        access_config_rx,
        observer.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(crate::consensus::leader::follow_committed(
        state.consensus.watch_state(),
        config
            .scaling
            .iter()
            .filter_map(|s| Some((s.service.clone(), s.scale_hook.clone()?)))
            .collect(),
        telemetry.clone(),
        shutdown_rx.clone(),
    ));
    let (access, follow_access) = crate::access::AccessGate::start(
        &config,
        observer.clone(),
        &telemetry,
        &state.consensus,
        gossip.view(),
        shutdown_rx.clone(),
    );
    tasks.spawn(follow_access);
    let inbound = Arc::new(InboundProxy::new(
        &config.services,
        telemetry.clone(),
        load.clone(),
        spans,
        access,
    ));
    tasks.spawn(peers::accept_peers(
        endpoint.clone(),
        inbound,
        gossip
            .inbox()
            .with_raft(raft_inbox)
            .with_observer(observer.clone()),
        state.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(transport::forgive_returning_peers(
        gossip.view(),
        pool.clone(),
        shutdown_rx.clone(),
    ));
    // Histogram samples are folded into buckets here even when nobody scrapes /metrics.
    tasks.spawn(telemetry.clone().keep_up(Duration::from_secs(5)));
    tasks.spawn(crate::health::probe_services(
        config.services.clone(),
        load.clone(),
        telemetry.clone(),
    ));
    let inbound_of = state.clone();
    crate::quarantine::start(
        crate::quarantine::QuarantineSetup {
            observer: observer.clone(),
            settings: config.quarantine,
            view: gossip.view(),
            committed: state.consensus.watch_state(),
            publisher: gossip.observations_publisher(),
            pool: pool.clone(),
            inbound: Box::new(move || inbound_of.inbound_connections()),
            telemetry: telemetry.clone(),
        },
        &mut tasks,
        shutdown_rx.clone(),
    );
    let mut upstream_addrs = Vec::new();
    let (draining, draining_rx) = watch::channel(false);
    for (proxy, listener, bound) in proxies {
        upstream_addrs.push((proxy.route().service().clone(), bound));
        tasks.spawn(proxy.serve(listener, draining_rx.clone(), shutdown_rx.clone()));
    }
    tasks.spawn(admin::serve(admin_listener, state.clone(), shutdown_rx));

    state.ready.store(true, Ordering::Release);
    tracing::info!(
        node = %config.node_id, quic = %quic_addr, admin = %admin_addr,
        services = config.services.len(), upstreams = upstream_addrs.len(),
        "agent ready"
    );
    Ok(RunningAgent {
        consensus: state.consensus.clone(),
        observer,
        node_id: config.node_id,
        quic_addr,
        admin_addr,
        upstream_addrs,
        telemetry,
        shutdown,
        draining,
        state,
        access_config,
        endpoint,
        gossip,
        tasks,
    })
}

/// The leader's policies from `[[canary]]` and `[[scaling]]`.
fn decider_settings(config: &AgentConfig) -> crate::decide::DeciderSettings {
    let mut settings = crate::decide::DeciderSettings::default();
    let window = config.consensus.weights_window;
    settings.weights.down_window = window;
    settings.weights.up_window = window * 3;
    for (service, policy) in &config.canaries {
        settings.services.entry(service.clone()).or_default().canary = Some(policy.clone());
    }
    for scaling in &config.scaling {
        settings
            .services
            .entry(scaling.service.clone())
            .or_default()
            .scaling = Some(scaling.settings);
    }
    settings.quarantine = config.quarantine;
    settings
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
