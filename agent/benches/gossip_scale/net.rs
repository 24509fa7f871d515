//! Transport metering: chitchat's `ChannelTransport` wrapped to count and size every message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage};

pub(crate) const MTU: usize = 65_507;

#[derive(Default)]
pub(crate) struct Meter {
    syn_sent: AtomicU64,
    received: AtomicU64,
    mtu_refused: AtomicU64,
    pub(crate) max_syn: AtomicUsize,
    pub(crate) max_syn_ack: AtomicUsize,
    pub(crate) max_ack: AtomicUsize,
}

impl Meter {
    pub(crate) fn reset_max(&self) {
        self.max_syn.store(0, Ordering::Relaxed);
        self.max_syn_ack.store(0, Ordering::Relaxed);
        self.max_ack.store(0, Ordering::Relaxed);
    }
}

/// `ChannelTransport` plus a per-socket wrapper that records message kinds and sizes.
#[derive(Clone)]
pub(crate) struct Net {
    channel: ChannelTransport,
    pub(crate) meter: Arc<Meter>,
}

impl Net {
    pub(crate) fn new() -> Self {
        Self {
            channel: ChannelTransport::with_mtu(MTU),
            meter: Arc::default(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let stats = self.channel.statistics();
        Snapshot {
            bytes: stats.num_bytes_total,
            messages: stats.num_messages_total,
            syn: self.meter.syn_sent.load(Ordering::Relaxed),
            received: self.meter.received.load(Ordering::Relaxed),
            mtu_refused: self.meter.mtu_refused.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Transport for Net {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.channel.open(listen_addr).await?;
        Ok(Box::new(MeteredSocket {
            inner,
            meter: self.meter.clone(),
        }))
    }
}

struct MeteredSocket {
    inner: Box<dyn Socket>,
    meter: Arc<Meter>,
}

#[async_trait]
impl Socket for MeteredSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let max = match envelope.message {
            ChitchatMessage::Syn { .. } => Some(&self.meter.max_syn),
            ChitchatMessage::SynAck { .. } => Some(&self.meter.max_syn_ack),
            ChitchatMessage::Ack { .. } => Some(&self.meter.max_ack),
            ChitchatMessage::BadCluster => None,
        };
        let is_syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        match self.inner.send(to, envelope).await {
            Ok(outcome) => {
                if let Some(max) = max {
                    max.fetch_max(outcome.num_bytes_sent, Ordering::Relaxed);
                }
                if is_syn {
                    self.meter.syn_sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(outcome)
            }
            Err(error) => {
                self.meter.mtu_refused.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        self.meter.received.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub(crate) bytes: u64,
    pub(crate) messages: u64,
    pub(crate) syn: u64,
    pub(crate) received: u64,
    pub(crate) mtu_refused: u64,
}

impl Snapshot {
    pub(crate) fn add(self, other: Snapshot) -> Snapshot {
        Snapshot {
            bytes: self.bytes + other.bytes,
            messages: self.messages + other.messages,
            syn: self.syn + other.syn,
            received: self.received + other.received,
            mtu_refused: self.mtu_refused + other.mtu_refused,
        }
    }

    pub(crate) fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            bytes: self.bytes - before.bytes,
            messages: self.messages - before.messages,
            syn: self.syn - before.syn,
            received: self.received - before.received,
            mtu_refused: self.mtu_refused - before.mtu_refused,
        }
    }
}
