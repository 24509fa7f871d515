//! What the decision log's committed state means for one upstream, pure: each endpoint's weight
//! and the canary split. [`plan`] runs whenever gossip or the committed state changes; the
//! balancer then weights P2C with the weights, and [`CanarySplit::exclude`] draws which version
//! an attempt goes to, so a canary at 20 % gets one attempt in five whatever P2C would prefer.

use std::net::SocketAddr;

use plexus_protocol::{CanaryPhase, CommittedState, NodeId, ServiceName, FULL_WEIGHT};

use crate::gossip::MeshView;

/// One upstream's routing as committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommittedRouting {
    /// (endpoint, weight in 0..=1) for every endpoint gossip lists for the service.
    pub weights: Vec<(SocketAddr, f64)>,
    pub split: Option<CanarySplit>,
    /// The weights' epoch (how many weight decisions the log has applied for the service).
    pub epoch: u64,
}

/// A canary release in progress: which endpoints run the canary, and its share.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySplit {
    pub share_percent: u8,
    pub canary: Vec<SocketAddr>,
    pub baseline: Vec<SocketAddr>,
}

impl CanarySplit {
    /// The endpoints an attempt must avoid, given a draw in 0..100: the canary's when the draw
    /// falls outside its share, the baseline's otherwise.
    pub fn exclude(&self, draw: u8) -> &[SocketAddr] {
        if draw < self.share_percent {
            &self.baseline
        } else {
            &self.canary
        }
    }
}

/// Weights and split for `service` from the committed state and the endpoints gossip knows.
pub fn plan(
    service: &ServiceName,
    view: &MeshView,
    committed: &CommittedState,
) -> CommittedRouting {
    let Some(decided) = committed.services.get(service) else {
        return CommittedRouting::default();
    };
    let endpoints = view.service_endpoints(service);
    let weights = endpoints
        .iter()
        .map(|e| {
            let weight = NodeId::new(e.node_id.clone()).map_or(FULL_WEIGHT, |n| decided.weight(&n));
            (e.address, f64::from(weight) / f64::from(FULL_WEIGHT))
        })
        .collect();
    let split = decided.canary.as_ref().and_then(|canary| {
        let share_percent = match canary.phase {
            CanaryPhase::Progressing => canary.share_percent,
            CanaryPhase::Promoted => 100,
            CanaryPhase::RolledBack => 0,
        };
        let (canary_eps, baseline): (Vec<_>, Vec<_>) = endpoints
            .iter()
            .partition(|e| e.version == canary.policy.canary);
        let split = CanarySplit {
            share_percent,
            canary: canary_eps.iter().map(|e| e.address).collect(),
            baseline: baseline.iter().map(|e| e.address).collect(),
        };
        (!split.canary.is_empty()).then_some(split)
    });
    CommittedRouting {
        weights,
        split,
        epoch: decided.weights_epoch,
    }
}

/// The addresses of members the decision log has quarantined: they leave every endpoint set.
pub fn quarantined_addresses(view: &MeshView, committed: &CommittedState) -> Vec<SocketAddr> {
    let quarantined = &committed.trust.quarantined;
    if quarantined.is_empty() {
        return Vec::new();
    }
    view.members
        .iter()
        .filter(|m| NodeId::new(m.node_id.as_str()).is_ok_and(|n| quarantined.contains_key(&n)))
        .map(|m| m.address)
        .collect()
}
