//! What `/v1/routes` shows of one upstream: each endpoint's EWMA latency, in-flight count,
//! weight and ejection state, the committed routing and the retry budget.

use std::net::SocketAddr;

use serde::Serialize;
use tokio::time::Instant;

use super::Route;
use crate::policy::outlier::Ejection;

/// `/v1/routes`: one upstream.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReading {
    pub service: String,
    pub listen: SocketAddr,
    pub protocol: &'static str,
    pub discovery: &'static str,
    pub endpoints: Vec<EndpointJson>,
    /// The committed weights' epoch (0 until the decision log has weighted this service).
    pub weights_epoch: u64,
    /// The canary's committed share, while a release is under way.
    pub canary_share_percent: Option<u8>,
    pub retry_budget: BudgetJson,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointJson {
    pub address: SocketAddr,
    pub node_id: Option<String>,
    pub ewma_ms: f64,
    pub in_flight: u32,
    pub weight: f64,
    pub state: &'static str,
    /// Seconds until an ejection ends.
    pub ejected_for_s: Option<f64>,
    pub ejections: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetJson {
    pub requests: u64,
    pub retries: u64,
    pub available: u64,
    pub ratio: f64,
    pub min_per_second: u32,
}

impl Route {
    /// `/v1/routes`: the endpoints as of now (gossip's latest list, even before any traffic).
    pub fn reading(&self) -> RouteReading {
        let now = Instant::now();
        let mut state = self.lock();
        self.refresh(&mut state, now);
        let view = state.view.borrow().clone();
        let members: Vec<(SocketAddr, String)> = view
            .members
            .iter()
            .map(|m| (m.address, m.node_id.clone()))
            .collect();
        let endpoints = state
            .endpoints
            .readings(now)
            .into_iter()
            .map(|e| EndpointJson {
                address: e.addr,
                node_id: members
                    .iter()
                    .find(|(a, _)| *a == e.addr)
                    .map(|(_, n)| n.clone()),
                ewma_ms: e.cost.as_secs_f64() * 1e3,
                in_flight: e.in_flight,
                weight: e.weight,
                state: e.state.label(),
                ejected_for_s: match e.state {
                    Ejection::Ejected { until } => {
                        Some(until.saturating_duration_since(now).as_secs_f64())
                    }
                    _ => None,
                },
                ejections: e.ejections,
            })
            .collect();
        let budget = state.budget.reading(now);
        let routing = state.routing.clone();
        drop(state);
        RouteReading {
            service: self.upstream.service.to_string(),
            listen: self.upstream.listen,
            protocol: self.protocol().as_label(),
            discovery: if self.upstream.endpoints.is_empty() {
                "gossip"
            } else {
                "static"
            },
            endpoints,
            weights_epoch: routing.epoch,
            canary_share_percent: routing.split.as_ref().map(|s| s.share_percent),
            retry_budget: BudgetJson {
                requests: budget.requests,
                retries: budget.retries,
                available: budget.available,
                ratio: self.upstream.requests.retry_budget.ratio,
                min_per_second: self.upstream.requests.retry_budget.min_per_second,
            },
        }
    }
}
