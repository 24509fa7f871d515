//! Peer connections: the accept loop, each verified peer's streams (proxied traffic or a
//! request to the leader, told apart by the type of their first frame; gossip on
//! unidirectional streams), and connections without a client certificate, which may only join.

use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{FrameType, NodeId};
use quinn::{RecvStream, SendStream};

use quinn::Endpoint;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{stopping, AgentState, InboundPeer};
use crate::gossip::GossipInbox;
use crate::proxy::InboundProxy;
use crate::telemetry::{names, OpenGuard, Telemetry};
use crate::transport::{read_header, PeerConnection};
use crate::trust::TrustService;

/// How long a peer may take to send a stream's first frame header.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one bidirectional stream of a verified peer.
pub(super) async fn serve_bi(
    inbound: Arc<InboundProxy>,
    trust: TrustService,
    telemetry: Telemetry,
    peer: NodeId,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let header = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(header)) => header,
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "bad first frame on a peer's stream");
            telemetry
                .counter(
                    crate::telemetry::names::STREAMS_REFUSED,
                    &[
                        ("direction", "inbound"),
                        ("service", ""),
                        ("reason", "bad_header"),
                    ],
                )
                .increment(1);
            let _ = send.reset(1u32.into());
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "peer sent no first frame in time");
            let _ = send.reset(1u32.into());
            return;
        }
    };
    match header.frame_type {
        FrameType::Leader => trust.serve(Some(peer), header, send, recv).await,
        _ => inbound.serve_stream(peer, header, send, recv).await,
    }
}

/// A connection without a client certificate: one join request is answered, anything else is
/// refused and counted as `no_certificate`.
pub(super) async fn serve_joiner(
    connection: quinn::Connection,
    trust: TrustService,
    telemetry: Telemetry,
) {
    let remote = connection.remote_address();
    let joined = tokio::time::timeout(FIRST_FRAME_TIMEOUT, async {
        let (send, mut recv) = connection.accept_bi().await.ok()?;
        let header = read_header(&mut recv).await.ok()?;
        (header.frame_type == FrameType::Leader).then_some((header, send, recv))
    })
    .await;
    match joined {
        Ok(Some((header, send, recv))) => {
            tracing::info!(%remote, "join request from a peer without a certificate");
            trust.serve(None, header, send, recv).await;
            // Let the reply reach the peer before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        }
        _ => {
            telemetry.handshake_failed("inbound", "no_certificate");
            tracing::info!(%remote, "peer without a certificate refused");
        }
    }
    connection.close(1u32.into(), b"a certificate is required");
}

/// Accepts peer connections and serves the streams they open.
pub(super) async fn accept_peers(
    endpoint: Endpoint,
    inbound: Arc<InboundProxy>,
    gossip: GossipInbox,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Peer tasks live in this set: when the loop ends (shutdown or abort), they end too.
    let mut peers = JoinSet::new();
    loop {
        while peers.try_join_next().is_some() {}
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            _ = stopping(&mut shutdown) => return,
        };
        peers.spawn(serve_peer(
            incoming,
            inbound.clone(),
            gossip.clone(),
            state.clone(),
        ));
    }
}

async fn serve_peer(
    incoming: quinn::Incoming,
    inbound: Arc<InboundProxy>,
    gossip: GossipInbox,
    state: Arc<AgentState>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            // Certificate refusals were counted, with their reason, by the verifier.
            if let Some(reason) = uncounted_handshake_failure(&error) {
                state.telemetry.handshake_failed("inbound", reason);
            }
            tracing::info!(%remote, %error, "inbound handshake failed");
            return;
        }
    };
    if connection.peer_identity().is_none() {
        // No client certificate: the only thing such a peer may do is join with a token.
        serve_joiner(
            connection,
            state.trust_service.clone(),
            state.telemetry.clone(),
        )
        .await;
        return;
    }
    let peer = match PeerConnection::identify(connection.clone()) {
        Ok(peer) => peer,
        Err(reason) => {
            tracing::warn!(%remote, %reason, "peer without a usable identity");
            connection.close(1u32.into(), b"no identity");
            return;
        }
    };
    let telemetry = &state.telemetry;
    telemetry
        .counter(names::CONNECTIONS, &[("direction", "inbound")])
        .increment(1);
    let _open =
        OpenGuard::new(telemetry.gauge(names::CONNECTIONS_OPEN, &[("direction", "inbound")]));
    let id = connection.stable_id();
    state
        .inbound
        .lock()
        .expect("inbound peers lock poisoned")
        .insert(
            id,
            InboundPeer {
                node_id: peer.node_id.clone(),
                address: remote,
                connection: connection.clone(),
            },
        );
    tracing::info!(peer = %peer.node_id, %remote, "peer connected");
    let mut streams = JoinSet::new();
    loop {
        while streams.try_join_next().is_some() {}
        let accepted = tokio::select! {
            bi = connection.accept_bi() => bi.map(PeerStream::Proxy),
            uni = connection.accept_uni() => uni.map(PeerStream::Gossip),
        };
        match accepted {
            Ok(PeerStream::Proxy((send, recv))) => {
                streams.spawn(serve_bi(
                    inbound.clone(),
                    state.trust_service.clone(),
                    state.telemetry.clone(),
                    peer.node_id.clone(),
                    send,
                    recv,
                ));
            }
            Ok(PeerStream::Gossip(recv)) => {
                let gossip = gossip.clone();
                let node = peer.node_id.clone();
                streams.spawn(async move { gossip.accept_stream(&node, remote, recv).await });
            }
            Err(error) => {
                tracing::info!(peer = %peer.node_id, %error, "peer connection closed");
                break;
            }
        }
    }
    state
        .inbound
        .lock()
        .expect("inbound peers lock poisoned")
        .remove(&id);
}

/// A stream a peer opened: bidirectional streams carry proxied traffic, unidirectional ones
/// gossip.
enum PeerStream {
    Proxy((quinn::SendStream, quinn::RecvStream)),
    Gossip(quinn::RecvStream),
}

/// A reason label for handshake failures the certificate verifier did not see.
fn uncounted_handshake_failure(error: &quinn::ConnectionError) -> Option<&'static str> {
    const CERTIFICATE_REQUIRED: u8 = 116;
    const NO_APPLICATION_PROTOCOL: u8 = 120;
    match error {
        quinn::ConnectionError::TimedOut => Some("handshake_timeout"),
        // rustls refuses a peer that presents no certificate before any verifier runs.
        quinn::ConnectionError::TransportError(e)
            if e.code == quinn::TransportErrorCode::crypto(CERTIFICATE_REQUIRED) =>
        {
            Some("no_certificate")
        }
        quinn::ConnectionError::TransportError(e)
            if e.code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            Some("alpn_mismatch")
        }
        _ => None,
    }
}
