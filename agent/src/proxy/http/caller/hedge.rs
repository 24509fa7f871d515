//! Hedged requests: an idempotent request that has not answered after the recent p95 is raced
//! by a second attempt to another endpoint, paid from the retry budget.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{HttpCaller, InFlight, Template, Tried};
use crate::policy::Outcome;
use crate::proxy::http::body::{ProxyBody, RequestBody};
use crate::telemetry::names;

impl HttpCaller {
    /// An attempt that, if it has not answered after the recent p95, is raced by a second one
    /// to another endpoint (paid from the retry budget). The first usable answer wins; the other
    /// is cancelled.
    pub(super) async fn hedged(
        &self,
        addr: SocketAddr,
        template: &Template,
        body: &mut RequestBody,
        attempt_body: ProxyBody,
        budget: Duration,
    ) -> Tried {
        let flight = InFlight {
            route: &self.route,
            addr,
            started: Instant::now(),
            done: false,
        };
        let first = self.attempt(flight, template.request(attempt_body), budget);
        tokio::pin!(first);
        let Some(delay) = self.route.p95().filter(|d| *d < budget) else {
            return first.await;
        };
        tokio::select! {
            tried = &mut first => return tried,
            () = tokio::time::sleep(delay) => {}
        }
        let second_addr = match self.route.try_retry() {
            true => self.route.pick(&[addr]),
            false => None,
        };
        let (Some(second_addr), Some(second_body)) = (second_addr, body.attempt()) else {
            if let Some(second_addr) = second_addr {
                self.route
                    .finish(second_addr, Duration::ZERO, Outcome::Cancelled);
            }
            return first.await;
        };
        self.count(names::HEDGES, &[]);
        let flight = InFlight {
            route: &self.route,
            addr: second_addr,
            started: Instant::now(),
            done: false,
        };
        let second = self.attempt(flight, template.request(second_body), budget - delay);
        tokio::pin!(second);
        let usable = |t: &Tried| t.outcome == Outcome::Success;
        tokio::select! {
            tried = &mut first => if usable(&tried) { tried } else { second.await },
            tried = &mut second => if usable(&tried) { tried } else { first.await },
        }
    }
}
