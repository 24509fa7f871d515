//! chitchat's `Transport` over the agent's QUIC endpoint: one unidirectional stream per gossip
//! message, on the same mTLS connections the proxy uses. There is no gossip port.
//!
//! ```text
//!  chitchat ─send─▶ QuicSocket ─encode─▶ outbound queue ─▶ deliver task ─▶ PeerPool ─uni stream─▶ peer
//!  peer ─uni stream─▶ accept loop ─▶ GossipInbox (sender == certificate?) ─▶ decode task ─▶ QuicSocket::recv ─▶ chitchat
//! ```
//!
//! Sending never waits for the network: a message for a slow or dead peer must not hold up the
//! gossip round. Delivery runs in bounded background tasks; when they are all busy, or a queue
//! is full, the message is dropped and counted (gossip repairs losses on its next round).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{
    FrameError, FrameHeader, FrameType, GossipLeave, GossipMessage, NodeId, RaftEnvelope,
    FRAME_HEADER_LEN,
};
use quinn::RecvStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::codec::EnvelopeCodec;
use crate::telemetry::{names, Telemetry};
use crate::transport::PeerPool;

/// Messages waiting to be handed to a delivery task.
const OUTBOUND_QUEUE: usize = 256;
/// Messages received and waiting to be decoded or processed by chitchat.
const INBOUND_QUEUE: usize = 256;
/// Deliveries in progress at once (each may be dialing a peer).
const DELIVERIES: usize = 32;
/// How long a peer has to send a whole gossip frame once it opened the stream.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A gossip frame on its way to a peer.
#[derive(Debug)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub frame: Vec<u8>,
}

/// What the transport's background tasks need; built by [`wire`].
pub struct Wire {
    pub transport: QuicTransport,
    pub inbox: GossipInbox,
    pub outbound: mpsc::Receiver<Outgoing>,
    pub raw: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    pub decoded: mpsc::Sender<RecvOutcome>,
    pub leaves: mpsc::UnboundedReceiver<(NodeId, u64)>,
}

/// Builds the transport and its channels. `local` is the address chitchat believes it has.
pub async fn wire(
    local: SocketAddr,
    sender: NodeId,
    generation: u64,
    telemetry: Telemetry,
) -> anyhow::Result<Wire> {
    let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
    let (raw_tx, raw) = mpsc::channel(INBOUND_QUEUE);
    let (decoded, decoded_rx) = mpsc::channel(INBOUND_QUEUE);
    let (leaves_tx, leaves) = mpsc::unbounded_channel();
    let socket = QuicSocket {
        local,
        sender,
        generation,
        encoder: EnvelopeCodec::new().await?,
        outbound: outbound_tx,
        decoded: decoded_rx,
        telemetry: telemetry.clone(),
    };
    Ok(Wire {
        transport: QuicTransport {
            socket: std::sync::Mutex::new(Some(socket)),
        },
        inbox: GossipInbox {
            raw: raw_tx,
            leaves: leaves_tx,
            raft: None,
            observer: None,
            telemetry,
        },
        outbound,
        raw,
        decoded,
        leaves,
    })
}

/// Hands chitchat its one socket.
pub struct QuicTransport {
    socket: std::sync::Mutex<Option<QuicSocket>>,
}

#[async_trait]
impl Transport for QuicTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| anyhow!("gossip transport lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow!("the gossip transport opens one socket only"))?;
        Ok(Box::new(socket))
    }
}

struct QuicSocket {
    local: SocketAddr,
    sender: NodeId,
    generation: u64,
    encoder: EnvelopeCodec,
    outbound: mpsc::Sender<Outgoing>,
    decoded: mpsc::Receiver<RecvOutcome>,
    telemetry: Telemetry,
}

#[async_trait]
impl Socket for QuicSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let chitchat = self.encoder.encode(envelope).await?;
        let frame = GossipMessage {
            sender: self.sender.clone(),
            generation: self.generation,
            chitchat,
        }
        .to_frame_bytes();
        let num_bytes_sent = frame.len();
        match self.outbound.try_send(Outgoing { to, frame }) {
            Ok(()) => Ok(SendOutcome { num_bytes_sent }),
            Err(mpsc::error::TrySendError::Full(_)) => {
                rejected(&self.telemetry, "send_queue_full");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(anyhow!("gossip delivery stopped")),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.decoded
            .recv()
            .await
            .ok_or_else(|| anyhow!("gossip inbox closed"))
    }
}

fn rejected(telemetry: &Telemetry, reason: &str) {
    telemetry
        .counter(names::GOSSIP_REJECTED, &[("reason", reason)])
        .increment(1);
}

