//! `[[upstream]]` listeners: an app connects locally, the agent carries it to a serving agent,
//! as HTTP request by request ([`super::http`]) or as a byte pipe.

use std::net::SocketAddr;
use std::sync::Arc;

use plexus_protocol::{AppProtocol, OpenReply, StreamHeader};
use quinn::{RecvStream, SendStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::http::caller::HttpCaller;
use super::route::{Route, DISCOVERY_WAIT};
use super::splice::{abort, splice, SpliceCounters, RESET_CODE};
use crate::config::Upstream;
use crate::gossip::MeshView;
use crate::policy::Outcome;
use crate::telemetry::{names, LoadBook, OpenGuard, Telemetry};
use crate::transport::{read_message, write_message, DialError, PeerPool};

/// Why one endpoint could not take a connection.
#[derive(Debug, thiserror::Error)]
enum OpenFailure {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("opening a stream failed: {0}")]
    Stream(String),
    #[error("refused by the serving agent: {}", .0.as_label())]
    Refused(plexus_protocol::Refusal),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl OpenFailure {
    fn label(&self) -> &'static str {
        match self {
            Self::Dial(dial) => dial.label(),
            Self::Stream(_) => "stream_failed",
            Self::Refused(refusal) => refusal.as_label(),
            Self::Timeout(_) => "open_timeout",
        }
    }
}

/// The proxy behind one `[[upstream]]` listener.
pub struct UpstreamProxy {
    upstream: Upstream,
    route: Arc<Route>,
    http: Arc<HttpCaller>,
    pool: Arc<PeerPool>,
    telemetry: Telemetry,
    counters: SpliceCounters,
    load: LoadBook,
}

impl UpstreamProxy {
    /// `view` is the gossiped mesh, the source of endpoints unless the upstream lists static
    /// ones; `load` records the caller-to-callee edge of every connection or request carried.
    pub fn new(
        upstream: Upstream,
        pool: Arc<PeerPool>,
        telemetry: Telemetry,
        view: watch::Receiver<Arc<MeshView>>,
        load: LoadBook,
        spans: Option<crate::telemetry::otlp::SpanSink>,
    ) -> Self {
        let counters = SpliceCounters::new(&telemetry, upstream.service.as_str(), "outbound");
        let route = Arc::new(Route::new(upstream.clone(), telemetry.clone(), view));
        let http = Arc::new(HttpCaller::new(
            route.clone(),
            pool.clone(),
            telemetry.clone(),
            load.clone(),
            spans,
        ));
        Self {
            upstream,
            route,
            http,
            pool,
            telemetry,
            counters,
            load,
        }
    }

