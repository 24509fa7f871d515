//! The header that opens a proxied stream, and the server's answer.
//!
//! A caller's agent opens one bidirectional QUIC stream per proxied connection and sends a
//! [`StreamHeader`] naming the target service. The caller's identity is *not* in the header: the
//! serving agent takes it from the verified TLS session, so no peer can claim to be another.
//! For a TCP stream the server answers with an [`OpenReply`] before any service bytes flow
//! back, so a caller learns why a stream was refused and can try another endpoint. An HTTP
//! stream carries one HTTP/1.1 exchange right after the header, with no `OpenReply`: refusals are
//! HTTP answers marked with a `plexus-*` header, which saves the round trip per request.

use serde::{Deserialize, Serialize};

use crate::frame::{FrameMessage, FrameType};
use crate::identity::ServiceName;

/// First frame of a proxied stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    /// The service the caller wants to reach on the serving agent.
    pub service: ServiceName,
    /// How long, in milliseconds, the caller waits for the [`OpenReply`]. The serving agent
    /// keeps its own work (connecting to the local service) inside this budget, so its answer,
    /// with the true reason, arrives before the caller gives up.
    pub open_budget_ms: u32,
    /// What follows the header on this stream.
    pub protocol: AppProtocol,
}

/// How an application's traffic is carried between agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppProtocol {
    /// A byte pipe: `OpenReply`, then the connection's bytes both ways.
    Tcp,
    /// One HTTP/1.1 request and its response (upgrades continue as a byte pipe).
    Http,
}

impl AppProtocol {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
        }
    }
}

impl FrameMessage for StreamHeader {
    const FRAME_TYPE: FrameType = FrameType::OpenStream;
    const MAX_PAYLOAD: usize = 1024;
}

/// Why a serving agent refused to open a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// This agent hosts no service of that name.
    UnknownService,
    /// The local service refused the connection.
    LocalConnectRefused,
    /// The local service did not accept the connection in time.
    LocalConnectTimeout,
    /// Any other local failure to reach the service.
    LocalConnectFailed,
    /// The service has as many requests in flight as its capacity allows: try another endpoint.
    Overloaded,
    /// The cell's access policy does not let the caller call this service.
    PolicyDenied,
}

impl Refusal {
    /// A stable label for logs and metrics.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::UnknownService => "unknown_service",
            Self::LocalConnectRefused => "local_connect_refused",
            Self::LocalConnectTimeout => "local_connect_timeout",
            Self::LocalConnectFailed => "local_connect_failed",
            Self::Overloaded => "overloaded",
            Self::PolicyDenied => "policy_denied",
        }
    }
}

/// The serving agent's answer to a [`StreamHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenReply {
    /// The local service is connected; bytes flow both ways from here on.
    Accepted,
    /// The stream is refused and will be closed.
    Refused(Refusal),
}

impl FrameMessage for OpenReply {
    const FRAME_TYPE: FrameType = FrameType::OpenReply;
    const MAX_PAYLOAD: usize = 64;
}
