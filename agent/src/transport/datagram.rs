//! Counting UDP datagrams that are not QUIC at all.
//!
//! quinn drops undecodable datagrams silently. To make a plain UDP sender visible, the agent's
//! socket is wrapped: every received datagram is classified by [`looks_like_quic`] before quinn
//! sees it, and the ones that cannot be QUIC v1 are counted as refused handshakes with reason
//! `not_quic`. quinn still receives and drops them; nothing is altered on the way.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use metrics::Counter;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

const QUIC_V1: u32 = 1;
/// Short-header packets carry our 8-byte connection ID and a header-protection sample.
const MIN_SHORT_HEADER_LEN: usize = 1 + 8 + 4 + 16;
/// RFC 9000 §14.1: datagrams carrying a client Initial are at least 1200 bytes.
const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Whether `datagram` could be a QUIC v1 packet (a cheap shape check, not a parse).
pub fn looks_like_quic(datagram: &[u8]) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    if first & 0x40 == 0 {
        return false; // the fixed bit is always set in QUIC v1
    }
    if first & 0x80 == 0 {
        return datagram.len() >= MIN_SHORT_HEADER_LEN;
    }
    let Some(version) = datagram.get(1..5) else {
        return false;
    };
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    let is_initial = (first & 0x30) == 0;
    version == QUIC_V1 && (!is_initial || datagram.len() >= MIN_INITIAL_DATAGRAM)
}

/// A UDP socket that counts non-QUIC datagrams and otherwise passes everything through.
pub struct CountingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    not_quic: Counter,
}

impl CountingSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, not_quic: Counter) -> Self {
        Self { inner, not_quic }
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
                    if !looks_like_quic(datagram) {
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

    #[test]
    fn plain_text_and_junk_are_not_quic() {
        assert!(!looks_like_quic(b""));
        assert!(!looks_like_quic(b"hello plexus"));
        assert!(!looks_like_quic(&[0u8; 1500]));
        let mut wrong_version = vec![0xc0, 0xde, 0xad, 0xbe, 0xef];
        wrong_version.resize(1300, 0);
        assert!(!looks_like_quic(&wrong_version));
        let mut no_fixed_bit = vec![0x80, 0, 0, 0, 1];
        no_fixed_bit.resize(1300, 0);
        assert!(!looks_like_quic(&no_fixed_bit));
    }

    #[test]
    fn quic_shapes_pass() {
        let mut initial = vec![0xc0, 0, 0, 0, 1];
        initial.resize(1200, 0);
        assert!(looks_like_quic(&initial));
        let mut handshake = vec![0xe0, 0, 0, 0, 1];
        handshake.resize(100, 0);
        assert!(looks_like_quic(&handshake));
        assert!(looks_like_quic(&[0x40; 40]));
    }
}
