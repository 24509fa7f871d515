//! Streams peers open: proxied traffic or a request to the leader, told apart by the type of
//! their first frame; and connections without a client certificate, which may only join.

use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{FrameType, NodeId};
use quinn::{RecvStream, SendStream};

use crate::proxy::InboundProxy;
use crate::telemetry::Telemetry;
use crate::transport::read_header;
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
