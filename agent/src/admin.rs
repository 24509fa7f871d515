//! The admin HTTP endpoint (localhost by default): health, readiness, metrics and status.
//!
//! | path         | answer                                                           |
//! |--------------|------------------------------------------------------------------|
//! | `/healthz`   | 200 while the process serves requests                            |
//! | `/readyz`    | 200 once the endpoint is bound and every hosted service is healthy |
//! | `/metrics`   | Prometheus text                                                  |
//! | `/v1/status` | JSON: identity, addresses, certificate, peers, services          |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Admin connections served at once; more are refused until one closes.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the admin endpoint needs from the running agent.
pub trait AdminView: Send + Sync + 'static {
    /// `Ok` when the agent serves and every hosted service passes its health check; otherwise
    /// why not.
    fn readiness(&self) -> Result<(), String>;
    fn metrics(&self) -> String;
    fn status(&self) -> serde_json::Value;
    /// Every member of the mesh this agent knows, with its state and summary.
    fn peers(&self) -> serde_json::Value;
    /// Every service in the mesh with its endpoints.
    fn services(&self) -> serde_json::Value;
    /// The mesh's dependency map: caller-to-callee edges with rates.
    fn graph(&self) -> serde_json::Value;
    /// Per upstream: endpoints with EWMA latency, in-flight, weight and ejection state, and
    /// the retry budget; per hosted service: the adaptive concurrency limit.
    fn routes(&self) -> serde_json::Value;
    /// The decision log: where this agent stands, the committed state and the committed tail.
    fn decisions(&self) -> serde_json::Value;
    /// The committed access policy: default, rules in precedence order, applied index.
    fn policy(&self) -> serde_json::Value;
    /// Quarantined nodes with each verdict's evidence, this agent's own reports about its
    /// peers, and (on the leader) the nodes under suspicion.
    fn quarantine(&self) -> serde_json::Value;
}

/// Serves admin requests on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    view: Arc<dyn AdminView>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Connection tasks live in this set: when the loop ends, keep-alive connections end too.
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::agent::stopping(&mut shutdown) => return,
        };
        // A bounded number of connections, each with a deadline for its request headers: a
        // local client holding sockets open cannot use up the agent's file descriptors.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("admin API busy: {MAX_CONNECTIONS} connections open; refusing one");
            continue;
        };
        let view = view.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(answer(&*view, &req)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn answer(view: &dyn AdminView, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match view.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => with_type(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => with_type(StatusCode::OK, "text/plain; version=0.0.4", view.metrics()),
        "/v1/status" => json(view.status()),
        "/v1/peers" => json(view.peers()),
        "/v1/services" => json(view.services()),
        "/v1/graph" => json(view.graph()),
        "/v1/routes" => json(view.routes()),
        "/v1/decisions" => json(view.decisions()),
        "/v1/policy" => json(view.policy()),
        "/v1/quarantine" => json(view.quarantine()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics, /v1/status, /v1/peers, /v1/services, \
             /v1/routes, /v1/decisions, /v1/policy, /v1/quarantine or /v1/graph\n",
        ),
    }
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(&value).unwrap_or_default();
    with_type(StatusCode::OK, "application/json", body + "\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}

fn with_type(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
