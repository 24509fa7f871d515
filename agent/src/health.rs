//! Readiness of the services this agent hosts: an optional TCP connect probe
//! (`health = { tcp = true, interval = "1s" }`), with rise and fall
//! thresholds so one lost probe does not flap a service out of every endpoint set.
//!
//! [`Readiness`] is the pure part; [`probe_services`] runs it against the real services and
//! writes the result into the [`LoadBook`], from which gossip publishes it.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_protocol::ServiceName;

use crate::config::LocalService;
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
    interval: Duration,
    load: LoadBook,
    telemetry: Telemetry,
) {
    let mut state = Readiness::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let ok = matches!(
            tokio::time::timeout(
                PROBE_TIMEOUT.min(interval),
                tokio::net::TcpStream::connect(address)
            )
            .await,
            Ok(Ok(_))
        );
        let ready = state.probed(ok);
        if load.set_ready(&service, ready) {
            tracing::info!(%service, %address, ready, "local service readiness changed");
        }
        telemetry
            .gauge(names::SERVICE_READY, &[("service", service.as_str())])
            .set(if ready { 1.0 } else { 0.0 });
    }
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
