//! One reused connection per peer address, re-dialed with backoff when it breaks.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::Endpoint;

use super::{Backoff, PeerConnection};
use crate::telemetry::{names, OpenGuard, Telemetry};

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Server name sent in the TLS handshake; peers are identified by certificate, not by name.
const SERVER_NAME: &str = "plexus.mesh";

/// Why no connection to a peer could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("peer {addr} is in backoff for another {wait:?} after {failures} failed dials")]
    Backoff {
        addr: SocketAddr,
        wait: Duration,
        failures: u32,
    },
    #[error("dial to {addr} failed: {reason}")]
    Failed { addr: SocketAddr, reason: String },
}

impl DialError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Backoff { .. } => "backoff",
            Self::Failed { .. } => "dial_failed",
        }
    }
}

#[derive(Debug)]
struct PeerSlot {
    connection: Option<PeerConnection>,
    backoff: Backoff,
}

/// Outbound connections of this agent, keyed by peer address.
#[derive(Debug)]
pub struct PeerPool {
    endpoint: Endpoint,
    telemetry: Telemetry,
    slots: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<PeerSlot>>>>,
    /// Peers gossip says are back: their dial backoff is reset by the next caller.
    forgiven: Mutex<HashSet<SocketAddr>>,
    jitter: RandomState,
}

impl PeerPool {
    pub fn new(endpoint: Endpoint, telemetry: Telemetry) -> Self {
        Self {
            endpoint,
            telemetry,
            slots: Mutex::default(),
            forgiven: Mutex::default(),
            jitter: RandomState::new(),
        }
    }

    /// The live connection to `addr`, dialing it if there is none and backoff allows.
    ///
    /// Concurrent callers for one peer share a single dial, which may take `dial_timeout`.
    pub async fn connection(
        &self,
        addr: SocketAddr,
        dial_timeout: Duration,
    ) -> Result<PeerConnection, DialError> {
        let slot = {
            let mut slots = self.slots.lock().expect("peer pool lock poisoned");
            slots
                .entry(addr)
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(PeerSlot {
                        connection: None,
                        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_MAX),
                    }))
                })
                .clone()
        };
        let mut slot = slot.lock().await;
        let now = Instant::now();
        if let Some(peer) = &slot.connection {
            let Some(reason) = peer.connection.close_reason() else {
                return Ok(peer.clone());
            };
            let node = peer.node_id.clone();
            slot.connection = None;
            if let Some(alert) = tls_alert(&reason) {
                // quinn completes a client handshake before the server has checked our
                // certificate; a refusal arrives as a TLS alert on an "established" connection.
                // That is a failed dial, and it must back off like one.
                self.telemetry
                    .handshake_failed("outbound", "refused_by_peer");
                self.dial_failed(addr);
                let wait = slot.backoff.failed(now, self.jitter(now));
                tracing::warn!(peer = %node, %addr, alert, retry_in = ?wait,
                    "peer refused our certificate");
                return Err(DialError::Failed {
                    addr,
                    reason: format!("peer refused us: {reason}"),
                });
            }
            tracing::info!(peer = %node, %addr, %reason, "connection to peer closed; re-dialing");
        }
        if self
            .forgiven
            .lock()
            .expect("peer pool lock poisoned")
            .remove(&addr)
        {
            slot.backoff.succeeded();
        }
        if let Err(wait) = slot.backoff.ready(now) {
            return Err(DialError::Backoff {
                addr,
                wait,
                failures: slot.backoff.failures(),
            });
        }
        let dialed = tokio::time::timeout(dial_timeout, self.dial(addr))
            .await
            .unwrap_or_else(|_| Err(format!("no handshake within {dial_timeout:?}")));
        match dialed {
            Ok(peer) => {
                // Backoff is reset only when a stream is answered: see `confirm`.
                slot.connection = Some(peer.clone());
                Ok(peer)
            }
            Err(reason) => {
                let wait = slot.backoff.failed(Instant::now(), self.jitter(now));
                self.dial_failed(addr);
                tracing::warn!(%addr, %reason, retry_in = ?wait, "dial to peer failed");
                Err(DialError::Failed { addr, reason })
            }
        }
    }

    /// Records that the peer at `addr` answered a stream: it accepted our certificate and
    /// serves us, so dial backoff starts from scratch again. Skipped while another caller holds
    /// the slot (a dial in progress): that dial records its own outcome.
    pub fn confirm(&self, addr: SocketAddr) {
        let slot = self
            .slots
            .lock()
            .expect("peer pool lock poisoned")
            .get(&addr)
            .cloned();
        let Some(slot) = slot else { return };
        if let Ok(mut slot) = slot.try_lock() {
            slot.backoff.succeeded();
        };
    }

    /// Forgets the dial backoff toward `addr`: gossip says the peer is back (see
    /// `returning`), so the failures that earned it belong to a process that is gone. Marked
    /// for the next caller when a dial holds the slot now, so it is never lost.
    pub fn forgive(&self, addr: SocketAddr) {
        self.forgiven
            .lock()
            .expect("peer pool lock poisoned")
            .insert(addr);
    }

    fn dial_failed(&self, addr: SocketAddr) {
        self.telemetry
            .counter(names::DIAL_FAILURES, &[("peer", &addr.to_string())])
            .increment(1);
    }

    fn jitter(&self, now: Instant) -> f64 {
        (self.jitter.hash_one(now) % 1000) as f64 / 1000.0
    }

    async fn dial(&self, addr: SocketAddr) -> Result<PeerConnection, String> {
        let connecting = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let connection = connecting.await.map_err(|e| {
            if tls_alert(&e).is_some() {
                self.telemetry
                    .handshake_failed("outbound", "refused_by_peer");
                self.dial_failed(addr);
            }
            e.to_string()
        })?;
        let peer = PeerConnection::identify(connection)?;
        tracing::info!(peer = %peer.node_id, %addr, "connected to peer");
        self.telemetry
            .counter(names::CONNECTIONS, &[("direction", "outbound")])
            .increment(1);
        let open = OpenGuard::new(
            self.telemetry
                .gauge(names::CONNECTIONS_OPEN, &[("direction", "outbound")]),
        );
        let watched = peer.connection.clone();
        tokio::spawn(async move {
            let _open = open;
            let reason = watched.closed().await;
            tracing::debug!(%addr, %reason, "outbound connection closed");
        });
        Ok(peer)
    }

    /// Peers with a live outbound connection: (address, node ID).
    pub fn connected(&self) -> Vec<(SocketAddr, PeerConnection)> {
        let slots = self.slots.lock().expect("peer pool lock poisoned");
        slots
            .iter()
            .filter_map(|(addr, slot)| {
                let slot = slot.try_lock().ok()?;
                let peer = slot.connection.as_ref()?;
                peer.connection
                    .close_reason()
                    .is_none()
                    .then(|| (*addr, peer.clone()))
            })
            .collect()
    }
}

/// The TLS alert a peer closed the connection with, if it did (QUIC crypto error 0x100 + alert).
fn tls_alert(reason: &quinn::ConnectionError) -> Option<u64> {
    match reason {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            (0x100..0x200).contains(&code).then(|| code - 0x100)
        }
        _ => None,
    }
}
