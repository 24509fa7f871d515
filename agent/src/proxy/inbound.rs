//! Serving streams from peers: connect to the named local service and splice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{NodeId, OpenReply, Refusal, ServiceName, StreamHeader};
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;

use super::http::serve::LocalHttp;
use super::splice::{splice, SpliceCounters, RESET_CODE};
use crate::access::AccessGate;
use crate::config::{LocalService, Protocol};
use crate::telemetry::{names, LoadBook, OpenGuard, Telemetry};
use crate::transport::{read_payload, write_message};

/// How long a peer has to send its stream header after opening a stream.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on the time the local service has to accept a connection. Within them the serving
/// agent uses three quarters of the caller's open budget (sent in the stream header), so its
/// answer (say `local_connect_timeout`) reaches the caller before the caller gives up.
const LOCAL_CONNECT_MIN: Duration = Duration::from_millis(100);
const LOCAL_CONNECT_MAX: Duration = Duration::from_secs(10);

fn local_connect_timeout(open_budget_ms: u32) -> Duration {
    (Duration::from_millis(u64::from(open_budget_ms)) * 3 / 4)
        .clamp(LOCAL_CONNECT_MIN, LOCAL_CONNECT_MAX)
}

struct Hosted {
    service: LocalService,
    counters: SpliceCounters,
}

/// The services this agent hosts, served to peers.
pub struct InboundProxy {
    services: HashMap<ServiceName, Hosted>,
    telemetry: Telemetry,
    load: LoadBook,
    http: LocalHttp,
    access: Arc<AccessGate>,
}

impl InboundProxy {
    /// `access` decides which callers may call each hosted service.
    pub fn new(
        services: &[LocalService],
        telemetry: Telemetry,
        load: LoadBook,
        spans: Option<crate::telemetry::otlp::SpanSink>,
        access: Arc<AccessGate>,
    ) -> Self {
        let services = services
            .iter()
            .map(|s| {
                let counters = SpliceCounters::new(&telemetry, s.name.as_str(), "inbound");
                (
                    s.name.clone(),
                    Hosted {
                        service: s.clone(),
                        counters,
                    },
                )
            })
            .collect();
        Self {
            services,
            http: LocalHttp::new(load.clone(), telemetry.clone(), spans, access.clone()),
            telemetry,
            load,
            access,
        }
    }

    fn count(&self, service: &str, outcome: &str) {
        self.telemetry
            .counter(
                names::STREAMS,
                &[
                    ("direction", "inbound"),
                    ("service", service),
                    ("outcome", outcome),
                ],
            )
            .increment(1);
    }

    fn refused(&self, service: &str, refusal: Refusal) {
        self.telemetry
            .counter(
                names::STREAMS_REFUSED,
                &[
                    ("direction", "inbound"),
                    ("service", service),
                    ("reason", refusal.as_label()),
                ],
            )
            .increment(1);
    }

    /// Serves one stream a peer opened with a [`StreamHeader`] (whose frame header `first` was
    /// read already, to tell it from a request to the leader).
    pub async fn serve_stream(
        &self,
        peer: NodeId,
        first: plexus_protocol::FrameHeader,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let header = match tokio::time::timeout(
            HEADER_TIMEOUT,
            read_payload::<StreamHeader>(&mut recv, first),
        )
        .await
        {
            Ok(Ok(header)) => header,
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "bad stream header from peer");
                self.telemetry
                    .counter(
                        names::STREAMS_REFUSED,
                        &[
                            ("direction", "inbound"),
                            ("service", ""),
                            ("reason", "bad_header"),
                        ],
                    )
                    .increment(1);
                let _ = send.reset(RESET_CODE.into());
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "peer sent no stream header in time");
                let _ = send.reset(RESET_CODE.into());
                return;
            }
        };
        let service = header.service;
        if header.protocol == plexus_protocol::AppProtocol::Http {
            // HTTP streams go to HTTP services; anything else is answered as unknown.
            let target = self
                .services
                .get(&service)
                .filter(|h| h.service.protocol == Protocol::Http)
                .map(|h| (service.clone(), h.service.address));
            self.http.serve_stream(peer, target, send, recv).await;
            return;
        }
        let connect_timeout = local_connect_timeout(header.open_budget_ms);
        let Some(hosted) = self.services.get(&service) else {
            tracing::warn!(%peer, %service, "stream for a service this agent does not host");
            self.refuse(
                &mut send,
                &mut recv,
                service.as_str(),
                Refusal::UnknownService,
            )
            .await;
            return;
        };
        // The caller's certificate names its node; the committed policy says what it may call.
        if let Err(denied) = self.access.check(&peer, &service) {
            tracing::debug!(%peer, %service, "{denied}");
            self.refuse(
                &mut send,
                &mut recv,
                service.as_str(),
                Refusal::PolicyDenied,
            )
            .await;
            return;
        }
        // A request is one stream: admitted up to the service's capacity, its latency the time
        // to reach the local service (TCP carries no request boundaries), its outcome whether
        // the stream completed.
        let Some(mut admitted) = self.load.admit(&service) else {
            self.refuse(&mut send, &mut recv, service.as_str(), Refusal::Overloaded)
                .await;
            return;
        };
        let address = hosted.service.address;
        let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                let refusal = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    Refusal::LocalConnectRefused
                } else {
                    Refusal::LocalConnectFailed
                };
                tracing::warn!(%peer, %service, %address, %error, "local service connection failed");
                admitted.failed();
                self.refuse(&mut send, &mut recv, service.as_str(), refusal)
                    .await;
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, %service, %address, "local service did not accept in time");
                admitted.failed();
                self.refuse(
                    &mut send,
                    &mut recv,
                    service.as_str(),
                    Refusal::LocalConnectTimeout,
                )
                .await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        if let Err(error) = write_message(&mut send, &OpenReply::Accepted).await {
            tracing::info!(%peer, %service, %error, "peer went away before the stream opened");
            self.count(service.as_str(), "failed");
            admitted.failed();
            return;
        }
        // The latency is taken now; `admitted` stays alive (in flight) until the splice ends.
        admitted.mark_connected();
        let _open = OpenGuard::new(
            self.telemetry
                .gauge(names::STREAMS_OPEN, &[("direction", "inbound")]),
        );
        match splice(tcp, send, recv, &hosted.counters).await {
            Ok(()) => self.count(service.as_str(), "completed"),
            Err(error) => {
                tracing::info!(%peer, %service, %error, "proxied connection failed");
                self.count(service.as_str(), "failed");
                admitted.failed();
            }
        }
    }

    async fn refuse(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        service: &str,
        refusal: Refusal,
    ) {
        self.refused(service, refusal);
        let _ = write_message(send, &OpenReply::Refused(refusal)).await;
        let _ = send.finish();
        let _ = recv.stop(RESET_CODE.into());
    }

    /// Names of the hosted services.
    pub fn service_names(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_connects_stay_inside_the_callers_budget() {
        assert_eq!(local_connect_timeout(2000), Duration::from_millis(1500));
        assert_eq!(local_connect_timeout(5000), Duration::from_millis(3750));
        assert_eq!(local_connect_timeout(0), LOCAL_CONNECT_MIN);
        assert_eq!(local_connect_timeout(u32::MAX), LOCAL_CONNECT_MAX);
    }
}
