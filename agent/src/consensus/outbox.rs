//! Raft messages on their way to peers: one ordered queue and one sender task per peer, each
//! message on its own unidirectional stream of the peer's mTLS QUIC connection. A message that
//! cannot be delivered is reported back so raft-rs can probe the peer again (and learn that a
//! snapshot failed); a full queue drops the message, which Raft repairs by retransmission.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::transport::PeerPool;

/// Messages waiting for one peer.
const PEER_QUEUE: usize = 256;
/// How long one delivery may take, dial included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the driver hears back about a delivery that failed.
#[derive(Debug, Clone, Copy)]
pub struct Undelivered {
    pub to: u64,
    pub snapshot: bool,
}

struct Outgoing {
    addr: SocketAddr,
    frame: Vec<u8>,
    snapshot: bool,
}

/// The per-peer queues.
pub struct Outbox {
    pool: Arc<PeerPool>,
    queues: HashMap<u64, mpsc::Sender<Outgoing>>,
    tasks: JoinSet<()>,
    undelivered: mpsc::UnboundedSender<Undelivered>,
}

impl Outbox {
    pub fn new(pool: Arc<PeerPool>) -> (Self, mpsc::UnboundedReceiver<Undelivered>) {
        let (undelivered, reports) = mpsc::unbounded_channel();
        let outbox = Self {
            pool,
            queues: HashMap::new(),
            tasks: JoinSet::new(),
            undelivered,
        };
        (outbox, reports)
    }

    /// Queues one encoded frame for `to` at `addr`; false when it was dropped.
    pub fn send(&mut self, to: u64, addr: SocketAddr, frame: Vec<u8>, snapshot: bool) -> bool {
        let queue = self.queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let pool = self.pool.clone();
            let reports = self.undelivered.clone();
            self.tasks.spawn(deliver(to, rx, pool, reports));
            tx
        });
        queue
            .try_send(Outgoing {
                addr,
                frame,
                snapshot,
            })
            .is_ok()
    }
}

async fn deliver(
    to: u64,
    mut queue: mpsc::Receiver<Outgoing>,
    pool: Arc<PeerPool>,
    reports: mpsc::UnboundedSender<Undelivered>,
) {
    // One stream per peer, kept open: QUIC keeps a stream's bytes in order, so the peer reads
    // messages in the order Raft sent them.
    let mut stream: Option<(SocketAddr, quinn::SendStream)> = None;
    while let Some(outgoing) = queue.recv().await {
        let snapshot = outgoing.snapshot;
        if let Err(reason) = send_one(&pool, &mut stream, outgoing).await {
            stream = None;
            tracing::debug!(to, %reason, "raft message not delivered");
            let _ = reports.send(Undelivered { to, snapshot });
        }
    }
    if let Some((_, mut send)) = stream {
        let _ = send.finish();
    }
}

async fn send_one(
    pool: &PeerPool,
    stream: &mut Option<(SocketAddr, quinn::SendStream)>,
    outgoing: Outgoing,
) -> Result<(), String> {
    if stream
        .as_ref()
        .is_none_or(|(addr, _)| *addr != outgoing.addr)
    {
        let peer = pool
            .connection(outgoing.addr, DELIVERY_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let send = tokio::time::timeout(DELIVERY_TIMEOUT, peer.connection.open_uni())
            .await
            .map_err(|_| "no stream within the delivery timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        *stream = Some((outgoing.addr, send));
    }
    let (_, send) = stream.as_mut().expect("a stream was just opened");
    tokio::time::timeout(DELIVERY_TIMEOUT, send.write_all(&outgoing.frame))
        .await
        .map_err(|_| "not written within the delivery timeout".to_owned())?
        .map_err(|e| e.to_string())
}
