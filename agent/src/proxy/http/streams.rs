//! Keep-alive HTTP/1.1 connections from a caller's agent to serving agents, each on its own
//! QUIC stream. A request takes an idle one to its endpoint or opens a new stream; a connection
//! whose response body was read to the end goes back for the next request. Reuse saves, per
//! request, the stream header and a connection task on both agents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use plexus_protocol::{AppProtocol, ServiceName, StreamHeader};

use super::body::ProxyBody;
use crate::transport::{write_message, PeerPool};

/// A keep-alive HTTP/1.1 connection on one QUIC stream.
pub type Sender = SendRequest<ProxyBody>;

/// Idle connections kept per endpoint at most.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

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
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
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
            idle: Mutex::default(),
            opened,
        }
    }

    /// Sends `request` to `addr` and waits for the response headers. With `reusable`, an idle
    /// connection is used if there is one, and the connection is handed back with the
    /// response (give it back with [`PeerStreams::give`] once the body has been read).
    pub async fn exchange(
        &self,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
        reusable: bool,
    ) -> Result<(Response<Incoming>, Option<Sender>, Duration), ExchangeError> {
        if reusable {
            while let Some(mut sender) = self.take(addr) {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok((response, Some(sender), Duration::ZERO)),
                    Err(mut error) => match error.take_message() {
                        // Never written: the connection had gone; try the next one.
                        Some(unsent) => request = unsent,
                        None => {
                            return Err(ExchangeError::Exchange(error.into_error().to_string()))
                        }
                    },
                }
            }
        }
        let opening = std::time::Instant::now();
        let mut sender = self.open(addr).await?;
        let setup = opening.elapsed();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ExchangeError::Exchange(e.to_string()))?;
        self.pool.confirm(addr);
        Ok((response, reusable.then_some(sender), setup))
    }

    /// Returns a connection whose last response was read to the end.
    pub fn give(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(sender);
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Opens a stream to `addr`, sends the header and starts HTTP/1.1 on it.
    async fn open(&self, addr: SocketAddr) -> Result<Sender, ExchangeError> {
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
        let io = TokioIo::new(tokio::io::join(recv, send));
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| connect(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "stream to endpoint ended with an error");
            }
        });
        Ok(sender)
    }
}
