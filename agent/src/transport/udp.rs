//! The endpoint's UDP socket, watched by the runtime for reading only.
//!
//! quinn's stock tokio socket registers for reading and writing. A UDP socket turns writable
//! again after every datagram it sends (on loopback the moment the kernel frees it), so each
//! send wakes whichever worker thread sleeps in the runtime's poller, for nothing: at a
//! thousand requests a second that was a context switch or two per request on each agent,
//! and the latency that comes with them. This socket is registered for reading only. A send
//! that would block (the send buffer is full, which is rare) sets a flag; only then does the
//! poller register a duplicate of the socket for writing, wait until it is writable, and drop
//! that registration again.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A UDP socket for quinn, registered with the runtime for reading only.
pub struct ReadRegisteredSocket {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// A send found the socket's buffer full: the next `poll_writable` waits for room.
    blocked: AtomicBool,
}

impl ReadRegisteredSocket {
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self {
            io: register(socket, Interest::READABLE)?,
            state,
            blocked: AtomicBool::new(false),
        })
    }
}

impl fmt::Debug for ReadRegisteredSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadRegisteredSocket")
            .field("local", &self.io.get_ref().local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for ReadRegisteredSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            waiting: None,
            retry: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let result = self.state.send(self.io.get_ref().into(), transmit);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.blocked.store(true, Ordering::Release);
        }
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.io.poll_read_ready(cx))?;
            match self.state.recv(self.io.get_ref().into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                result => return Poll::Ready(result),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// Registers `fd` with the runtime for `interest`. tokio deprecates this safe form because a
/// type could hand out a different descriptor over time; both types used here (a std socket
/// and an `OwnedFd`) own theirs for their whole life, so it holds, and the crate stays free of
/// `unsafe`.
#[allow(deprecated)]
fn register<T: std::os::fd::AsRawFd>(fd: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(fd, interest)
}

/// Tells quinn when the socket can take another datagram. Without a blocked send it always
/// can; after one, a duplicate of the socket is registered for writing until it has room.
struct WritablePoller {
    socket: Arc<ReadRegisteredSocket>,
    waiting: Option<AsyncFd<OwnedFd>>,
    /// When no registration could be made: when to try sending again.
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for WritablePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritablePoller")
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl UdpPoller for WritablePoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.socket.blocked.load(Ordering::Acquire) {
            this.waiting = None;
            return Poll::Ready(Ok(()));
        }
        if this.waiting.is_none() {
            let registered = this
                .socket
                .io
                .get_ref()
                .try_clone()
                .and_then(|duplicate| register(OwnedFd::from(duplicate), Interest::WRITABLE));
            match registered {
                Ok(waiting) => this.waiting = Some(waiting),
                Err(error) => {
                    // Out of descriptors, say: a full buffer must not fail the connection, so
                    // try again shortly instead.
                    tracing::debug!(%error, "cannot watch the UDP socket for room; retrying in 1 ms");
                    let retry = this.retry.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(1)))
                    });
                    ready!(retry.as_mut().poll(cx));
                    this.retry = None;
                    this.socket.blocked.store(false, Ordering::Release);
                    return Poll::Ready(Ok(()));
                }
            }
        }
        let waiting = this.waiting.as_ref().expect("registered above");
        let mut guard = ready!(waiting.poll_write_ready(cx))?;
        // Writable: let quinn try again (a send that blocks once more sets the flag again).
        guard.clear_ready();
        this.socket.blocked.store(false, Ordering::Release);
        this.waiting = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit<'a>(to: SocketAddr, contents: &'a [u8]) -> Transmit<'a> {
        Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        }
    }

    #[tokio::test]
    async fn datagrams_go_both_ways() {
        let a = Arc::new(
            ReadRegisteredSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
        );
        let b = Arc::new(
            ReadRegisteredSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
        );
        let to = b.local_addr().unwrap();
        a.try_send(&transmit(to, b"hello")).unwrap();
        let mut buf = [0u8; 1500];
        let mut meta = [RecvMeta::default()];
        let n = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            b.poll_recv(cx, &mut bufs, &mut meta)
        });
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), n)
            .await
            .expect("a datagram arrives")
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(&buf[..meta[0].len], b"hello");
        assert_eq!(meta[0].addr, a.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_full_send_buffer_is_waited_out_not_spun_on() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let a = Arc::new(ReadRegisteredSocket::new(socket).unwrap());
        let mut poller = a.clone().create_io_poller();
        // Nothing blocked yet: writable at once.
        let ready = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx));
        ready.await.unwrap();
        // Pretend a send found the buffer full: the poller waits for the kernel to say
        // writable (at once here, the buffer is empty) and clears the flag.
        a.blocked.store(true, Ordering::Release);
        let ready = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx));
        tokio::time::timeout(std::time::Duration::from_secs(5), ready)
            .await
            .expect("writable")
            .unwrap();
        assert!(!a.blocked.load(Ordering::Acquire));
        a.try_send(&transmit(to, b"after")).unwrap();
    }
}
