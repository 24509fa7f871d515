//! The agent's one QUIC endpoint: mutual TLS 1.3, ALPN `plexus/1`, a pool of peer connections.
//!
//! One UDP socket serves both roles. Peers dial it and must present a mesh certificate; this
//! agent dials peers through the [`PeerPool`], which keeps one connection per peer address and
//! re-dials a broken one with backoff. A peer is known by the node ID in its certificate, never
//! by anything it says.

mod backoff;
mod datagram;
mod frames;
mod pool;
mod returning;
mod tls;
mod udp;

pub use backoff::Backoff;
pub use datagram::QuicShape;
pub use frames::{
    read_header, read_message, read_payload, send_uni, write_message, ReadMessageError,
};
pub use pool::{DialError, PeerPool};
pub use returning::{forgive_returning_peers, Returning};
pub use tls::{client_config, server_config, ALPN};

use std::net::SocketAddr;
use std::sync::Arc;

use plexus_protocol::NodeId;
use quinn::{Connection, Endpoint, EndpointConfig, TokioRuntime};

use crate::config::TransportSettings;
use crate::pki::{LiveCredentials, LiveTrust};
use crate::telemetry::{names, Telemetry};

/// Why the endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind QUIC endpoint on udp {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// A live connection to a peer, with the identity its certificate proved.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub connection: Connection,
    pub node_id: NodeId,
}

impl PeerConnection {
    /// Reads the peer's node ID from its verified certificate.
    pub fn identify(connection: Connection) -> Result<Self, String> {
        let node_id = peer_node_id(&connection)?;
        Ok(Self {
            connection,
            node_id,
        })
    }
}

/// The node ID in the verified certificate of `connection`'s peer.
pub fn peer_node_id(connection: &Connection) -> Result<NodeId, String> {
    let identity = connection
        .peer_identity()
        .ok_or("peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain")?;
    let leaf = chain
        .first()
        .ok_or("peer presented an empty certificate chain")?;
    let id = crate::pki::leaf_spiffe_id(leaf)?;
    Ok(id.node_id().clone())
}

/// Binds the agent's endpoint on `listen` with this node's credentials.
pub fn bind_endpoint(
    listen: SocketAddr,
    trust: &Arc<LiveTrust>,
    credentials: &Arc<LiveCredentials>,
    settings: &TransportSettings,
    telemetry: &Telemetry,
) -> Result<Endpoint, TransportError> {
    let bind_err = |source| TransportError::Bind {
        addr: listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
    let runtime = Arc::new(TokioRuntime);
    let socket: Arc<dyn quinn::AsyncUdpSocket> =
        Arc::new(udp::ReadRegisteredSocket::new(socket).map_err(bind_err)?);
    let not_quic = telemetry.counter(
        names::HANDSHAKE_FAILURES,
        &[("direction", "inbound"), ("reason", "not_quic")],
    );
    let keys = EndpointKeys::derive(credentials.key());
    let cid_key = keys.cid;
    let socket = Arc::new(datagram::CountingSocket::new(
        socket,
        QuicShape::new(cid_key),
        not_quic,
    ));
    let server = server_config(trust, credentials, settings, telemetry)?;
    // Every peer is a Plexus agent: keep the fixed bit set so non-QUIC datagrams stand out.
    let mut endpoint_config = EndpointConfig::new(keys.reset);
    endpoint_config
        .grease_quic_bit(false)
        .cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
    let mut endpoint =
        Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket, runtime)
            .map_err(bind_err)?;
    endpoint.set_default_client_config(client_config(trust, credentials, settings, telemetry)?);
    Ok(endpoint)
}

/// Endpoint secrets that must survive a restart, derived from the node's private key.
///
/// - `cid`: keys the connection IDs this endpoint issues, so a short-header packet can be
///   checked as ours (see [`QuicShape`]), including packets of connections from before a
///   restart, which quinn then answers with a stateless reset instead of dropping silently;
/// - `reset`: keys stateless reset tokens, so a peer recognises that reset as genuine and closes
///   its connection to the restarted agent at once instead of waiting for its idle timeout.
///
/// Both are HMAC-SHA256 of a fixed label under the node key: stable for one key, and revealing
/// nothing about it.
struct EndpointKeys {
    cid: u64,
    reset: Arc<ring::hmac::Key>,
}

impl EndpointKeys {
    fn derive(key: &rustls::pki_types::PrivateKeyDer<'_>) -> Self {
        use ring::hmac;
        let secret = hmac::Key::new(hmac::HMAC_SHA256, key.secret_der());
        let cid_tag = hmac::sign(&secret, b"plexus/1 quic connection id key");
        let mut cid = [0u8; 8];
        cid.copy_from_slice(&cid_tag.as_ref()[..8]);
        let reset_tag = hmac::sign(&secret, b"plexus/1 quic stateless reset key");
        Self {
            cid: u64::from_le_bytes(cid),
            reset: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, reset_tag.as_ref())),
        }
    }
}
