//! The two-way byte pump between a TCP socket and a QUIC bidirectional stream.

use metrics::Counter;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::telemetry::{names, Telemetry};

const CHUNK: usize = 64 * 1024;
/// Application error code sent when a stream is reset because its other side failed.
pub const RESET_CODE: u32 = 1;

/// Bytes counted per direction.
pub struct SpliceCounters {
    /// Bytes read from the TCP socket and sent on the stream.
    pub tcp_to_stream: Counter,
    /// Bytes received on the stream and written to the TCP socket.
    pub stream_to_tcp: Counter,
}

impl SpliceCounters {
    /// Byte counters of `service` for one proxy `direction` (`inbound` or `outbound`).
    pub fn new(telemetry: &Telemetry, service: &str, direction: &'static str) -> Self {
        let flow = |flow| {
            telemetry.counter(
                names::BYTES,
                &[
                    ("service", service),
                    ("direction", direction),
                    ("flow", flow),
                ],
            )
        };
        Self {
            tcp_to_stream: flow("sent"),
            stream_to_tcp: flow("received"),
        }
    }
}

/// Why a splice ended early.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("local socket: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("stream send: {0}")]
    Send(#[from] quinn::WriteError),
    #[error("stream receive: {0}")]
    Recv(#[from] quinn::ReadError),
    #[error("stream already closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

/// The two ends of a splice, and which directions ended cleanly.
///
/// Dropping it resets every direction that did not end cleanly: on an error, and also when the
/// task running the splice is aborted (agent shutdown, a lost peer connection). Without this, a
/// dropped `SendStream` would *finish* (quinn's drop is graceful) and a dropped `TcpStream`
/// would send FIN, so a cut-off transfer would look complete to the other side.
struct Ends {
    tcp: TcpStream,
    send: SendStream,
    recv: RecvStream,
    /// The app's bytes all went out and the stream was finished (or the peer said it wants no
    /// more of them).
    sent_all: bool,
    /// The service's bytes all reached the app, followed by FIN.
    received_all: bool,
}

impl Drop for Ends {
    fn drop(&mut self) {
        if !self.sent_all {
            let _ = self.send.reset(RESET_CODE.into());
        }
        if !self.received_all {
            let _ = self.recv.stop(RESET_CODE.into());
            abort(&self.tcp);
        }
    }
}

/// Pumps bytes both ways until both directions have ended.
///
/// End of input on one side becomes a half-close on the other: TCP EOF finishes the QUIC send
/// stream, QUIC stream end shuts down TCP writes. If the serving side stops reading (QUIC
/// STOP_SENDING), the upward direction ends and the downward one carries on. If either side
/// fails, whatever did not complete is torn down abortively: the QUIC stream is reset or
/// stopped, and the TCP socket is closed with RST, so apps see failures as failures.
pub async fn splice(
    tcp: TcpStream,
    send: SendStream,
    recv: RecvStream,
    counters: &SpliceCounters,
) -> Result<(), SpliceError> {
    let mut ends = Ends {
        tcp,
        send,
        recv,
        sent_all: false,
        received_all: false,
    };
    let Ends {
        tcp,
        send,
        recv,
        sent_all,
        received_all,
    } = &mut ends;
    let (mut tcp_read, mut tcp_write) = tcp.split();
    let upward = async {
        // One buffer reused for every read; quinn copies just the bytes read into its own
        // send buffer, so a 1 KiB message costs 1 KiB there, not a fresh 64 KiB allocation.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tcp_read.read(&mut buf).await?;
            if n == 0 {
                send.finish()?;
                *sent_all = true;
                return Ok::<_, SpliceError>(());
            }
            counters.tcp_to_stream.increment(n as u64);
            match send.write_all(&buf[..n]).await {
                Ok(()) => {}
                Err(quinn::WriteError::Stopped(_)) => {
                    // The other side wants no more of the app's bytes; its answer may still
                    // be on its way down, so only this direction ends.
                    *sent_all = true;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let downward = async {
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await? {
            counters.stream_to_tcp.increment(chunk.bytes.len() as u64);
            tcp_write.write_all(&chunk.bytes).await?;
        }
        tcp_write.shutdown().await?;
        *received_all = true;
        Ok::<_, SpliceError>(())
    };
    tokio::try_join!(upward, downward).map(|_| ())
    // `ends` drops here and tears down whatever did not complete.
}

/// Closes a TCP socket with RST instead of FIN when it is dropped.
pub fn abort(tcp: &TcpStream) {
    if let Err(e) = tcp.set_zero_linger() {
        tracing::debug!(error = %e, "could not set SO_LINGER 0");
    }
}
