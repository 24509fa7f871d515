//! The service-facing side: a peer's HTTP stream is served as one HTTP/1.1 exchange, admitted
//! under the service's adaptive concurrency limit (503 + `plexus-overloaded` at once when over
//! it) and forwarded over a keep-alive pool to the local service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plexus_protocol::{NodeId, ServiceName};
use quinn::{RecvStream, SendStream};
use tracing::Instrument;

use super::body::{boxed, Metered, ProxyBody};
use super::local::{LocalError, LocalPool};
use super::trace::{ExportedSpan, TraceContext, TRACEPARENT};
use super::{agent_answer, is_upgrade, overloaded_answer, policy_denied_answer, strip_hop_by_hop};
use crate::access::AccessGate;
use crate::telemetry::otlp::{SpanKind, SpanSink};
use crate::telemetry::{names, LoadBook, Telemetry};

/// Forwards admitted requests to local HTTP services.
#[derive(Clone)]
pub struct LocalHttp {
    local: Arc<LocalPool>,
    load: LoadBook,
    telemetry: Telemetry,
    /// Each hosted service's admission metrics, kept by service name rather than looked up by
    /// labels (a label set built and hashed) on every request.
    meters: Arc<Mutex<HashMap<ServiceName, AdmissionMeters>>>,
    spans: Option<SpanSink>,
    access: Arc<AccessGate>,
}

/// A hosted service's shed count and, when it has an adaptive limit, the current limit (a
/// service without one exports no limit gauge, not a limit of 0).
#[derive(Clone)]
struct AdmissionMeters {
    shed: metrics::Counter,
    limit: Option<metrics::Gauge>,
}

impl LocalHttp {
    pub fn new(
        load: LoadBook,
        telemetry: Telemetry,
        spans: Option<SpanSink>,
        access: Arc<AccessGate>,
    ) -> Self {
        Self {
            local: Arc::default(),
            load,
            telemetry,
            meters: Arc::default(),
            spans,
            access,
        }
    }

    fn meters(&self, service: &ServiceName) -> AdmissionMeters {
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = meters.get(service) {
            return found.clone();
        }
        let labels = [("service", service.as_str())];
        let made = AdmissionMeters {
            shed: self.telemetry.counter(names::SHED, &labels),
            limit: self
                .load
                .limit(service)
                .map(|_| self.telemetry.gauge(names::CONCURRENCY_LIMIT, &labels)),
        };
        meters.insert(service.clone(), made.clone());
        made
    }

