//! Reading and writing typed frames on QUIC streams, with bounded allocation.

use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{FrameError, FrameHeader, FRAME_HEADER_LEN};
use quinn::{RecvStream, SendStream};

/// Why a typed frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadMessageError {
    #[error("stream ended or failed before a whole frame arrived: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// Reads one `M` frame: the header is validated before the payload is read or allocated.
pub async fn read_message<M: FrameMessage>(recv: &mut RecvStream) -> Result<M, ReadMessageError> {
    let header = read_header(recv).await?;
    read_payload(recv, header).await
}

/// Reads and validates a frame header (the first 8 bytes of a frame).
pub async fn read_header(recv: &mut RecvStream) -> Result<FrameHeader, ReadMessageError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut header).await?;
    Ok(FrameHeader::decode(&header)?)
}

/// Reads the payload of a frame whose `header` was read already, as an `M`.
pub async fn read_payload<M: FrameMessage>(
    recv: &mut RecvStream,
    header: FrameHeader,
) -> Result<M, ReadMessageError> {
    if header.frame_type != M::FRAME_TYPE {
        return Err(FrameError::UnexpectedType {
            expected: M::FRAME_TYPE,
            found: header.frame_type,
        }
        .into());
    }
    if header.payload_len > M::MAX_PAYLOAD {
        return Err(FrameError::Oversized {
            len: header.payload_len,
            max: M::MAX_PAYLOAD,
        }
        .into());
    }
    let mut payload = vec![0u8; header.payload_len];
    recv.read_exact(&mut payload).await?;
    Ok(M::from_payload(&payload)?)
}

/// Writes one `M` frame.
pub async fn write_message<M: FrameMessage>(
    send: &mut SendStream,
    message: &M,
) -> Result<(), quinn::WriteError> {
    send.write_all(&message.to_frame_bytes()).await
}

/// Sends one encoded frame to `addr` on a unidirectional stream of its pooled connection (dialing
/// it if needed), within `timeout` for the dial and again for the stream.
pub async fn send_uni(
    pool: &super::PeerPool,
    addr: std::net::SocketAddr,
    frame: &[u8],
    timeout: std::time::Duration,
) -> Result<(), String> {
    let peer = pool
        .connection(addr, timeout)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, async {
        let mut send = peer
            .connection
            .open_uni()
            .await
            .map_err(|e| e.to_string())?;
        send.write_all(frame).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("no room to send within {timeout:?}"))?
}
