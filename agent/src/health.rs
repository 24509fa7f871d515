//! Readiness of the services this agent hosts: an optional active probe, a TCP connect
//! (`health = { tcp = true, interval = "1s" }`) or an HTTP `GET` that must answer 2xx or 3xx
//! (`health = { http = "/healthz" }`), with rise and fall thresholds so one lost probe does not
//! flap a service out of every endpoint set. Unready services leave every caller's endpoint set
//! (through gossip) and make the agent's `/readyz` answer 503.
//!
//! [`Readiness`] is the pure part; [`probe_services`] runs it against the real services and
//! writes the result into the [`LoadBook`], from which gossip publishes it.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_protocol::ServiceName;

use crate::config::{HealthProbe, LocalService};
use crate::telemetry::{names, LoadBook, Telemetry};

/// Consecutive successful probes that make a service ready.
pub const RISE: u32 = 1;
/// Consecutive failed probes that make a ready service unready.
pub const FALL: u32 = 2;
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Readiness from a series of probe results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    ready: bool,
    streak: u32,
}

impl Readiness {
    /// Folds in one probe result; returns whether the service is ready now.
    pub fn probed(&mut self, ok: bool) -> bool {
        if ok == self.ready {
            self.streak = 0;
        } else {
            self.streak += 1;
            let threshold = if ok { RISE } else { FALL };
            if self.streak >= threshold {
                self.ready = ok;
                self.streak = 0;
            }
        }
        self.ready
    }
}

/// Keeps the readiness of every hosted service in `load`: services without a probe are
/// ready at once; each probed one is probed at its interval for ever.
pub async fn probe_services(services: Vec<LocalService>, load: LoadBook, telemetry: Telemetry) {
    let mut probes = tokio::task::JoinSet::new();
    for service in services {
        let Some(check) = service.health else {
            load.set_ready(&service.name, true);
            telemetry
                .gauge(names::SERVICE_READY, &[("service", service.name.as_str())])
                .set(1.0);
            continue;
        };
        probes.spawn(probe(
            service.name,
            service.address,
            check.probe,
            check.interval,
            load.clone(),
            telemetry.clone(),
        ));
    }
    while probes.join_next().await.is_some() {}
}

async fn probe(
    service: ServiceName,
    address: SocketAddr,
    kind: HealthProbe,
    interval: Duration,
    load: LoadBook,
    telemetry: Telemetry,
) {
    let mut state = Readiness::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let ok = tokio::time::timeout(PROBE_TIMEOUT.min(interval), probe_once(address, &kind))
            .await
            .unwrap_or(false);
        let ready = state.probed(ok);
        if load.set_ready(&service, ready) {
            tracing::info!(%service, %address, ready, "local service readiness changed");
        }
        telemetry
            .gauge(names::SERVICE_READY, &[("service", service.as_str())])
            .set(if ready { 1.0 } else { 0.0 });
    }
}

/// One probe: a TCP connect, or an HTTP/1.1 `GET` on a fresh connection answered with 2xx/3xx.
async fn probe_once(address: SocketAddr, kind: &HealthProbe) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    let HealthProbe::Http { path } = kind else {
        return true;
    };
    let io = hyper_util::rt::TokioIo::new(tcp);
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, address.to_string())
        .header(hyper::header::USER_AGENT, "plexus-health")
        .body(http_body_util::Empty::<bytes::Bytes>::new());
    let ok = match request {
        Ok(request) => sender.send_request(request).await.is_ok_and(|response| {
            response.status().is_success() || response.status().is_redirection()
        }),
        Err(_) => false,
    };
    driver.abort();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_success_makes_ready_and_two_failures_unready() {
        let mut r = Readiness::default();
        assert!(!r.probed(false));
        assert!(r.probed(true));
        assert!(r.probed(false), "one failure is not enough");
        assert!(r.probed(true));
        assert!(r.probed(false));
        assert!(!r.probed(false));
        assert!(r.probed(true));
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// A one-shot HTTP server answering every request with `status`.
    async fn server(status: u16) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |_req| async move {
                    hyper::Response::builder()
                        .status(status)
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_only() {
        let path = HealthProbe::Http {
            path: "/healthz".into(),
        };
        assert!(probe_once(server(200).await, &path).await);
        assert!(probe_once(server(302).await, &path).await);
        assert!(!probe_once(server(503).await, &path).await);
        assert!(!probe_once(server(404).await, &path).await);
        // Nothing listening: both kinds fail.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe_once(closed, &path).await);
        assert!(!probe_once(closed, &HealthProbe::Tcp).await);
        assert!(probe_once(server(500).await, &HealthProbe::Tcp).await);
    }
}
