//! Quarantine of anomalous peers: what this agent observes about its peers, and (on the leader)
//! the verdicts that need reports from several distinct observers.
//!
//! `PeerObserver` is the handle the data plane reports peer events into; it is cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use plexus_protocol::NodeId;

/// Something a peer did that quarantine may care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerEvent {
    /// A request to or from the peer succeeded.
    RequestOk,
    /// A request to the peer failed (5xx, gateway error, connection failure).
    RequestFailed,
    /// A connection or stream with the peer was reset.
    Reset,
    /// The peer broke the TLS handshake rules.
    HandshakeViolation,
    /// The peer sent a malformed frame or message.
    ProtocolViolation,
    /// The peer called a service the access policy does not allow it.
    PolicyRefusal,
}

/// The events seen per peer, with the time of each.
#[derive(Debug, Default)]
pub struct ObservationBook {
    events: HashMap<NodeId, Vec<(Instant, PeerEvent)>>,
}

/// The data plane's handle for reporting peer events.
#[derive(Debug, Clone, Default)]
pub struct PeerObserver {
    book: Arc<Mutex<ObservationBook>>,
}

impl PeerObserver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one event about `peer`, now.
    pub fn record(&self, peer: &NodeId, event: PeerEvent) {
        let mut book = self.book.lock().expect("observation book lock poisoned");
        book.events
            .entry(peer.clone())
            .or_default()
            .push((Instant::now(), event));
    }
}
