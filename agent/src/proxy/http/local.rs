//! Keep-alive HTTP/1.1 connections from a serving agent to its local services. The request
//! that uses a connection runs it ([`super::driven`]); once its response body has been sent on,
//! the connection goes back to the idle list of its service's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::{boxed, ProxyBody};
use super::driven::{DrivenConn, IdleConns, SendError};

/// Idle local connections kept per service address.
const MAX_IDLE_PER_ADDRESS: usize = 64;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to a local service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type LocalConn = DrivenConn<TokioIo<TcpStream>>;

/// Why a local service gave no response.
#[derive(Debug)]
pub enum LocalError {
    /// Connecting failed; `refused`: nothing listens there.
    Connect { refused: bool, error: String },
    /// The exchange failed after the request was sent.
    Request(String),
}

/// The idle connections to local services, by address.
pub struct LocalPool {
    idle: Arc<IdleConns<TokioIo<TcpStream>>>,
}

impl Default for LocalPool {
    fn default() -> Self {
        Self {
            idle: IdleConns::new(MAX_IDLE_PER_ADDRESS, IDLE_TIMEOUT),
        }
    }
}

impl LocalPool {
    /// Sends `request` (origin-form target) to the service at `address` and waits for the
    /// response head, on an idle connection if one is usable, else on a new one.
    pub async fn request(
        self: &Arc<Self>,
        address: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, LocalError> {
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&address.to_string()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        while let Some(conn) = self.idle.take(address) {
            match conn.send(request, Some(self.idle.give_back(address))).await {
                Ok(response) => return Ok(response.map(boxed)),
                // The service had closed it: the request was not written; try another.
                Err(SendError::Unsent(unsent)) => request = *unsent,
                Err(SendError::Failed(error)) => {
                    return Err(LocalError::Request(error.to_string()))
                }
            }
        }
        let conn = connect(address).await?;
        match conn.send(request, Some(self.idle.give_back(address))).await {
            Ok(response) => Ok(response.map(boxed)),
            Err(SendError::Unsent(_)) => Err(LocalError::Request(
                "the new connection closed before the request was sent".into(),
            )),
            Err(SendError::Failed(error)) => Err(LocalError::Request(error.to_string())),
        }
    }

    /// The number of idle connections kept (for tests).
    #[cfg(test)]
    fn idle_count(&self, address: SocketAddr) -> usize {
        self.idle.count(address)
    }
}

async fn connect(address: SocketAddr) -> Result<LocalConn, LocalError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(LocalError::Connect {
                refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
                error: e.to_string(),
            })
        }
        Err(_) => {
            return Err(LocalError::Connect {
                refused: false,
                error: format!("no connection within {CONNECT_TIMEOUT:?}"),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    DrivenConn::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| LocalError::Connect {
            refused: false,
            error: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http::body::full;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local service that answers `answers` requests per connection with a 5-byte body, then
    /// closes the connection when `close` is notified. Returns its address, a count of
    /// connections accepted and a channel told of each connection it closed.
    async fn service(
        answers: usize,
        close: Arc<tokio::sync::Notify>,
    ) -> (
        SocketAddr,
        Arc<AtomicUsize>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                let close = close.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..answers {
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    close.notified().await;
                    let _ = tcp.shutdown().await;
                    drop(tcp);
                    let _ = closed_tx.send(());
                });
            }
        });
        (address, accepted, closed)
    }

    fn get() -> Request<ProxyBody> {
        Request::builder().uri("/").body(full("")).unwrap()
    }

    #[tokio::test]
    async fn connections_are_reused_once_their_answer_is_read() {
        let (address, accepted, _closed) = service(100, Arc::default()).await;
        let pool = Arc::new(LocalPool::default());
        for _ in 0..5 {
            let response = pool.request(address, get()).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(address), 1);
    }

    #[tokio::test]
    async fn an_answer_not_read_to_the_end_keeps_its_connection_out_of_the_pool() {
        let (address, accepted, _closed) = service(100, Arc::default()).await;
        let pool = Arc::new(LocalPool::default());
        drop(pool.request(address, get()).await.unwrap());
        assert_eq!(pool.idle_count(address), 0);
        let response = pool.request(address, get()).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_while_idle_is_not_used() {
        // One answer per connection, then the service closes it.
        let close = Arc::new(tokio::sync::Notify::new());
        let (address, accepted, mut closed) = service(1, close.clone()).await;
        let pool = Arc::new(LocalPool::default());
        for round in 1..=3 {
            let response = pool.request(address, get()).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
            assert_eq!(pool.idle_count(address), 1, "kept after round {round}");
            close.notify_one();
            tokio::time::timeout(Duration::from_secs(5), closed.recv())
                .await
                .expect("the service closes its connection")
                .unwrap();
            if round == 3 {
                // The sweep closes it without waiting for a request to that address.
                pool.idle.sweep();
                assert_eq!(pool.idle_count(address), 0, "a closed connection is swept");
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_refused_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let pool = Arc::new(LocalPool::default());
        match pool.request(address, get()).await {
            Err(LocalError::Connect { refused: true, .. }) => {}
            other => panic!(
                "expected a refused connect, got {:?}",
                other.map(|r| r.status())
            ),
        }
    }
}
