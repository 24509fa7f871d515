//! The harness's own backends: one per (node, service), on 127.0.0.1, whose behaviour the
//! fault schedule changes (errors at a rate, added latency, hangs, resets). HTTP backends
//! answer `200` with `x-chaos-node: NODE` and the body `NODE VERSION\n`; `/healthz` answers
//! 200 unless the backend hangs. TCP backends write `NODE\n` and then echo.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::scenario::{BackendEffect, Protocol};

/// The header naming the node whose backend answered.
pub const NODE_HEADER: &str = "x-chaos-node";
/// Longest a hanging backend holds a request.
const HANG_LIMIT: Duration = Duration::from_secs(60);
const MAX_BODY: usize = 1 << 20;

/// One backend's identity and state.
pub struct Backend {
    pub node: String,
    pub service: String,
    pub version: String,
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

struct Shared {
    node: String,
    version: String,
    /// Time a healthy answer takes.
    latency: Duration,
    effect: watch::Sender<Option<BackendEffect>>,
    inner: Mutex<Inner>,
}

struct Inner {
    rng: SmallRng,
    /// When each request (health checks excluded) arrived.
    hits: Vec<Instant>,
}

impl Backend {
    /// Binds 127.0.0.1:0 and serves until `tasks` is dropped; healthy answers take `latency`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        node: &str,
        service: &str,
        version: &str,
        protocol: Protocol,
        latency: Duration,
        seed: u64,
        tasks: &mut JoinSet<()>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Shared {
            node: node.to_owned(),
            version: version.to_owned(),
            latency,
            effect: watch::channel(None).0,
            inner: Mutex::new(Inner {
                rng: SmallRng::seed_from_u64(seed),
                hits: Vec::new(),
            }),
        });
        let shared = state.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                match protocol {
                    Protocol::Http => connections.spawn(serve_http(stream, shared)),
                    Protocol::Tcp => connections.spawn(serve_tcp(stream, shared)),
                };
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            node: node.to_owned(),
            service: service.to_owned(),
            version: version.to_owned(),
            addr,
            state,
        })
    }

    /// Changes how it answers from the next request on (`None`: healthy).
    pub fn set(&self, effect: Option<BackendEffect>) {
        self.state.effect.send_replace(effect);
    }

    /// Requests that arrived `since` or later (offsets from `epoch`), read from the end.
    pub fn hits_after(&self, epoch: Instant, since: Duration) -> Vec<Duration> {
        let inner = self.state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let from = epoch + since;
        let mut out: Vec<Duration> = inner
            .hits
            .iter()
            .rev()
            .take_while(|t| **t >= from)
            .map(|t| t.duration_since(epoch))
            .collect();
        out.reverse();
        out
    }

    /// When each request (health checks excluded) arrived, as offsets from `epoch` (earlier
    /// ones left out).
    pub fn hits_since(&self, epoch: Instant) -> Vec<Duration> {
        let inner = self.state.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .hits
            .iter()
            .filter(|t| **t >= epoch)
            .map(|t| t.duration_since(epoch))
            .collect()
    }
}

impl Shared {
    /// Records a hit and decides this request's fate.
    fn decide(&self) -> Fate {
        let effect = *self.effect.borrow();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.hits.push(Instant::now());
        match effect {
            None => Fate::Answer(self.latency),
            Some(BackendEffect::Errors { rate, status }) => {
                if inner.rng.random_bool(rate) {
                    Fate::Error(status)
                } else {
                    Fate::Answer(self.latency)
                }
            }
            Some(BackendEffect::Latency { delay, jitter }) => {
                let spread = jitter.as_secs_f64();
                let offset = if spread > 0.0 {
                    inner.rng.random_range(-spread..=spread)
                } else {
                    0.0
                };
                Fate::Answer(Duration::from_secs_f64(
                    (delay.as_secs_f64() + offset).max(0.0),
                ))
            }
            Some(BackendEffect::Hang) => Fate::Hang,
            Some(BackendEffect::Reset { rate }) => {
                if inner.rng.random_bool(rate) {
                    Fate::Reset
                } else {
                    Fate::Answer(self.latency)
                }
            }
        }
    }

    /// Waits while the backend hangs (bounded).
    async fn hang(&self) {
        let mut rx = self.effect.subscribe();
        let _ = tokio::time::timeout(
            HANG_LIMIT,
            rx.wait_for(|e| !matches!(e, Some(BackendEffect::Hang))),
        )
        .await;
    }
}

enum Fate {
    Answer(Duration),
    Error(u16),
    Hang,
    Reset,
}

#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by the chaos harness")
    }
}

impl std::error::Error for ResetConnection {}

async fn serve_http(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { answer(req, &shared).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<Full<Bytes>>, ResetConnection> {
    if req.uri().path() == "/healthz" {
        if matches!(*shared.effect.borrow(), Some(BackendEffect::Hang)) {
            shared.hang().await;
        }
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let fate = shared.decide();
    // Read the request body (bounded) so the connection can be reused.
    let _ = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await;
    let (status, delay) = match fate {
        Fate::Answer(delay) => (StatusCode::OK, delay),
        Fate::Error(code) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            Duration::ZERO,
        ),
        Fate::Hang => {
            shared.hang().await;
            (StatusCode::OK, Duration::ZERO)
        }
        Fate::Reset => return Err(ResetConnection),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body = format!("{} {}\n", shared.node, shared.version);
    Response::builder()
        .status(status)
        .header(NODE_HEADER, shared.node.as_str())
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| ResetConnection)
}

/// `NODE\n`, then an echo until the caller half-closes (bounded to 1 MiB).
async fn serve_tcp(mut stream: TcpStream, shared: Arc<Shared>) {
    match shared.decide() {
        Fate::Answer(delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        Fate::Hang => shared.hang().await,
        Fate::Error(_) | Fate::Reset => return,
    }
    if stream
        .write_all(format!("{}\n", shared.node).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || total > MAX_BODY || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n;
    }
    let _ = stream.shutdown().await;
}
