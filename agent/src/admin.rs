//! The admin HTTP endpoint (localhost by default): health, readiness, metrics and status.
//!
//! | path         | answer                                                           |
//! |--------------|------------------------------------------------------------------|
//! | `/healthz`   | 200 while the process serves requests                            |
//! | `/readyz`    | 200 once the QUIC endpoint is bound and the certificate loaded   |
//! | `/metrics`   | Prometheus text                                                  |
//! | `/v1/status` | JSON: identity, addresses, certificate, peers, services          |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin endpoint needs from the running agent.
pub trait AdminView: Send + Sync + 'static {
    fn ready(&self) -> bool;
    fn metrics(&self) -> String;
    fn status(&self) -> serde_json::Value;
}

/// Serves admin requests on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    view: Arc<dyn AdminView>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Connection tasks live in this set: when the loop ends, keep-alive connections end too.
    let mut connections = tokio::task::JoinSet::new();
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
        let view = view.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(answer(&*view, &req)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
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
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if view.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => with_type(StatusCode::OK, "text/plain; version=0.0.4", view.metrics()),
        "/v1/status" => {
            let body = serde_json::to_string_pretty(&view.status()).unwrap_or_default();
            with_type(StatusCode::OK, "application/json", body + "\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics or /v1/status\n",
        ),
    }
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
