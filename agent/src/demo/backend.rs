//! `plexus backend`: a small HTTP service for demos and container tests, so an edge cluster
//! built from the one image has something to serve. Every request is answered 200 with the
//! backend's name (also in `x-backend`); `GET /healthz` answers 200. The demo can make one
//! fail (503 to everything but `/healthz`, as a broken handler would).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A running demo backend.
#[derive(Clone)]
pub struct DemoBackend {
    pub addr: SocketAddr,
    pub name: Arc<str>,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
}

impl DemoBackend {
    /// Listens on `listen` and serves in a background task.
    pub async fn start(listen: SocketAddr, name: &str) -> Result<Self, String> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let backend = Self {
            addr: listener.local_addr().map_err(|e| e.to_string())?,
            name: Arc::from(name),
            failing: Arc::default(),
            hits: Arc::default(),
        };
        tokio::spawn(backend.clone().accept(listener));
        Ok(backend)
    }

    /// From now on every request but `/healthz` is answered 503 (`false`: 200 again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Requests answered so far (health checks aside).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    async fn accept(self, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let backend = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let response = backend.answer(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, body) = match request.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
            _ => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                match self.failing.load(Ordering::Relaxed) {
                    true => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{} is failing\n", self.name),
                    ),
                    false => (StatusCode::OK, format!("{}\n", self.name)),
                }
            }
        };
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .header("x-backend", self.name.as_ref())
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    }
}

/// `plexus backend`: serves until SIGTERM or Ctrl-C.
pub async fn serve(listen: SocketAddr, name: String) -> Result<(), String> {
    let backend = DemoBackend::start(listen, &name).await?;
    tracing::info!(listen = %backend.addr, %name, "demo backend serving");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
