//! Turning chitchat envelopes into bytes and back.
//!
//! chitchat 0.13 keeps its envelope codec private to the crate: the only public way to encode
//! or decode a `ChitchatEnvelope` is its `UdpSocket`. So the codec is a pair of loopback UDP
//! sockets: chitchat's `UdpSocket` on one side, a plain socket on the other.
//!
//! - encode: chitchat's socket sends the envelope to our plain socket, which reads the bytes;
//! - decode: our plain socket sends bytes (that arrived over mTLS) to chitchat's socket, which
//!   parses them.
//!
//! Nothing from the network reaches these sockets except through a verified QUIC connection:
//! they are bound to an ephemeral loopback port, and the decoder drops any datagram that did not
//! come from its own partner socket. Each codec is used by one task at a time (one message in
//! flight), so a reply always belongs to the request before it; a lost datagram (which loopback
//! does not do unless its buffer overflows, and one message never fills it) times out and the
//! pair is rebuilt.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use chitchat::transport::{Socket, UdpSocket as ChitchatUdpSocket};
use chitchat::ChitchatEnvelope;
use tokio::net::UdpSocket;

/// How long one loopback round trip may take before the pair is considered broken.
const ROUND_TRIP: Duration = Duration::from_secs(1);
/// chitchat never builds a message larger than one UDP datagram.
pub const MAX_DATAGRAM: usize = 65_507;

/// One chitchat socket and its plain partner, both on loopback.
pub struct EnvelopeCodec {
    chitchat: Box<dyn Socket>,
    chitchat_addr: SocketAddr,
    plain: UdpSocket,
    plain_addr: SocketAddr,
    buf: Vec<u8>,
    probe: Vec<u8>,
}

impl EnvelopeCodec {
    pub async fn new() -> anyhow::Result<Self> {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let chitchat = ChitchatUdpSocket::open(loopback)
            .await
            .context("binding the chitchat codec socket")?;
        let chitchat_addr = chitchat.local_addr()?;
        let plain = UdpSocket::bind(loopback)
            .await
            .context("binding the codec partner socket")?;
        let plain_addr = plain.local_addr()?;
        let mut codec = Self {
            chitchat: Box::new(chitchat),
            chitchat_addr,
            plain,
            plain_addr,
            buf: vec![0; MAX_DATAGRAM],
            probe: Vec::new(),
        };
        codec.probe = codec.encode_once(bad_cluster()).await?;
        Ok(codec)
    }

    async fn rebuild(&mut self) {
        match Box::pin(Self::new()).await {
            Ok(fresh) => *self = fresh,
            Err(error) => tracing::warn!(%error, "cannot rebuild the gossip codec"),
        }
    }

    /// The bytes of `envelope`, as chitchat encodes it.
    pub async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        let encoded = self.encode_once(envelope).await;
        if encoded.is_err() {
            self.rebuild().await;
        }
        encoded
    }

    async fn encode_once(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        // Drop anything stale (a previous round cut short) so the next read is ours.
        while self.plain.try_recv_from(&mut self.buf).is_ok() {}
        self.chitchat.send(self.plain_addr, envelope).await?;
        loop {
            let received =
                tokio::time::timeout(ROUND_TRIP, self.plain.recv_from(&mut self.buf)).await;
            match received {
                Ok(Ok((len, from))) if from == self.chitchat_addr => {
                    return Ok(self.buf[..len].to_vec());
                }
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => bail!("codec socket failed: {error}"),
                Err(_) => bail!("codec round trip timed out"),
            }
        }
    }

    /// The envelope in `bytes`, or `None` when chitchat cannot parse them.
    pub async fn decode(&mut self, bytes: &[u8]) -> anyhow::Result<Option<ChitchatEnvelope>> {
        // Byte 3 is chitchat's message type. A peer's "bad cluster" answer carries nothing we
        // act on, and it would be mistaken for the probe below, so it is dropped unparsed.
        if bytes.len() > MAX_DATAGRAM || bytes.get(3) == Some(&BAD_CLUSTER_TYPE) {
            return Ok(None);
        }
        self.plain.send_to(bytes, self.chitchat_addr).await?;
        // chitchat's recv loops past datagrams it cannot parse, so a malformed message shows
        // as silence. A probe that always parses follows it: if the probe comes back first,
        // the message was malformed.
        self.plain.send_to(&self.probe, self.chitchat_addr).await?;
        let mut decoded = None;
        for _ in 0..2 {
            let received = tokio::time::timeout(ROUND_TRIP, self.chitchat.recv()).await;
            match received {
                Ok(Ok(outcome)) if outcome.from_addr == self.plain_addr => {
                    if is_probe(&outcome.envelope) {
                        return Ok(decoded);
                    }
                    decoded = Some(outcome.envelope);
                }
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => {
                    self.rebuild().await;
                    bail!("codec socket failed: {error}");
                }
                Err(_) => {
                    self.rebuild().await;
                    bail!("codec round trip timed out");
                }
            }
        }
        // Two envelopes and no probe: the pair is out of step; start over.
        self.rebuild().await;
        bail!("codec out of step")
    }
}

/// chitchat's wire code for its `BadCluster` message type.
const BAD_CLUSTER_TYPE: u8 = 3;

/// The probe: chitchat's smallest valid envelope, which carries no information.
fn bad_cluster() -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: chitchat::ProtocolVersion::V0,
        message: chitchat::ChitchatMessage::BadCluster,
    }
}

fn is_probe(envelope: &ChitchatEnvelope) -> bool {
    matches!(envelope.message, chitchat::ChitchatMessage::BadCluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_is_chitchats_bad_cluster_message() {
        let codec = EnvelopeCodec::new().await.unwrap();
        assert_eq!(codec.probe.len(), 4);
        assert_eq!(codec.probe[3], BAD_CLUSTER_TYPE);
    }

    #[tokio::test]
    async fn garbage_decodes_to_none_and_the_codec_keeps_working() {
        let mut codec = EnvelopeCodec::new().await.unwrap();
        assert!(codec
            .decode(b"not chitchat at all")
            .await
            .unwrap()
            .is_none());
        assert!(codec.decode(&[]).await.unwrap().is_none());
        let probe = codec.probe.clone();
        assert!(codec.decode(&probe).await.unwrap().is_none());
        let mut v1 = probe.clone();
        v1[2] = 1;
        v1.extend_from_slice(b"trailing");
        assert!(codec.decode(&v1).await.unwrap().is_none());
        // Still in step: a real envelope round-trips.
        let syn = ChitchatEnvelope {
            version: chitchat::ProtocolVersion::V1,
            message: chitchat::ChitchatMessage::Syn {
                cluster_id: "example.org".into(),
                digest: Default::default(),
            },
        };
        let bytes = codec.encode(syn).await.unwrap();
        let decoded = codec.decode(&bytes).await.unwrap().unwrap();
        assert!(matches!(
            decoded.message,
            chitchat::ChitchatMessage::Syn { ref cluster_id, .. } if cluster_id == "example.org"
        ));
    }
}
