//! The weight each endpoint should have now, from one snapshot of its gossiped load compared
//! with its peers (the other endpoints of the same service with evidence).
//!
//! Every signal is **relative to the peers' median**, never absolute: weights only share a
//! service's traffic among its endpoints, so a fault that hits every endpoint alike (the
//! database behind them is slow) is no reason to move traffic, and lowering every weight
//! together would change nothing. Comparing with the *other* endpoints' median (leave one out)
//! rather than everyone's keeps a two-endpoint service meaningful: with everyone's median, the
//! slow one of two is compared with the mean of itself and the fast one.
//!
//! Each signal gives a factor in (0, 1]; the target is [`FULL_WEIGHT`] times the smallest
//! factor. Factors are **continuous** in the signal (1 at the tolerance, then falling in
//! inverse proportion): a target that jumped from full to two thirds as a signal crossed its
//! tolerance would make a weight that moves the signal (less traffic, less queueing) hop across
//! the tolerance for ever. Continuity gives the loop a fixed point to settle on.

use plexus_protocol::{Evidence, NodeId, ServiceDecisions, FULL_WEIGHT, MIN_WEIGHT};

use super::WeightSettings;
use crate::decide::{evidence, median, ms, percent};
use crate::gossip::view::ServiceEndpoint;

/// The signal that set a target below full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    P99,
    P50,
    ErrorRate,
    ShedRate,
    Utilization,
}

impl Signal {
    /// The signal's name in evidence.
    pub fn label(self) -> &'static str {
        match self {
            Self::P99 => "p99_us",
            Self::P50 => "p50_us",
            Self::ErrorRate => "error_rate",
            Self::ShedRate => "shed_rate",
            Self::Utilization => "utilization",
        }
    }
}

/// Why an endpoint's target is what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// The service is not ready there: [`MIN_WEIGHT`].
    NotReady,
    /// Too little traffic to judge (or not routable): the weight stays.
    NoEvidence { requests_per_sec: f64, needed: f64 },
    /// Within every tolerance of its peers (or it has no peers to compare with).
    Healthy,
    /// One signal is out of line with the peers' median.
    OutOfLine {
        signal: Signal,
        value: f64,
        median: f64,
    },
}

/// One endpoint's target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub node: String,
    /// `None` when there is no evidence: keep the committed weight.
    pub weight: Option<u32>,
    pub cause: Cause,
    /// Its p99 and the peers' median p99, when both are known (for the evidence).
    pub p99: Option<(f64, f64)>,
}

impl Target {
    /// What the target rests on, in the mesh's words: `node-b p99 9.8 ms is 4.1x its peers'
    /// median 2.4 ms`.
    pub fn describe(&self) -> String {
        let node = &self.node;
        match self.cause {
            Cause::NotReady => format!("{node} is not ready"),
            Cause::NoEvidence {
                requests_per_sec,
                needed,
            } => format!("{node} serves {requests_per_sec:.1} req/s (< {needed:.2}): no evidence"),
            Cause::Healthy => match self.p99 {
                Some((p99, median)) => format!(
                    "{node} p99 {} is in line with its peers' median {}",
                    ms(p99),
                    ms(median)
                ),
                None => format!("{node} is in line with its peers"),
            },
            Cause::OutOfLine {
                signal,
                value,
                median,
            } => match signal {
                Signal::P99 | Signal::P50 => format!(
                    "{node} {} {} is {:.1}x its peers' median {}",
                    if signal == Signal::P99 { "p99" } else { "p50" },
                    ms(value),
                    value / median,
                    ms(median)
                ),
                Signal::ErrorRate => format!(
                    "{node} error rate {} vs its peers' median {}",
                    percent(value),
                    percent(median)
                ),
                Signal::ShedRate => format!(
                    "{node} sheds {} of requests vs its peers' median {}",
                    percent(value),
                    percent(median)
                ),
                Signal::Utilization => format!(
                    "{node} is {:.0}% busy vs its peers' median {:.0}%",
                    value * 100.0,
                    median * 100.0
                ),
            },
        }
    }

    /// The evidence for a decision that moves this endpoint.
    pub fn evidence(&self) -> Vec<Evidence> {
        let node = self.node.as_str();
        match self.cause {
            Cause::NotReady => vec![evidence(node, "ready", 0.0, None)],
            Cause::NoEvidence {
                requests_per_sec,
                needed,
            } => vec![evidence(
                node,
                "requests_per_sec",
                requests_per_sec,
                Some(needed),
            )],
            Cause::Healthy => self
                .p99
                .map(|(p99, median)| evidence(node, "p99_us", p99, Some(median)))
                .into_iter()
                .collect(),
            Cause::OutOfLine {
                signal,
                value,
                median,
            } => vec![evidence(node, signal.label(), value, Some(median))],
        }
    }
}

/// The load signals of one endpoint with evidence.
#[derive(Debug, Clone, Copy)]
struct Load {
    p99: f64,
    p50: f64,
    error_rate: f64,
    shed_rate: f64,
    /// In flight over the concurrency limit (or the capacity); `None` when neither is known.
    utilization: Option<f64>,
}

