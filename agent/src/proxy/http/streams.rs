//! Keep-alive HTTP/1.1 connections from a caller's agent to serving agents, each on its own
//! QUIC stream. A request takes an idle one to its endpoint or opens a new stream; a connection
//! whose response body was read to the end goes back for the next request. Reuse saves, per
//! request, the stream header and a connection task on both agents. The request that uses a
//! connection runs it ([`super::driven`]): no task of its own, no hand-offs between tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plexus_protocol::{AppProtocol, ServiceName, StreamHeader};
use quinn::{RecvStream, SendStream};
use tokio::io::Join;

use super::body::{boxed, ProxyBody};
use super::driven::{DrivenConn, IdleConns, SendError};
use crate::transport::{write_message, PeerPool};

/// A QUIC stream to a serving agent, as HTTP/1.1 runs on it.
pub type PeerIo = TokioIo<Join<RecvStream, SendStream>>;

/// Idle connections kept per endpoint at most.
const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// An idle stream older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum ExchangeError {
    /// The endpoint could not be reached or the stream not opened.
    Connect(String),
    /// The exchange broke after the request was sent.
    Exchange(String),
}

/// The HTTP connections of one upstream to its endpoints.
pub struct PeerStreams {
    pool: Arc<PeerPool>,
    service: ServiceName,
    open_timeout: Duration,
    idle: Arc<IdleConns<PeerIo>>,
    opened: metrics::Counter,
}

impl PeerStreams {
    /// `opened` counts the streams opened.
    pub fn new(
        pool: Arc<PeerPool>,
        service: ServiceName,
        open_timeout: Duration,
        opened: metrics::Counter,
    ) -> Self {
        Self {
            pool,
            service,
            open_timeout,
            idle: IdleConns::new(MAX_IDLE_PER_ENDPOINT, IDLE_TIMEOUT),
            opened,
        }
    }

    /// Sends `request` to `addr` and waits for the response head; also returns how long
    /// opening a stream took (zero on a reused one). With `reusable`, an idle connection is
    /// used if there is one, and the connection goes back to the idle list once the response
    /// body has been read to the end. Without, the stream is the request's for good (upgrades).
    pub async fn exchange(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
        reusable: bool,
    ) -> Result<(Response<ProxyBody>, Duration), ExchangeError> {
        if !reusable {
            return self.exchange_once(addr, request).await;
        }
        while let Some(conn) = self.idle.take(addr) {
            match conn.send(request, Some(self.idle.give_back(addr))).await {
                Ok(response) => return Ok((response.map(boxed), Duration::ZERO)),
                // Never written: the connection had gone; try the next one.
                Err(SendError::Unsent(unsent)) => request = *unsent,
                Err(SendError::Failed(error)) => {
                    return Err(ExchangeError::Exchange(error.to_string()))
                }
            }
        }
        let opening = Instant::now();
        let io = self.open(addr).await?;
        let conn = DrivenConn::handshake(io)
            .await
            .map_err(|e| ExchangeError::Connect(e.to_string()))?;
        let setup = opening.elapsed();
        match conn.send(request, Some(self.idle.give_back(addr))).await {
            Ok(response) => {
                self.pool.confirm(addr);
                Ok((response.map(boxed), setup))
            }
            Err(SendError::Unsent(_)) => Err(ExchangeError::Connect(
                "the new stream closed before the request was sent".into(),
            )),
            Err(SendError::Failed(error)) => Err(ExchangeError::Exchange(error.to_string())),
        }
    }

    /// An exchange on a stream of its own, run by a task of its own so that an upgrade can
    /// take the stream over.
    async fn exchange_once(
        &self,
        addr: SocketAddr,
        request: Request<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, Duration), ExchangeError> {
        let opening = Instant::now();
        let io = self.open(addr).await?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| ExchangeError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "stream to endpoint ended with an error");
            }
        });
        let setup = opening.elapsed();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ExchangeError::Exchange(e.to_string()))?;
        self.pool.confirm(addr);
        Ok((response.map(boxed), setup))
    }

    /// Opens a stream to `addr` and sends the header that names the service.
    async fn open(&self, addr: SocketAddr) -> Result<PeerIo, ExchangeError> {
        let connect = |e: &dyn std::fmt::Display| ExchangeError::Connect(e.to_string());
        let peer = self
            .pool
            .connection(addr, self.open_timeout)
            .await
            .map_err(|e| connect(&e))?;
        let (mut send, recv) = peer.connection.open_bi().await.map_err(|e| connect(&e))?;
        self.opened.increment(1);
        let header = StreamHeader {
            service: self.service.clone(),
            open_budget_ms: u32::try_from(self.open_timeout.as_millis()).unwrap_or(u32::MAX),
            protocol: AppProtocol::Http,
        };
        write_message(&mut send, &header)
            .await
            .map_err(|e| connect(&e))?;
        Ok(TokioIo::new(tokio::io::join(recv, send)))
    }
}