fn traffic(telemetry: &Telemetry, direction: &'static str, bytes: usize) {
    telemetry
        .counter(names::GOSSIP_BYTES, &[("direction", direction)])
        .increment(bytes as u64);
    telemetry
        .counter(names::GOSSIP_MESSAGES, &[("direction", direction)])
        .increment(1);
}

/// Delivers queued frames to peers, each on its own unidirectional stream.
pub async fn deliver(
    mut outbound: mpsc::Receiver<Outgoing>,
    pool: Arc<PeerPool>,
    telemetry: Telemetry,
    dial_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(DELIVERIES));
    let mut deliveries = JoinSet::new();
    while let Some(outgoing) = outbound.recv().await {
        while deliveries.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            rejected(&telemetry, "deliveries_busy");
            continue;
        };
        let pool = pool.clone();
        let telemetry = telemetry.clone();
        deliveries.spawn(async move {
            let _slot = slot;
            let to = outgoing.to;
            let len = outgoing.frame.len();
            match send_frame(&pool, outgoing, dial_timeout).await {
                Ok(()) => traffic(&telemetry, "out", len),
                Err(reason) => {
                    tracing::debug!(peer = %to, %reason, "gossip message not delivered");
                    rejected(&telemetry, "undelivered");
                }
            }
        });
    }
}

async fn send_frame(pool: &PeerPool, outgoing: Outgoing, timeout: Duration) -> Result<(), String> {
    crate::transport::send_uni(pool, outgoing.to, &outgoing.frame, timeout).await
}

/// Decodes received chitchat bytes, one message at a time, and hands them to chitchat.
pub async fn decode(
    mut raw: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    decoded: mpsc::Sender<RecvOutcome>,
    telemetry: Telemetry,
) {
    let mut codec = match EnvelopeCodec::new().await {
        Ok(codec) => codec,
        Err(error) => {
            tracing::error!(%error, "gossip decoder cannot start; gossip input is dropped");
            return;
        }
    };
    while let Some((from, bytes)) = raw.recv().await {
        match codec.decode(&bytes).await {
            Ok(Some(envelope)) => {
                let outcome = RecvOutcome {
                    from_addr: from,
                    envelope,
                    num_bytes_received: bytes.len(),
                };
                if decoded.send(outcome).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::warn!(peer = %from, len = bytes.len(), "malformed gossip message dropped");
                rejected(&telemetry, "malformed");
            }
            Err(error) => {
                tracing::warn!(peer = %from, %error, "gossip message could not be decoded");
                rejected(&telemetry, "codec_error");
            }
        }
    }
}

/// Where the accept loop hands unidirectional streams from verified peers.
#[derive(Clone)]
pub struct GossipInbox {
    raw: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    leaves: mpsc::UnboundedSender<(NodeId, u64)>,
    raft: Option<crate::consensus::RaftInbox>,
    /// Malformed frames and forged senders are protocol violations quarantine hears about.
    observer: Option<crate::quarantine::PeerObserver>,
    telemetry: Telemetry,
}