impl Load {
    fn of(e: &ServiceEndpoint) -> Self {
        let requests = f64::from(e.requests_per_sec.max(0.0));
        let errors = f64::from(e.errors_per_sec.max(0.0));
        let shed = f64::from(e.shed_per_sec.max(0.0));
        let limit = if e.concurrency_limit > 0 {
            e.concurrency_limit
        } else {
            e.capacity
        };
        Self {
            p99: f64::from(e.p99_us),
            p50: f64::from(e.p50_us),
            error_rate: if requests > 0.0 {
                (errors / requests).min(1.0)
            } else {
                0.0
            },
            shed_rate: if requests + shed > 0.0 {
                shed / (requests + shed)
            } else {
                0.0
            },
            utilization: (limit > 0).then(|| (f64::from(e.in_flight) / f64::from(limit)).min(1.0)),
        }
    }
}

/// The traffic an endpoint needs for its load to count as evidence: the settings' floor scaled
/// by its committed share, because an endpoint weighted down to a tenth gets about a tenth of
/// the traffic; with an unscaled floor an endpoint weighted down could never show that it
/// recovered.
pub fn evidence_floor(settings: &WeightSettings, weight: u32) -> f64 {
    settings.min_requests_per_sec * f64::from(weight) / f64::from(FULL_WEIGHT)
}

/// The committed weight of an endpoint known by its gossiped node ID.
pub(crate) fn committed_weight(committed: &ServiceDecisions, node: &str) -> u32 {
    NodeId::new(node)
        .map(|n| committed.weight(&n))
        .unwrap_or(FULL_WEIGHT)
}

/// Every endpoint's target, in the order given.
pub fn targets(
    endpoints: &[ServiceEndpoint],
    committed: &ServiceDecisions,
    settings: &WeightSettings,
) -> Vec<Target> {
    let weights: Vec<u32> = endpoints
        .iter()
        .map(|e| committed_weight(committed, &e.node_id))
        .collect();
    let judged: Vec<Option<Load>> = endpoints
        .iter()
        .zip(&weights)
        .map(|(e, weight)| {
            let enough = f64::from(e.requests_per_sec) >= evidence_floor(settings, *weight)
                && e.requests_per_sec > 0.0;
            (e.ready && e.routable && enough).then(|| Load::of(e))
        })
        .collect();
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let node = e.node_id.clone();
            if !e.ready {
                return Target {
                    node,
                    weight: Some(MIN_WEIGHT),
                    cause: Cause::NotReady,
                    p99: None,
                };
            }
            let Some(load) = judged[i] else {
                return Target {
                    node,
                    weight: None,
                    cause: Cause::NoEvidence {
                        requests_per_sec: f64::from(e.requests_per_sec),
                        needed: evidence_floor(settings, weights[i]),
                    },
                    p99: None,
                };
            };
            let peers: Vec<Load> = judged
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .filter_map(|(_, l)| *l)
                .collect();
            judge(node, load, &peers, settings)
        })
        .collect()
}

/// One endpoint with evidence against its peers.
fn judge(node: String, load: Load, peers: &[Load], settings: &WeightSettings) -> Target {
    let p99_median = median(peers.iter().map(|p| p.p99));
    let mut worst: Option<(f64, Signal, f64, f64)> = None;
    let mut consider = |factor: f64, signal: Signal, value: f64, median: f64| {
        if factor < 1.0 && worst.is_none_or(|(f, ..)| factor < f) {
            worst = Some((factor, signal, value, median));
        }
    };
    let floor = f64::from(settings.latency_floor_us);
    for (signal, value, peer_median) in [
        (Signal::P99, load.p99, p99_median),
        (Signal::P50, load.p50, median(peers.iter().map(|p| p.p50))),
    ] {
        if let Some(m) = peer_median.filter(|m| *m > 0.0) {
            let ratio = value / m;
            if ratio > settings.latency_tolerance && value - m > floor {
                consider(settings.latency_tolerance / ratio, signal, value, m);
            }
        }
    }
    for (signal, value, peer_median, tolerance) in [
        (
            Signal::ErrorRate,
            load.error_rate,
            median(peers.iter().map(|p| p.error_rate)),
            settings.error_rate_tolerance,
        ),
        (
            Signal::ShedRate,
            load.shed_rate,
            median(peers.iter().map(|p| p.shed_rate)),
            settings.shed_rate_tolerance,
        ),
    ] {
        if let Some(m) = peer_median {
            let excess = value - m;
            if excess > tolerance {
                consider(tolerance / excess, signal, value, m);
            }
        }
    }
    if let Some(u) = load.utilization {
        if let Some(m) = median(peers.iter().filter_map(|p| p.utilization)) {
            let (spare, peer_spare) = (1.0 - u, 1.0 - m);
            if u >= settings.busy_utilization && peer_spare > 0.0 {
                let factor = spare / (peer_spare * settings.spare_tolerance);
                consider(factor.max(0.0), Signal::Utilization, u, m);
            }
        }
    }
    let p99 = p99_median.map(|m| (load.p99, m));
    match worst {
        None => Target {
            node,
            weight: Some(FULL_WEIGHT),
            cause: Cause::Healthy,
            p99,
        },
        Some((factor, signal, value, median)) => Target {
            node,
            weight: Some(
                ((f64::from(FULL_WEIGHT) * factor).round() as u32).clamp(MIN_WEIGHT, FULL_WEIGHT),
            ),
            cause: Cause::OutOfLine {
                signal,
                value,
                median,
            },
            p99,
        },
    }
}

#[cfg(test)]
mod tests;