    /// Serves one stream from `peer` carrying a request for `service` at `address`.
    pub async fn serve_stream(
        &self,
        peer: NodeId,
        service: Option<(ServiceName, SocketAddr)>,
        send: SendStream,
        recv: RecvStream,
    ) {
        let io = TokioIo::new(tokio::io::join(recv, send));
        let this = self.clone();
        let handler = hyper::service::service_fn(move |request| {
            let this = this.clone();
            let service = service.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(this.handle(peer, service, request).await) }
        });
        if let Err(error) = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, handler)
            .with_upgrades()
            .await
        {
            tracing::debug!(%error, "HTTP stream from peer ended with an error");
        }
    }

    async fn handle(
        &self,
        peer: NodeId,
        service: Option<(ServiceName, SocketAddr)>,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let Some((service, address)) = service else {
            self.refused("", "unknown_service");
            return agent_answer(StatusCode::SERVICE_UNAVAILABLE, "unknown_service");
        };
        if let Err(denied) = self.access.check(&peer, &service) {
            self.refused(service.as_str(), "policy_denied");
            return policy_denied_answer(&denied);
        }
        let trace = TraceContext::continue_from(request.headers());
        let span = tracing::info_span!(
            "serve",
            %service,
            %peer,
            method = %request.method(),
            path = %request.uri().path(),
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_id = %trace.parent_id_hex(),
        );
        let exported = ExportedSpan::begin(
            self.spans.as_ref(),
            trace,
            "plexus.serve",
            SpanKind::Server,
            &request,
        );
        let response = self
            .forward(service.clone(), address, request, trace)
            .instrument(span)
            .await;
        if let Some(exported) = exported {
            let extra = [
                ("plexus.service", service.to_string()),
                ("plexus.peer", peer.to_string()),
            ];
            exported.end(response.status(), &extra);
        }
        response
    }

    async fn forward(
        &self,
        service: ServiceName,
        address: SocketAddr,
        mut request: Request<Incoming>,
        trace: TraceContext,
    ) -> Response<ProxyBody> {
        let meters = self.meters(&service);
        let Some(mut admitted) = self.load.admit(&service) else {
            meters.shed.increment(1);
            self.refused(service.as_str(), "overloaded");
            return overloaded_answer();
        };
        if let (Some(gauge), Some(limit)) = (&meters.limit, self.load.limit(&service)) {
            gauge.set(f64::from(limit.limit));
        }
        request.headers_mut().insert(TRACEPARENT, trace.header());
        let upgrade = is_upgrade(request.headers());
        let result = if upgrade {
            upgrade_locally(address, request)
                .await
                .map(|r| r.map(boxed))
        } else {
            let (mut parts, body) = request.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            match super::origin_form(&parts.uri) {
                Ok(Some(uri)) => parts.uri = uri,
                Ok(None) => {}
                Err(_) => return agent_answer(StatusCode::BAD_REQUEST, "bad_target"),
            }
            self.local
                .request(address, Request::from_parts(parts, boxed(body)))
                .await
                .map_err(|e| match e {
                    LocalError::Connect { refused, error } => (true, refused, error),
                    LocalError::Request(error) => (false, false, error),
                })
        };
        match result {
            Ok(response) => {
                admitted.mark_connected();
                if response.status().is_server_error() {
                    admitted.failed();
                }
                let (mut parts, body) = response.into_parts();
                if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(&mut parts.headers);
                }
                // Only agents speak these: a service (or a gateway behind it passing on another
                // agent's answer) must not make callers shed, fail over or cache a refusal.
                parts.headers.remove(super::ERROR);
                parts.headers.remove(super::OVERLOADED);
                // In flight until the body is sent.
                let body = Metered::new(body, move |_, completed| {
                    if !completed {
                        admitted.failed();
                    }
                    drop(admitted);
                });
                Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
            }
            Err((connect, refused, error)) => {
                admitted.failed();
                tracing::warn!(%service, %address, %error, "local service request failed");
                let reason = match (connect, refused) {
                    (true, true) => "local_connect_refused",
                    (true, false) => "local_connect_failed",
                    _ => "local_request_failed",
                };
                self.refused(service.as_str(), reason);
                // Marked as the agent's own answer: the caller treats it as an unreachable
                // endpoint and tries another.
                agent_answer(StatusCode::BAD_GATEWAY, reason)
            }
        }
    }

    fn refused(&self, service: &str, reason: &'static str) {
        self.telemetry
            .counter(
                names::STREAMS_REFUSED,
                &[
                    ("direction", "inbound"),
                    ("service", service),
                    ("reason", reason),
                ],
            )
            .increment(1);
    }
}

/// An upgrade gets its own local connection: the request goes out, a 101 answer joins the
/// peer's stream and the new connection as a byte pipe.
async fn upgrade_locally(
    address: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, (bool, bool, String)> {
    let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| {
        let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
        (true, refused, e.to_string())
    })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| (true, false, e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let peer_side = hyper::upgrade::on(&mut request);
    let (parts, body) = request.into_parts();
    let mut response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| (false, false, e.to_string()))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let local_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let Ok((peer, local)) = tokio::try_join!(peer_side, local_side) {
                let (mut peer, mut local) = (TokioIo::new(peer), TokioIo::new(local));
                let _ = tokio::io::copy_bidirectional(&mut peer, &mut local).await;
            }
        });
    }
    Ok(response)
}