impl GossipInbox {
    /// Reports peers that send malformed frames or claim another node's identity.
    pub fn with_observer(mut self, observer: crate::quarantine::PeerObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    fn violation(&self, peer: &NodeId) {
        if let Some(observer) = &self.observer {
            observer.record(peer, crate::quarantine::PeerEvent::ProtocolViolation);
        }
    }

    /// Also hands Raft messages (the other kind of unidirectional stream) to the decision log.
    pub fn with_raft(mut self, raft: crate::consensus::RaftInbox) -> Self {
        self.raft = Some(raft);
        self
    }

    /// Reads one gossip frame from a stream that `peer` (the node ID of its verified
    /// certificate, connected from `remote`) opened. Bad input is dropped and counted.
    pub async fn accept_stream(&self, peer: &NodeId, remote: SocketAddr, mut recv: RecvStream) {
        let read = tokio::time::timeout(READ_TIMEOUT, read_frame(&mut recv)).await;
        let (frame_type, payload) = match read {
            Ok(Ok(frame)) => frame,
            Ok(Err(reason)) => {
                tracing::warn!(%peer, %remote, %reason, "bad gossip frame dropped");
                rejected(&self.telemetry, reason.label());
                if matches!(reason, FrameReadError::Frame(_)) {
                    self.violation(peer);
                }
                let _ = recv.stop(0u32.into());
                return;
            }
            Err(_) => {
                rejected(&self.telemetry, "read_timeout");
                let _ = recv.stop(0u32.into());
                return;
            }
        };
        traffic(&self.telemetry, "in", FRAME_HEADER_LEN + payload.len());
        match frame_type {
            FrameType::Gossip => match GossipMessage::from_payload(&payload) {
                Ok(message) if message.sender != *peer => {
                    tracing::warn!(%peer, claimed = %message.sender, %remote,
                        "gossip from a peer claiming another node's identity; dropped");
                    rejected(&self.telemetry, "node_id_mismatch");
                    self.violation(peer);
                }
                Ok(message) => {
                    if self.raw.try_send((remote, message.chitchat)).is_err() {
                        rejected(&self.telemetry, "inbox_full");
                    }
                }
                Err(error) => {
                    tracing::warn!(%peer, %remote, %error, "malformed gossip frame dropped");
                    rejected(&self.telemetry, "malformed");
                    self.violation(peer);
                }
            },
            FrameType::GossipLeave => match GossipLeave::from_payload(&payload) {
                Ok(leave) => {
                    tracing::info!(%peer, generation = leave.generation, "peer is leaving");
                    let _ = self.leaves.send((peer.clone(), leave.generation));
                }
                Err(_) => {
                    rejected(&self.telemetry, "malformed");
                    self.violation(peer);
                }
            },
            FrameType::Raft => self.raft_stream(peer, remote, recv, payload).await,
            _ => {
                rejected(&self.telemetry, "unexpected_frame");
                self.violation(peer);
            }
        }
    }
}

impl GossipInbox {
    /// A peer's Raft messages arrive in order on one long-lived stream (separate streams
    /// would be read concurrently, and a commit overtaking its entry costs a heartbeat).
    /// Between messages the stream may idle as long as the peer keeps it; once a frame's
    /// header has arrived, the rest must follow within the read timeout.
    async fn raft_stream(
        &self,
        peer: &NodeId,
        remote: SocketAddr,
        mut recv: RecvStream,
        mut payload: Vec<u8>,
    ) {
        loop {
            match (RaftEnvelope::from_payload(&payload), &self.raft) {
                (Ok(envelope), Some(raft)) => {
                    if let Err(reason) = raft.deliver(peer, envelope) {
                        tracing::debug!(%peer, reason, "raft message dropped");
                        raft_dropped(&self.telemetry, reason);
                    }
                }
                (Ok(_), None) => raft_dropped(&self.telemetry, "no_consensus"),
                (Err(error), _) => {
                    tracing::warn!(%peer, %remote, %error, "malformed raft message; stream dropped");
                    raft_dropped(&self.telemetry, "malformed");
                    self.violation(peer);
                    let _ = recv.stop(0u32.into());
                    return;
                }
            }
            let mut header = [0u8; FRAME_HEADER_LEN];
            if recv.read_exact(&mut header).await.is_err() {
                return;
            }
            let next = tokio::time::timeout(READ_TIMEOUT, read_payload(&mut recv, &header)).await;
            match next {
                Ok(Ok((FrameType::Raft, next))) => payload = next,
                _ => {
                    raft_dropped(&self.telemetry, "bad_frame");
                    let _ = recv.stop(0u32.into());
                    return;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FrameReadError {
    #[error("stream failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl FrameReadError {
    fn label(&self) -> &'static str {
        match self {
            Self::Read(_) => "truncated",
            Self::Frame(FrameError::Oversized { .. }) => "oversized",
            Self::Frame(_) => "malformed",
        }
    }
}

/// Reads one gossip or leave frame, refusing an oversized one from its header alone.
async fn read_frame(recv: &mut RecvStream) -> Result<(FrameType, Vec<u8>), FrameReadError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await?;
    read_payload(recv, &header).await
}

/// Reads the payload of the frame whose header is `header`, refusing an oversized one first.
async fn read_payload(
    recv: &mut RecvStream,
    header: &[u8; FRAME_HEADER_LEN],
) -> Result<(FrameType, Vec<u8>), FrameReadError> {
    let header = FrameHeader::decode(header)?;
    let max = match header.frame_type {
        FrameType::Gossip => GossipMessage::MAX_PAYLOAD,
        FrameType::GossipLeave => GossipLeave::MAX_PAYLOAD,
        FrameType::Raft => RaftEnvelope::MAX_PAYLOAD,
        other => {
            return Err(FrameError::UnexpectedType {
                expected: FrameType::Gossip,
                found: other,
            }
            .into())
        }
    };
    if header.payload_len > max {
        return Err(FrameError::Oversized {
            len: header.payload_len,
            max,
        }
        .into());
    }
    let mut payload = vec![0u8; header.payload_len];
    recv.read_exact(&mut payload).await?;
    Ok((header.frame_type, payload))
}

fn raft_dropped(telemetry: &Telemetry, reason: &'static str) {
    telemetry
        .counter(names::RAFT_MESSAGES_DROPPED, &[("reason", reason)])
        .increment(1);
}
