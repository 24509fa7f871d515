//! One upstream's endpoints: which one takes the next request, and what its answer teaches.
//!
//! [`EndpointSet`] combines the balancer ([`super::balance`]) with outlier detection
//! ([`super::outlier`]): ejected endpoints are skipped, a half-open endpoint gets the next
//! request as its probe, and the rest are chosen by P2C over peak-EWMA cost ÷ weight.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::balance::{p2c, BalanceConfig, PeakEwma};
use super::outlier::{Ejection, OutlierConfig, OutlierDetector, OutlierTracker, Transition};
use super::Outcome;

#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    ewma: PeakEwma,
    weight: f64,
}

/// One endpoint, read (for `/v1/routes`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReading {
    pub addr: SocketAddr,
    pub cost: Duration,
    pub in_flight: u32,
    pub weight: f64,
    pub state: Ejection,
    pub ejections: u32,
}

/// The endpoints of one upstream and their feedback state.
#[derive(Debug, Clone)]
pub struct EndpointSet {
    balance: BalanceConfig,
    detector: OutlierDetector,
    endpoints: Vec<Endpoint>,
    trackers: Vec<OutlierTracker>,
}

impl EndpointSet {
    pub fn new(balance: BalanceConfig, outlier: OutlierConfig, now: Instant) -> Self {
        Self {
            balance,
            detector: OutlierDetector::new(outlier, now),
            endpoints: Vec::new(),
            trackers: Vec::new(),
        }
    }

    /// Follows the current endpoint list; known endpoints keep their state.
    pub fn sync(&mut self, addrs: &[SocketAddr], now: Instant) {
        if addrs.len() == self.endpoints.len()
            && addrs.iter().zip(&self.endpoints).all(|(a, e)| *a == e.addr)
        {
            return;
        }
        let mut old: Vec<(Endpoint, OutlierTracker)> = std::mem::take(&mut self.endpoints)
            .into_iter()
            .zip(std::mem::take(&mut self.trackers))
            .collect();
        // Newcomers start at the median estimate of the endpoints that stay (healthy ones).
        let mut costs: Vec<Duration> = old
            .iter()
            .filter(|(e, t)| addrs.contains(&e.addr) && matches!(t.state(), Ejection::Healthy))
            .map(|(e, _)| e.ewma.cost(&self.balance, now))
            .collect();
        costs.sort();
        let start = costs.get(costs.len() / 2).copied();
        for addr in addrs {
            let (endpoint, tracker) = match old.iter().position(|(e, _)| e.addr == *addr) {
                Some(i) => old.swap_remove(i),
                None => (
                    Endpoint {
                        addr: *addr,
                        ewma: match start {
                            Some(cost) => PeakEwma::starting_at(cost, now),
                            None => PeakEwma::new(&self.balance, now),
                        },
                        weight: 1.0,
                    },
                    OutlierTracker::default(),
                ),
            };
            self.endpoints.push(endpoint);
            self.trackers.push(tracker);
        }
    }

    /// Sets an endpoint's weight (default 1; a later issue commits them mesh-wide).
    pub fn set_weight(&mut self, addr: SocketAddr, weight: f64) {
        if let Some(e) = self.endpoints.iter_mut().find(|e| e.addr == addr) {
            e.weight = weight.max(0.0);
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Advances outlier time; returns the endpoints whose state changed.
    pub fn tick(&mut self, now: Instant) -> Vec<(SocketAddr, Transition)> {
        self.detector
            .tick(&mut self.trackers, now)
            .into_iter()
            .map(|(i, t)| (self.endpoints[i].addr, t))
            .collect()
    }

    /// Chooses the endpoint for the next request, skipping `exclude` (endpoints this request
    /// already tried) and ejected ones, and marks it started. `draw(n)` is uniform in `0..n`.
    /// `None` when no endpoint may take it.
    pub fn pick(
        &mut self,
        now: Instant,
        draw: impl FnMut(usize) -> usize,
        exclude: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let open = |i: usize, e: &Endpoint, t: &[OutlierTracker]| {
            !exclude.contains(&e.addr) && t[i].admits() && e.weight > 0.0
        };
        // A half-open endpoint takes the next request as its probe.
        let probe = self.endpoints.iter().enumerate().position(|(i, e)| {
            open(i, e, &self.trackers)
                && matches!(self.trackers[i].state(), Ejection::Probing { .. })
        });
        let chosen = match probe {
            Some(i) => i,
            None => {
                let candidates: Vec<usize> = (0..self.endpoints.len())
                    .filter(|&i| open(i, &self.endpoints[i], &self.trackers))
                    .collect();
                let k = p2c(candidates.len(), draw, |k| {
                    let e = &self.endpoints[candidates[k]];
                    e.ewma.score(&self.balance, now, e.weight)
                })?;
                candidates[k]
            }
        };
        self.endpoints[chosen].ewma.start();
        self.trackers[chosen].started();
        Some(self.endpoints[chosen].addr)
    }

    /// Records how a request to `addr` ended. Returns an ejection or return, if any.
    pub fn finish(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        rtt: Duration,
        outcome: Outcome,
    ) -> Option<Transition> {
        let i = self.endpoints.iter().position(|e| e.addr == addr)?;
        self.endpoints[i]
            .ewma
            .finish(&self.balance, now, rtt, outcome);
        if outcome == Outcome::Cancelled {
            self.trackers[i].abandoned();
            return None;
        }
        if outcome == Outcome::Overloaded {
            // Shedding is the endpoint protecting itself, not a fault. Let a half-open probe go.
            if let Ejection::Probing { .. } = self.trackers[i].state() {
                return self.detector.record(&mut self.trackers, i, now, false);
            }
            return None;
        }
        self.detector
            .record(&mut self.trackers, i, now, outcome.is_failure())
    }

    pub fn readings(&self, now: Instant) -> Vec<EndpointReading> {
        self.endpoints
            .iter()
            .zip(&self.trackers)
            .map(|(e, t)| EndpointReading {
                addr: e.addr,
                cost: e.ewma.cost(&self.balance, now),
                in_flight: e.ewma.in_flight(),
                weight: e.weight,
                state: t.state(),
                ejections: t.ejections(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
