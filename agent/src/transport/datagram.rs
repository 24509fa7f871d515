//! Counting UDP datagrams that are not QUIC at all.
//!
//! quinn drops undecodable datagrams silently. To make a plain UDP sender visible, the agent's
//! socket is wrapped: every received datagram is classified by a [`QuicShape`] before quinn sees
//! it, and the ones that cannot be QUIC v1 for this endpoint are counted as refused handshakes
//! with reason `not_quic`. quinn still receives and drops them; nothing is altered on the way.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use metrics::Counter;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use quinn_proto::HashedConnectionIdGenerator;

const QUIC_V1: u32 = 1;
/// Version negotiation packets carry version 0 and may have any fixed bit.
const VERSION_NEGOTIATION: u32 = 0;
/// Length of the connection IDs this endpoint issues (quinn's hashed generator).
pub const LOCAL_CID_LEN: usize = 8;
/// Short-header packets carry our connection ID and a header-protection sample.
const MIN_SHORT_HEADER_LEN: usize = 1 + LOCAL_CID_LEN + 4 + 16;

/// Tells datagrams that could be QUIC v1 for this endpoint from everything else.
///
/// The endpoint issues keyed connection IDs (quinn's [`HashedConnectionIdGenerator`]), so a
/// short-header packet must carry one that validates under the same key; long-header packets
/// must name QUIC v1 and keep the fixed bit. This is a cheap shape check, not cryptography:
/// it relies on the fixed bit, so endpoints must not grease it (RFC 9287), see
/// [`super::bind_endpoint`].
pub struct QuicShape {
    cids: HashedConnectionIdGenerator,
}

impl QuicShape {
    /// A checker for connection IDs made by `HashedConnectionIdGenerator::from_key(key)`.
    pub fn new(key: u64) -> Self {
        Self {
            cids: HashedConnectionIdGenerator::from_key(key),
        }
    }

    /// Whether `datagram` could be a QUIC v1 packet for this endpoint.
    pub fn accepts(&self, datagram: &[u8]) -> bool {
        let Some(&first) = datagram.first() else {
            return false;
        };
        if first & 0x80 == 0 {
            return first & 0x40 != 0
                && datagram.len() >= MIN_SHORT_HEADER_LEN
                && self
                    .cids
                    .validate(&ConnectionId::new(&datagram[1..=LOCAL_CID_LEN]))
                    .is_ok();
        }
        let Some(version) = datagram.get(1..5) else {
            return false;
        };
        let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
        version == VERSION_NEGOTIATION || (version == QUIC_V1 && first & 0x40 != 0)
    }
}

/// A UDP socket that counts non-QUIC datagrams and otherwise passes everything through.
pub struct CountingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    shape: QuicShape,
    not_quic: Counter,
}

impl CountingSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, shape: QuicShape, not_quic: Counter) -> Self {
        Self {
            inner,
            shape,
            not_quic,
        }
    }
}

impl fmt::Debug for CountingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSocket")
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncUdpSocket for CountingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(count)) = &result {
            for (buf, meta) in bufs.iter().zip(meta.iter()).take(*count) {
                let received = &buf[..meta.len.min(buf.len())];
                for datagram in received.chunks(meta.stride.max(1)) {
                    if !self.shape.accepts(datagram) {
                        self.not_quic.increment(1);
                    }
                }
            }
        }
        result
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: u64 = 0x5eed;

    fn short_header_with_our_cid() -> Vec<u8> {
        let cid = HashedConnectionIdGenerator::from_key(KEY).generate_cid();
        let mut packet = vec![0x41];
        packet.extend_from_slice(&cid);
        packet.resize(60, 0xaa);
        packet
    }

    #[test]
    fn plain_text_and_junk_are_not_quic() {
        let shape = QuicShape::new(KEY);
        assert!(!shape.accepts(b""));
        assert!(!shape.accepts(b"hello plexus"));
        assert!(!shape.accepts(b"GET /healthz HTTP/1.1\r\nHost: plexus.example\r\n\r\n"));
        assert!(!shape.accepts(&[0u8; 1500]));
        assert!(
            !shape.accepts(&[0x40; 40]),
            "a short header whose CID is not ours"
        );
        let mut wrong_version = vec![0xc0, 0xde, 0xad, 0xbe, 0xef];
        wrong_version.resize(1300, 0);
        assert!(!shape.accepts(&wrong_version));
        let mut no_fixed_bit = vec![0x80, 0, 0, 0, 1];
        no_fixed_bit.resize(1300, 0);
        assert!(!shape.accepts(&no_fixed_bit));
        assert!(
            !QuicShape::new(KEY + 1).accepts(&short_header_with_our_cid()),
            "other key"
        );
    }

    #[test]
    fn quic_shapes_pass() {
        let shape = QuicShape::new(KEY);
        let mut initial = vec![0xc0, 0, 0, 0, 1];
        initial.resize(1200, 0);
        assert!(shape.accepts(&initial));
        let mut handshake = vec![0xe0, 0, 0, 0, 1];
        handshake.resize(100, 0);
        assert!(shape.accepts(&handshake));
        assert!(shape.accepts(&short_header_with_our_cid()));
    }
}