    /// The upstream's routing state (endpoints, ejections, retry budget).
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }

    fn edge(&self, started: std::time::Instant, ok: bool) {
        self.load.record_edge(
            &self.upstream.caller,
            &self.upstream.service,
            started.elapsed(),
            ok,
        );
    }

    /// Accepts app connections until `shutdown` turns true. Each is carried as HTTP or as a
    /// byte pipe, as [`Route::protocol`] says when it arrives.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut draining: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Connection tasks live in this set: when the loop ends, they end too.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, from)) => {
                        let _ = client.set_nodelay(true);
                        match self.route.protocol() {
                            AppProtocol::Http => {
                                connections.spawn(self.http.clone().serve_connection(client, from, draining.clone()));
                            }
                            AppProtocol::Tcp => {
                                connections.spawn(self.clone().carry(client, from));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(service = %self.upstream.service, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = crate::agent::stopping(&mut draining) => break,
                _ = crate::agent::stopping(&mut shutdown) => return,
            }
        }
        // Draining: no new app connections; the open ones run on until the agent stops.
        drop(listener);
        tokio::select! {
            _ = async { while connections.join_next().await.is_some() {} } => {}
            _ = crate::agent::stopping(&mut shutdown) => {}
        }
    }

    fn outcome(&self, outcome: &str) {
        self.telemetry
            .counter(
                names::STREAMS,
                &[
                    ("direction", "outbound"),
                    ("service", self.upstream.service.as_str()),
                    ("outcome", outcome),
                ],
            )
            .increment(1);
    }

    /// Carries one app connection as a byte pipe: endpoints are chosen by the balancer (P2C
    /// over latency to open a stream × open connections), each tried once, until one accepts.
    async fn carry(self: Arc<Self>, client: TcpStream, from: SocketAddr) {
        let service = &self.upstream.service;
        let started = std::time::Instant::now();
        let mut tried = Vec::new();
        if self.route.denied().is_some() {
            // Refused under the committed policy already: final, and no need to ask again.
            self.outcome("policy_denied");
            abort(&client);
            return;
        }
        self.route.discovered(DISCOVERY_WAIT).await;
        while let Some(addr) = self.route.pick(&tried) {
            tried.push(addr);
            let opening = std::time::Instant::now();
            match self.open(addr).await {
                Ok((send, recv, peer)) => {
                    let opened = opening.elapsed();
                    let _open = OpenGuard::new(
                        self.telemetry
                            .gauge(names::STREAMS_OPEN, &[("direction", "outbound")]),
                    );
                    tracing::debug!(%service, %from, %peer, "stream open");
                    let result = splice(client, send, recv, &self.counters).await;
                    self.edge(started, result.is_ok());
                    let outcome = if result.is_ok() {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    self.route.finish(addr, opened, outcome);
                    match result {
                        Ok(()) => self.outcome("completed"),
                        Err(error) => {
                            tracing::info!(%service, %peer, %error, "proxied connection failed");
                            self.outcome("failed");
                        }
                    }
                    return;
                }
                Err(OpenFailure::Refused(plexus_protocol::Refusal::PolicyDenied)) => {
                    // Final: every endpoint enforces the same committed policy. The endpoint
                    // answered correctly, so it is not held against it either.
                    self.route.finish(addr, opening.elapsed(), Outcome::Success);
                    self.route.remember_denial(bytes::Bytes::new());
                    self.policy_denied(addr, from);
                    self.edge(started, false);
                    abort(&client);
                    return;
                }
                Err(failure) => {
                    let outcome = match failure {
                        OpenFailure::Refused(plexus_protocol::Refusal::Overloaded) => {
                            Outcome::Overloaded
                        }
                        OpenFailure::Timeout(_) => Outcome::Timeout,
                        _ => Outcome::ConnectFailure,
                    };
                    self.route.finish(addr, opening.elapsed(), outcome);
                    self.telemetry
                        .counter(
                            names::STREAMS_REFUSED,
                            &[
                                ("direction", "outbound"),
                                ("service", service.as_str()),
                                ("reason", failure.label()),
                            ],
                        )
                        .increment(1);
                    tracing::warn!(%service, endpoint = %addr, reason = failure.label(), error = %failure, "endpoint did not take the connection");
                }
            }
        }
        tracing::warn!(%service, %from, "no endpoint took the connection; closing it");
        self.outcome("no_endpoint");
        self.edge(started, false);
        abort(&client);
    }

    /// Counts and logs a connection the serving agent's access policy refused.
    fn policy_denied(&self, endpoint: SocketAddr, from: SocketAddr) {
        let service = self.upstream.service.as_str();
        self.telemetry
            .counter(
                names::STREAMS_REFUSED,
                &[
                    ("direction", "outbound"),
                    ("service", service),
                    ("reason", "policy_denied"),
                ],
            )
            .increment(1);
        self.outcome("policy_denied");
        tracing::info!(
            %service, %endpoint, %from,
            "the access policy does not let this node call {service}; resetting the app's connection"
        );
    }

    async fn open(
        &self,
        addr: SocketAddr,
    ) -> Result<(SendStream, RecvStream, plexus_protocol::NodeId), OpenFailure> {
        let timeout = self.upstream.timeout;
        let peer = self.pool.connection(addr, timeout).await?;
        let (mut send, mut recv) = tokio::time::timeout(timeout, peer.connection.open_bi())
            .await
            .map_err(|_| OpenFailure::Timeout(timeout))?
            .map_err(|e| OpenFailure::Stream(e.to_string()))?;
        let header = StreamHeader {
            service: self.upstream.service.clone(),
            open_budget_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            protocol: AppProtocol::Tcp,
        };
        let answered = tokio::time::timeout(timeout, async {
            write_message(&mut send, &header)
                .await
                .map_err(|e| OpenFailure::Stream(e.to_string()))?;
            read_message::<OpenReply>(&mut recv)
                .await
                .map_err(|e| OpenFailure::Stream(e.to_string()))
        })
        .await
        .unwrap_or(Err(OpenFailure::Timeout(timeout)));
        if answered.is_ok() {
            self.pool.confirm(addr);
        }
        match answered {
            Ok(OpenReply::Accepted) => Ok((send, recv, peer.node_id)),
            Ok(OpenReply::Refused(refusal)) => Err(OpenFailure::Refused(refusal)),
            Err(failure) => {
                // Tell the serving agent we gave up, so it does not hand its service a
                // connection nobody will use. (Dropping the stream would finish it cleanly.)
                let _ = send.reset(RESET_CODE.into());
                let _ = recv.stop(RESET_CODE.into());
                Err(failure)
            }
        }
    }
}
