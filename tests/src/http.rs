//! HTTP backends whose behaviour a test changes while they run, and a small HTTP client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What a [`Backend`] does with each request, changeable while it runs.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Status to answer with (0: 200).
    pub status: AtomicU16,
    /// Delay before answering, microseconds.
    pub delay_us: AtomicU64,
    /// Requests received (the health probe's excluded).
    pub hits: AtomicU64,
}

impl Behaviour {
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that echoes the request body, names itself in `x-backend`,
/// answers `/healthz` with its configured status, and upgrades `Upgrade: echo` requests to a
/// byte echo.
pub struct Backend {
    pub addr: SocketAddr,
    pub behaviour: Arc<Behaviour>,
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Behaviour::default());
        let (b, name) = (behaviour.clone(), name.to_owned());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (b, name) = (b.clone(), name.clone());
                let service = hyper::service::service_fn(move |req| {
                    let (b, name) = (b.clone(), name.clone());
                    async move { Ok::<_, hyper::Error>(answer(&b, &name, req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades(),
                );
            }
        });
        Self { addr, behaviour }
    }
}

async fn answer(
    b: &Behaviour,
    name: &str,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let status = match b.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    if req.uri().path() == "/healthz" {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    b.hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().get("upgrade").is_some_and(|u| u == "echo") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let delay = b.delay_us.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    }
    let traceparent = req.headers().get("traceparent").cloned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut response = Response::builder().status(status).header("x-backend", name);
    if let Some(t) = traceparent {
        response = response.header("x-traceparent", t);
    }
    response.body(Full::new(body)).unwrap()
}

/// A keep-alive HTTP/1.1 client connection (or HTTP/2 with prior knowledge).
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Self::H1(send)
    }

    pub async fn h2(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        Self::H2(send)
    }

    /// Sends `req` and reads the whole answer (bounded to 10 s).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        let fut = async {
            let response = match self {
                Self::H1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req).await
                }
                Self::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req).await
                }
            }
            .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        let req = Request::get(path)
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}
