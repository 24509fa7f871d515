//! Requests an agent relays to the leader on an operator's or its own behalf (certificate
//! renewal, a join, token and CA actions), and the leader's replies: bounded frames.

use serde::{Deserialize, Serialize};

use super::{check_len, MAX_CERT_DER, MAX_ROOTS, MAX_TOKEN_ID};
use crate::identity::NodeId;

/// An operator's action, relayed from an agent's admin API to the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorAction {
    /// Make a join token; `ttl_ms` `None` never expires.
    CreateToken {
        ttl_ms: Option<u64>,
    },
    RevokeToken {
        id: String,
    },
    /// Start a CA rotation now.
    RotateCa,
    /// End a node's quarantine.
    Release {
        node: NodeId,
    },
}

/// What one agent asks the leader, on its own bidirectional stream ([`crate::FrameType::Leader`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// A new leaf for the connection's own node: a PKCS#10 request (DER). The node ID comes from
    /// the certificate the connection was made with, never from the request.
    Renew { csr: Vec<u8> },
    /// A first leaf for a new node, on a connection without a client certificate.
    Join {
        token: String,
        node: NodeId,
        csr: Vec<u8>,
    },
    /// An operator's action from the asking node's admin API.
    Operator { action: OperatorAction },
}

/// The leader's answer to a [`LeaderRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaderReply {
    /// The new leaf (DER) and the roots to trust with it (DER, the committed trust bundle).
    Issued { leaf: Vec<u8>, roots: Vec<Vec<u8>> },
    /// The action was committed; `detail` is for the operator (a new token's value).
    Done { detail: String },
    /// This node does not lead; ask the leader, when one is known.
    NotLeader {
        leader: Option<NodeId>,
        address: Option<std::net::SocketAddr>,
    },
    /// Refused, with a reason for logs and the operator.
    Refused { reason: String },
}

impl crate::frame::FrameMessage for LeaderRequest {
    const FRAME_TYPE: crate::FrameType = crate::FrameType::Leader;
    const MAX_PAYLOAD: usize = 16 * 1024;

    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Renew { csr } => check_len("certificate request", csr.len(), MAX_CERT_DER),
            Self::Join { token, csr, .. } => {
                check_len("join token", token.len(), 256)?;
                check_len("certificate request", csr.len(), MAX_CERT_DER)
            }
            Self::Operator { action } => match action {
                OperatorAction::RevokeToken { id } => check_len("token ID", id.len(), MAX_TOKEN_ID),
                _ => Ok(()),
            },
        }
    }
}

impl crate::frame::FrameMessage for LeaderReply {
    const FRAME_TYPE: crate::FrameType = crate::FrameType::Leader;
    const MAX_PAYLOAD: usize = 32 * 1024;

    fn validate(&self) -> Result<(), String> {
        match self {
            Self::Issued { leaf, roots } => {
                check_len("leaf", leaf.len(), MAX_CERT_DER)?;
                if roots.len() > MAX_ROOTS {
                    return Err(format!("more than {MAX_ROOTS} roots"));
                }
                roots
                    .iter()
                    .try_for_each(|r| check_len("root", r.len(), MAX_CERT_DER))
            }
            Self::Done { detail } | Self::Refused { reason: detail } => {
                check_len("detail", detail.len(), 1024)
            }
            Self::NotLeader { .. } => Ok(()),
        }
    }
}
