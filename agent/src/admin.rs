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
    /// This agent's leaf, the trust bundle with expiries, and where the mesh CA stands.
    fn certs(&self) -> serde_json::Value;
    /// The committed join tokens (IDs, expiry, revocation; never secrets).
    fn tokens(&self) -> serde_json::Value;
    /// The secret mutating calls must present (`authorization: Bearer ...`); `None` when this
    /// agent keeps no admin token file, and then nothing may be changed through it.
    fn admin_token(&self) -> Option<String>;
    /// Carries out an operator's action through the leader; a line for the operator.
    fn operate(&self, action: plexus_protocol::OperatorAction) -> Operation;
    /// The committed access policy: default, rules in precedence order, applied index.
    fn policy(&self) -> serde_json::Value;
    /// Quarantined nodes with each verdict's evidence, this agent's own reports about its
    /// peers, and (on the leader) the nodes under suspicion.
    fn quarantine(&self) -> serde_json::Value;
}

/// An operator's action under way.
pub type Operation =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Largest body a mutating call may send.
const MAX_BODY: usize = 16 * 1024;

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
                async move {
                    let response = if req.method() == Method::POST {
                        mutate(&*view, req).await
                    } else {
                        answer(&*view, &req)
                    };
                    Ok::<_, Infallible>(response)
                }
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
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET, and POST on the operator paths, are served here\n",
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD, POST"),
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
        "/v1/certs" => json(view.certs()),
        "/v1/tokens" => json(view.tokens()),
        "/v1/policy" => json(view.policy()),
        "/v1/quarantine" => json(view.quarantine()),
        "/ui" | "/ui/" => dashboard(),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics, /v1/status, /v1/peers, /v1/services, \
             /v1/routes, /v1/decisions, /v1/policy, /v1/quarantine, /v1/certs, /v1/tokens, \
             /v1/graph or /ui\n",
        ),
    }
}

/// A mutating call: authenticated with the local admin token, carried out through the leader.
///
/// | path                       | body                  | action                        |
/// |----------------------------|-----------------------|-------------------------------|
/// | `/v1/tokens`               | `{"ttl": "24h"}`      | make a join token (no ttl: never expires) |
/// | `/v1/tokens/revoke`        | `{"id": "..."}`       | revoke a join token           |
/// | `/v1/ca/rotate`            | none                  | rotate the mesh CA            |
/// | `/v1/quarantine/release`   | `{"node": "..."}`     | end a node's quarantine       |
async fn mutate(view: &dyn AdminView, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    use plexus_protocol::OperatorAction;
    let Some(expected) = view.admin_token() else {
        return text(
            StatusCode::FORBIDDEN,
            "this agent keeps no admin token (it has no data_dir); nothing can be changed here\n",
        );
    };
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let matches = presented.is_some_and(|p| {
        p.len() == expected.len()
            && p.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !matches {
        return text(
            StatusCode::UNAUTHORIZED,
            "mutating calls need the local admin token (authorization: Bearer <admin.token>)\n",
        );
    }
    let path = req.uri().path().to_owned();
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let body = match limited.collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 16 KiB\n"),
    };
    let fields: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => return bad_request(format!("body is not JSON: {e}")),
        }
    };
    let field = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let action = match path.as_str() {
        "/v1/tokens" => match field("ttl").map(|t| humantime::parse_duration(&t)) {
            None => OperatorAction::CreateToken { ttl_ms: None },
            Some(Ok(ttl)) => OperatorAction::CreateToken {
                ttl_ms: Some(ttl.as_millis() as u64),
            },
            Some(Err(e)) => return bad_request(format!("ttl: {e}; write e.g. \"24h\"")),
        },
        "/v1/tokens/revoke" => match field("id") {
            Some(id) => OperatorAction::RevokeToken { id },
            None => return bad_request("id is required".into()),
        },
        "/v1/ca/rotate" => OperatorAction::RotateCa,
        "/v1/quarantine/release" => match field("node").map(plexus_protocol::NodeId::new) {
            Some(Ok(node)) => OperatorAction::Release { node },
            Some(Err(e)) => return bad_request(format!("node: {e}")),
            None => return bad_request("node is required".into()),
        },
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found; POST /v1/tokens, /v1/tokens/revoke, /v1/ca/rotate or \
                 /v1/quarantine/release\n",
            )
        }
    };
    match view.operate(action).await {
        Ok(detail) => json(serde_json::json!({ "ok": true, "detail": detail })),
        Err(reason) => {
            let body = serde_json::json!({ "ok": false, "error": reason });
            let mut response = json(body);
            *response.status_mut() = StatusCode::CONFLICT;
            response
        }
    }
}

fn bad_request(reason: String) -> Response<Full<Bytes>> {
    with_type(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        reason + "\n",
    )
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(&value).unwrap_or_default();
    with_type(StatusCode::OK, "application/json", body + "\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.to_owned())
}

/// The operator's dashboard: one page, no build step and no external assets; its script reads
/// this agent's `/v1/` API every two seconds.
const DASHBOARD: &str = include_str!("admin/ui.html");

fn dashboard() -> Response<Full<Bytes>> {
    let mut response = with_type(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into());
    response.headers_mut().insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src 'self' data:",
        ),
    );
    response
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
