//! rustls and quinn configurations: TLS 1.3 only, client certificates required, mesh verifiers.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{AckFrequencyConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};

use super::TransportError;
use crate::config::TransportSettings;
use crate::pki::{self, LiveCredentials, LiveTrust};
use crate::telemetry::Telemetry;

/// The ALPN protocol every Plexus connection negotiates.
pub const ALPN: &[u8] = b"plexus/1";

/// Enough concurrent streams per connection for many proxied connections to one peer.
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// Path MTU discovery may grow packets up to jumbo-frame size where the path allows it (data
/// centre links, loopback); fewer, larger packets cost less CPU per byte. quinn's default stops
/// at 1452. Black-hole detection falls back when a path drops large packets.
const MTU_DISCOVERY_UPPER_BOUND: u16 = 9000;

/// Ack-eliciting packets a peer may receive from us before it must acknowledge at once (QUIC's
/// ACK frequency extension; RFC 9000's default is 1, an ACK for every other packet). Proxied
/// requests and responses carry their ACKs on the next packet the other way; with the default,
/// two requests arriving before the first answer cost an ACK-only packet (a send here and a
/// receive and wake-up on the peer). `ACK_FREQUENCY_ENV` overrides it for measurements.
const ACK_ELICITING_THRESHOLD: u32 = 8;
const ACK_FREQUENCY_ENV: &str = "PLEXUS_ACK_ELICITING_THRESHOLD";

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn transport_config(settings: &TransportSettings) -> Result<Arc<TransportConfig>, TransportError> {
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_UPPER_BOUND);
    let mut config = TransportConfig::default();
    config
        .mtu_discovery_config(Some(mtu))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(settings.idle_timeout).map_err(tls_err)?,
        ))
        .keep_alive_interval(Some(settings.keep_alive))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
        // Unidirectional streams carry gossip, one message each; a few dozen at once is plenty.
        .max_concurrent_uni_streams(VarInt::from_u32(64))
        .stream_receive_window(VarInt::from_u32(2 << 20))
        .receive_window(VarInt::from_u32(8 << 20))
        .send_window(8 << 20);
    let threshold = std::env::var(ACK_FREQUENCY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ACK_ELICITING_THRESHOLD);
    if threshold > 0 {
        let mut acks = AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(VarInt::from_u32(threshold));
        config.ack_frequency_config(Some(acks));
    }
    Ok(Arc::new(config))
}

/// The server side: peers must present a certificate of our mesh.
pub fn server_config(
    trust: &Arc<LiveTrust>,
    credentials: &Arc<LiveCredentials>,
    settings: &TransportSettings,
    telemetry: &Telemetry,
) -> Result<quinn::ServerConfig, TransportError> {
    let (inbound, _) = pki::peer_verifiers(trust, telemetry);
    let mut tls = rustls::ServerConfig::builder_with_provider(pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(inbound)
        .with_cert_resolver(credentials.clone());
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No session resumption: a resumed handshake restores the peer's old certificate without
    // running the verifier, so an expired or (later) deny-listed node could keep reconnecting.
    // Every connection proves its certificate afresh.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(settings)?);
    Ok(config)
}

/// The client side: we present our certificate and check the peer's.
pub fn client_config(
    trust: &Arc<LiveTrust>,
    credentials: &Arc<LiveCredentials>,
    settings: &TransportSettings,
    telemetry: &Telemetry,
) -> Result<quinn::ClientConfig, TransportError> {
    let (_, outbound) = pki::peer_verifiers(trust, telemetry);
    let mut tls = rustls::ClientConfig::builder_with_provider(pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(outbound)
        .with_client_cert_resolver(credentials.clone());
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(settings)?);
    Ok(config)
}
