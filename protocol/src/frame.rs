//! The versioned frame that every Plexus QUIC stream speaks.
//!
//! ```text
//! 0      2        3        4                 8
//! +------+--------+--------+-----------------+----------------------+
//! | "PX" | version|  type  | payload length  | payload (bincode)    |
//! +------+--------+--------+-----------------+----------------------+
//!                           big-endian u32     at most MAX_FRAME_PAYLOAD bytes
//! ```
//!
//! The header is fixed-size so a reader can validate magic, version, type and length *before*
//! it reads or allocates the payload: an oversized length is refused from eight bytes alone.
//! Payloads are bincode 2 (standard config, varint integers) with the same byte limit applied
//! inside the decoder, and every payload must be consumed exactly: trailing bytes are an error,
//! so one byte string has one meaning.

use serde::{de::DeserializeOwned, Serialize};

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"PX";
/// The only wire version this build speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload a frame may carry (1 MiB). Larger lengths are refused from the header alone.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;

/// What a frame's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// First frame of a proxied stream, caller to server: a [`crate::StreamHeader`].
    OpenStream = 1,
    /// The server's answer to [`FrameType::OpenStream`]: an [`crate::OpenReply`].
    OpenReply = 2,
    /// One chitchat gossip message, on its own unidirectional stream: a
    /// [`crate::GossipMessage`].
    Gossip = 3,
    /// A node leaving on purpose, on its own unidirectional stream: a [`crate::GossipLeave`].
    GossipLeave = 4,
    /// One Raft message between two agents of the decision group, on its own unidirectional
    /// stream: a [`crate::RaftEnvelope`].
    Raft = 5,
    /// A request to the Raft leader and its answer, on their own bidirectional stream:
    /// [`crate::LeaderRequest`], then [`crate::LeaderReply`] (certificates, operator actions).
    Leader = 6,
}

impl FrameType {
    /// Maps a wire byte to a frame type; unknown bytes are `None`.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::OpenStream),
            2 => Some(Self::OpenReply),
            3 => Some(Self::Gossip),
            4 => Some(Self::GossipLeave),
            5 => Some(Self::Raft),
            6 => Some(Self::Leader),
            _ => None,
        }
    }
}

/// Why bytes did not decode into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed; `needed` is how many more at least.
    #[error("truncated frame: {needed} more bytes needed")]
    Truncated { needed: usize },
    /// The first two bytes are not `PX`: the peer does not speak Plexus framing.
    #[error("bad frame magic {found:02x?}, expected \"PX\"")]
    BadMagic { found: [u8; 2] },
    /// The peer speaks a wire version this build does not.
    #[error("unsupported frame version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The frame type byte is not one this version defines.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The declared payload length exceeds [`MAX_FRAME_PAYLOAD`].
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    Oversized { len: usize, max: usize },
    /// The frame has a different type than the reader expected at this point of the stream.
    #[error("unexpected frame type {found:?}, expected {expected:?}")]
    UnexpectedType {
        expected: FrameType,
        found: FrameType,
    },
    /// The payload is not a valid encoding of its type.
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed { kind: FrameType, reason: String },
}

/// The fixed eight-byte header of a frame, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_type: FrameType,
    pub payload_len: usize,
}

impl FrameHeader {
    /// Validates a header: magic, version, known type and a length within bounds.
    ///
    /// ```
    /// use plexus_protocol::{FrameHeader, FrameType};
    /// let header = FrameHeader::decode(&[b'P', b'X', 1, 1, 0, 0, 0, 5]).unwrap();
    /// assert_eq!(header.frame_type, FrameType::OpenStream);
    /// assert_eq!(header.payload_len, 5);
    /// ```
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<Self, FrameError> {
        let magic = [bytes[0], bytes[1]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if bytes[2] != VERSION {
            return Err(FrameError::UnsupportedVersion(bytes[2]));
        }
        let frame_type = FrameType::from_byte(bytes[3]).ok_or(FrameError::UnknownType(bytes[3]))?;
        let payload_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if payload_len > MAX_FRAME_PAYLOAD {
            return Err(FrameError::Oversized {
                len: payload_len,
                max: MAX_FRAME_PAYLOAD,
            });
        }
        Ok(Self {
            frame_type,
            payload_len,
        })
    }

    /// The header's eight wire bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let len = (self.payload_len as u32).to_be_bytes();
        [
            MAGIC[0],
            MAGIC[1],
            VERSION,
            self.frame_type as u8,
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }
}

/// A whole frame: its type and raw payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes one frame from the front of `buf`, returning it and the bytes it used.
    ///
    /// Returns [`FrameError::Truncated`] when `buf` holds only part of a frame, so a caller that
    /// reads into a growing buffer can wait for more.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), FrameError> {
        let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Err(FrameError::Truncated {
                needed: FRAME_HEADER_LEN - buf.len(),
            });
        };
        let header = FrameHeader::decode(header_bytes)?;
        let total = FRAME_HEADER_LEN + header.payload_len;
        if buf.len() < total {
            return Err(FrameError::Truncated {
                needed: total - buf.len(),
            });
        }
        let payload = buf[FRAME_HEADER_LEN..total].to_vec();
        Ok((
            Self {
                frame_type: header.frame_type,
                payload,
            },
            total,
        ))
    }

    /// The frame's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = FrameHeader {
            frame_type: self.frame_type,
            payload_len: self.payload.len(),
        };
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + self.payload.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// A typed message that travels as the payload of one frame type.
pub trait FrameMessage: Serialize + DeserializeOwned {
    /// The frame type this message travels in.
    const FRAME_TYPE: FrameType;
    /// Largest payload this message may have; readers refuse longer frames before reading them.
    const MAX_PAYLOAD: usize = MAX_FRAME_PAYLOAD;

