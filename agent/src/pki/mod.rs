//! The mesh's certificates: making them, loading them, and checking peers against them.
//!
//! A mesh has one trust domain and a CA whose certificate carries the URI SAN
//! `spiffe://<trust-domain>`. Every node holds a leaf whose only URI SAN is
//! `spiffe://<trust-domain>/node/<node-id>`, valid for both TLS client and server use, since
//! every agent is both. The node ID in that SAN is how the rest of the agent knows a peer.

pub mod ca;
mod credentials;
mod issue;
mod live;
mod verify;

pub use credentials::{cert_info, leaf_spiffe_id, CertInfo, NodeCredentials, TrustBundle};
pub use issue::{
    init_ca, issue_node, node_certificate, write_public, write_secret, IssueOptions, Validity,
};
pub use live::{LiveCredentials, LiveTrust, TrustView};
pub use verify::{check_own_certificate, peer_verifiers, rejection_reason, MeshVerifier};

use std::path::PathBuf;

/// Why a PKI operation failed; each variant names the file involved.
///
/// `Io` is a failure to write (a runtime failure); unreadable or unusable input is `BadFile`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: refusing to overwrite an existing key (pass --force to replace it)")]
    WouldOverwrite { path: PathBuf },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Identity(#[from] plexus_protocol::IdentityError),
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn bad(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// File names inside a CA directory and a node directory.
pub mod files {
    pub const CA_CERT: &str = "ca.pem";
    pub const CA_KEY: &str = "ca.key";
    pub const NODE_CERT: &str = "node.pem";
    pub const NODE_KEY: &str = "node.key";
}

/// The TLS crypto provider every Plexus config uses (ring).
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Bytes of a hex string (a certificate serial); non-hex pairs are skipped.
pub fn hex_bytes(hex: &str) -> Vec<u8> {
    hex.as_bytes()
        .chunks(2)
        .filter_map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
