//! Builders shared by the policies' tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use plexus_protocol::{
    AppProtocol, CommittedState, Decision, DecisionKind, NodeId, ServiceDecisions, ServiceName,
};

use super::Proposer;
use crate::gossip::view::{MemberState, ServiceEndpoint};

pub const S: Duration = Duration::from_secs(1);

/// A ready, routable endpoint on `node` serving 100 req/s, no errors, p50 1 ms, p99 2 ms,
/// 4 in flight of a limit of 100, version `v1`.
pub fn endpoint(node: &str) -> ServiceEndpoint {
    ServiceEndpoint {
        node_id: node.to_owned(),
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000)),
        state: MemberState::Alive,
        zone: "z1".into(),
        version: "v1".into(),
        ready: true,
        routable: true,
        requests_per_sec: 100.0,
        errors_per_sec: 0.0,
        p50_us: 1_000,
        p99_us: 2_000,
        in_flight: 4,
        capacity: 0,
        protocol: AppProtocol::Http,
        concurrency_limit: 100,
        shed_per_sec: 0.0,
    }
}

pub fn service() -> ServiceName {
    ServiceName::new("payments").unwrap()
}

pub fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

pub fn proposer() -> Proposer {
    Proposer {
        node: node("leader"),
        now_ms: 1_700_000_000_000,
    }
}

/// A committed state that applies decisions as the log would, one index after another.
#[derive(Debug, Default)]
pub struct Log {
    pub state: CommittedState,
}

impl Log {
    pub fn commit(&mut self, decision: &Decision) {
        decision.validate().expect("a valid decision");
        let index = self.state.applied_index + 1;
        self.state.apply(index, 1, decision);
    }

    pub fn service(&self) -> ServiceDecisions {
        self.state
            .services
            .get(&service())
            .cloned()
            .unwrap_or_default()
    }
}

/// The weights a decision gives, by node name (absent: full).
pub fn weight_of(decision: &Decision, name: &str) -> u32 {
    let DecisionKind::Weights { weights, .. } = &decision.kind else {
        panic!("not a weights decision: {decision:?}");
    };
    weights
        .iter()
        .find(|w| w.node.as_str() == name)
        .map_or(plexus_protocol::FULL_WEIGHT, |w| w.weight)
}

/// A start instant far enough from the clock's origin for `checked_sub` of any window.
pub fn start() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