    /// Checks invariants serde cannot express (name syntax and the like).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Encodes the message as a complete frame.
    fn to_frame_bytes(&self) -> Vec<u8> {
        let payload = bincode::serde::encode_to_vec(self, bincode_config())
            .expect("encoding into a Vec cannot fail for plain data types");
        debug_assert!(payload.len() <= MAX_FRAME_PAYLOAD);
        Frame {
            frame_type: Self::FRAME_TYPE,
            payload,
        }
        .encode()
    }

    /// Decodes the message from a frame, checking its type and consuming every payload byte.
    fn from_frame(frame: &Frame) -> Result<Self, FrameError> {
        if frame.frame_type != Self::FRAME_TYPE {
            return Err(FrameError::UnexpectedType {
                expected: Self::FRAME_TYPE,
                found: frame.frame_type,
            });
        }
        Self::from_payload(&frame.payload)
    }

    /// Decodes the message from a payload of this message's frame type.
    fn from_payload(payload: &[u8]) -> Result<Self, FrameError> {
        let malformed = |reason: String| FrameError::Malformed {
            kind: Self::FRAME_TYPE,
            reason,
        };
        if payload.len() > Self::MAX_PAYLOAD {
            return Err(FrameError::Oversized {
                len: payload.len(),
                max: Self::MAX_PAYLOAD,
            });
        }
        let (message, used): (Self, usize) =
            bincode::serde::decode_from_slice(payload, bincode_config())
                .map_err(|e| malformed(e.to_string()))?;
        if used != payload.len() {
            return Err(malformed(format!(
                "{} trailing bytes",
                payload.len() - used
            )));
        }
        message.validate().map_err(malformed)?;
        Ok(message)
    }
}

/// bincode settings shared by every payload: standard encoding, decoding capped at one frame.
pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_PAYLOAD>()
}

/// Encodes a plain value the way frame payloads are encoded, for records an agent keeps on disk.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode_config())
        .expect("encoding into a Vec cannot fail for plain data types")
}

/// Decodes a record written by [`encode_record`]; total, like every decoder here.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, String> {
    decode_exact(bytes, limit)
}

/// Encodes a value (bincode), refusing one larger than `budget` bytes.
pub(crate) fn encode_within<T: serde::Serialize>(
    value: &T,
    budget: usize,
) -> Result<Vec<u8>, String> {
    let bytes = bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| format!("encoding failed: {e}"))?;
    if bytes.len() > budget {
        return Err(format!(
            "encoded size {} exceeds the budget of {budget} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Decodes a value (bincode) that must fill `bytes` exactly, refusing more than `limit` bytes.
pub(crate) fn decode_exact<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, String> {
    if bytes.len() > limit {
        return Err(format!("{} bytes exceed the limit of {limit}", bytes.len()));
    }
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(value)
}

/// The format of what the decision log keeps and replicates (decisions, membership changes,
/// the committed state in snapshots and on disk, and the consensus summary in gossip). Each
/// such encoding starts with this byte, so an agent that meets another format (a data
/// directory or a voter from another release) says so instead of misreading it. Raise it with
/// any change to those types' encoding.
pub const LOG_FORMAT: u8 = 1;

/// Encodes `value` after the [`LOG_FORMAT`] byte, refusing more than `budget` bytes in all.
pub(crate) fn encode_tagged<T: Serialize>(value: &T, budget: usize) -> Result<Vec<u8>, String> {
    let body = encode_within(value, budget.saturating_sub(1))?;
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.push(LOG_FORMAT);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes what [`encode_tagged`] wrote; `what` names it in errors. Total.
pub(crate) fn decode_tagged<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    what: &str,
) -> Result<T, String> {
    match bytes.split_first() {
        None => Err(format!("{what}: empty")),
        Some((&LOG_FORMAT, body)) => {
            decode_exact(body, limit.saturating_sub(1)).map_err(|e| format!("{what}: {e}"))
        }
        Some((format, _)) => Err(format!(
            "{what} is in decision-log format {format}, this build reads format {LOG_FORMAT} \
             (written by another release of plexus)"
        )),
    }
}

#[cfg(test)]
mod tests;
