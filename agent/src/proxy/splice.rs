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

/// Pumps bytes both ways until both directions have ended.
///
/// End of input on one side becomes a half-close on the other: TCP EOF finishes the QUIC send
/// stream, QUIC stream end shuts down TCP writes. If either side fails, the other is torn down
/// abortively: the QUIC stream is reset and stopped, and the TCP socket is closed with RST.
pub async fn splice(
    mut tcp: TcpStream,
    mut send: SendStream,
    mut recv: RecvStream,
    counters: &SpliceCounters,
) -> Result<(), SpliceError> {
    let (mut tcp_read, mut tcp_write) = tcp.split();
    // Which directions ended cleanly: a failure of one must not destroy the other's data.
    let (mut sent_all, mut received_all) = (false, false);
    let upward = async {
        // One buffer reused for every read; quinn copies just the bytes read into its own
        // send buffer, so a 1 KiB message costs 1 KiB there, not a fresh 64 KiB allocation.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tcp_read.read(&mut buf).await?;
            if n == 0 {
                send.finish()?;
                sent_all = true;
                return Ok::<_, SpliceError>(());
            }
            counters.tcp_to_stream.increment(n as u64);
            send.write_all(&buf[..n]).await?;
        }
    };
    let downward = async {
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await? {
            counters.stream_to_tcp.increment(chunk.bytes.len() as u64);
            tcp_write.write_all(&chunk.bytes).await?;
        }
        tcp_write.shutdown().await?;
        received_all = true;
        Ok::<_, SpliceError>(())
    };
    let result = tokio::try_join!(upward, downward).map(|_| ());
    if result.is_err() {
        // A finished send stream keeps delivering its buffered bytes: reset it only if the
        // app's bytes were cut short. Likewise the app's socket is reset (RST, which discards
        // unsent data) only if the service's bytes did not all reach it.
        if !sent_all {
            let _ = send.reset(RESET_CODE.into());
        }
        if !received_all {
            let _ = recv.stop(RESET_CODE.into());
            abort(&tcp);
        }
    }
    result
}

/// Closes a TCP socket with RST instead of FIN when it is dropped.
pub fn abort(tcp: &TcpStream) {
    if let Err(e) = tcp.set_zero_linger() {
        tracing::debug!(error = %e, "could not set SO_LINGER 0");
    }
}
