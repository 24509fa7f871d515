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
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminView};
use crate::config::{AgentConfig, LocalService, Upstream};
use crate::pki::CertInfo;
use crate::proxy::{InboundProxy, UpstreamProxy};
use crate::telemetry::{names, OpenGuard, Telemetry};
use crate::transport::{self, PeerConnection, PeerPool, TransportError};

/// How long shutdown waits for peers to acknowledge the close of their connections.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why an agent could not start (a runtime failure, not a configuration mistake).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Transport(#[from] TransportError),
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
    shutdown: watch::Sender<bool>,
    endpoint: Endpoint,
    tasks: JoinSet<()>,
}

#[derive(Debug, Clone)]
struct InboundPeer {
    node_id: NodeId,
    address: SocketAddr,
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
}

impl AdminView for AgentState {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn metrics(&self) -> String {
        self.telemetry.render()
    }

    fn status(&self) -> serde_json::Value {
        let mut peers: Vec<serde_json::Value> = self
            .pool
            .connected()
            .into_iter()
            .map(|(addr, peer)| json!({"node_id": peer.node_id, "address": addr, "direction": "outbound"}))
            .collect();
        let inbound = self.inbound.lock().expect("inbound peers lock poisoned");
        peers.extend(
            inbound.values().map(
                |p| json!({"node_id": p.node_id, "address": p.address, "direction": "inbound"}),
            ),
        );
        let upstreams: Vec<serde_json::Value> = self
            .upstreams
            .iter()
            .map(|(u, bound)| {
                json!({"service": u.service, "listen": bound, "endpoints": u.endpoints,
                       "timeout": humantime::format_duration(u.timeout).to_string()})
            })
            .collect();
        json!({
            "node_id": self.node_id,
            "spiffe_id": self.spiffe_id,
            "trust_domain": self.trust_domain,
            "zone": self.zone,
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.config_file,
            "ready": self.ready(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "listen": self.quic_addr,
            "advertise": self.advertise,
            "admin": self.admin_addr,
            "certificate": self.certificate,
            "peers": peers,
            "services": self.services,
            "upstreams": upstreams,
        })
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
    let endpoint = transport::bind_endpoint(
        config.listen,
        &config.trust,
        &config.credentials,
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
        upstreams: upstream_listeners
            .iter()
            .map(|(u, _, bound)| (u.clone(), *bound))
            .collect(),
    });

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let inbound = Arc::new(InboundProxy::new(&config.services, telemetry.clone()));
    tasks.spawn(accept_peers(
        endpoint.clone(),
        inbound,
        state.clone(),
        shutdown_rx.clone(),
    ));
    let mut upstream_addrs = Vec::new();
    for (upstream, listener, bound) in upstream_listeners {
        upstream_addrs.push((upstream.service.clone(), bound));
        let proxy = Arc::new(UpstreamProxy::new(
            upstream,
            pool.clone(),
            telemetry.clone(),
        ));
        tasks.spawn(proxy.serve(listener, shutdown_rx.clone()));
    }
    tasks.spawn(admin::serve(admin_listener, state.clone(), shutdown_rx));

    state.ready.store(true, Ordering::Release);
    tracing::info!(
        node = %config.node_id, quic = %quic_addr, admin = %admin_addr,
        services = config.services.len(), upstreams = upstream_addrs.len(),
        "agent ready"
    );
    Ok(RunningAgent {
        node_id: config.node_id,
        quic_addr,
        admin_addr,
        upstream_addrs,
        telemetry,
        shutdown,
        endpoint,
        tasks,
    })
}

impl RunningAgent {
    /// The bound listener of the first upstream for `service`.
    pub fn upstream_addr(&self, service: &str) -> Option<SocketAddr> {
        self.upstream_addrs
            .iter()
            .find(|(s, _)| s.as_str() == service)
            .map(|(_, a)| *a)
    }

    /// Stops accepting work, closes peer connections (telling peers), and ends every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(0u32.into(), b"agent shutting down");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(node = %self.node_id, "agent stopped");
    }
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts peer connections and serves the streams they open.
async fn accept_peers(
    endpoint: Endpoint,
    inbound: Arc<InboundProxy>,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Peer tasks live in this set: when the loop ends (shutdown or abort), they end too.
    let mut peers = JoinSet::new();
    loop {
        while peers.try_join_next().is_some() {}
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            _ = stopping(&mut shutdown) => return,
        };
        peers.spawn(serve_peer(incoming, inbound.clone(), state.clone()));
    }
}

async fn serve_peer(incoming: quinn::Incoming, inbound: Arc<InboundProxy>, state: Arc<AgentState>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            // Certificate refusals were counted, with their reason, by the verifier.
            if let Some(reason) = uncounted_handshake_failure(&error) {
                state.telemetry.handshake_failed("inbound", reason);
            }
            tracing::info!(%remote, %error, "inbound handshake failed");
            return;
        }
    };
    let peer = match PeerConnection::identify(connection.clone()) {
        Ok(peer) => peer,
        Err(reason) => {
            tracing::warn!(%remote, %reason, "peer without a usable identity");
            connection.close(1u32.into(), b"no identity");
            return;
        }
    };
    let telemetry = &state.telemetry;
    telemetry
        .counter(names::CONNECTIONS, &[("direction", "inbound")])
        .increment(1);
    let _open =
        OpenGuard::new(telemetry.gauge(names::CONNECTIONS_OPEN, &[("direction", "inbound")]));
    let id = connection.stable_id();
    state
        .inbound
        .lock()
        .expect("inbound peers lock poisoned")
        .insert(
            id,
            InboundPeer {
                node_id: peer.node_id.clone(),
                address: remote,
            },
        );
    tracing::info!(peer = %peer.node_id, %remote, "peer connected");
    let mut streams = JoinSet::new();
    loop {
        while streams.try_join_next().is_some() {}
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let inbound = inbound.clone();
                let node = peer.node_id.clone();
                streams.spawn(async move { inbound.serve_stream(node, send, recv).await });
            }
            Err(error) => {
                tracing::info!(peer = %peer.node_id, %error, "peer connection closed");
                break;
            }
        }
    }
    state
        .inbound
        .lock()
        .expect("inbound peers lock poisoned")
        .remove(&id);
}

/// A reason label for handshake failures the certificate verifier did not see.
fn uncounted_handshake_failure(error: &quinn::ConnectionError) -> Option<&'static str> {
    const CERTIFICATE_REQUIRED: u8 = 116;
    const NO_APPLICATION_PROTOCOL: u8 = 120;
    match error {
        quinn::ConnectionError::TimedOut => Some("handshake_timeout"),
        // rustls refuses a peer that presents no certificate before any verifier runs.
        quinn::ConnectionError::TransportError(e)
            if e.code == quinn::TransportErrorCode::crypto(CERTIFICATE_REQUIRED) =>
        {
            Some("no_certificate")
        }
        quinn::ConnectionError::TransportError(e)
            if e.code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            Some("alpn_mismatch")
        }
        _ => None,
    }
}
