//! `plexus backend`: a small HTTP service for demos and container tests, so an edge cluster
//! built from the one image has something to serve. Every request is answered 200 with the
//! backend's name (also in `x-backend`); `GET /healthz` answers 200.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves until the process is stopped (SIGTERM or Ctrl-C).
pub async fn serve(listen: SocketAddr, name: String) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, %name, "demo backend serving");
    let name: Arc<str> = Arc::from(name);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let body = match request.uri().path() {
                        "/healthz" => "ok\n".to_owned(),
                        _ => format!("{name}\n"),
                    };
                    let response = Response::builder()
                        .header("content-type", "text/plain")
                        .header("x-backend", name.as_ref())
                        .body(Full::new(Bytes::from(body)))
                        .expect("a valid response");
                    async move { Ok::<_, Infallible>(response) }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
