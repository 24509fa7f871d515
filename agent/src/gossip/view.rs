//! Membership as this agent sees it: who is alive, suspected, dead or gone, and what each
//! verified member publishes. A pure state machine: [`Membership::observe`] takes what chitchat
//! knows at one instant (plus graceful leaves heard directly) and returns the new [`MeshView`]
//! and the state changes since the last observation.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plexus_protocol::{DependencyEdge, NodeSummary, ServiceName};
use serde::Serialize;

/// A member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Heartbeats arrive on time.
    Alive,
    /// Alive by the failure detector, but no new heartbeat for a while: still routed to.
    Suspected,
    /// The failure detector gave up on it: out of every endpoint set.
    Dead,
    /// It announced a graceful leave: out of every endpoint set at once.
    Left,
}

impl MemberState {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspected => "suspected",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }

    /// Whether traffic may be sent to the member.
    pub fn routable(self) -> bool {
        matches!(self, Self::Alive | Self::Suspected)
    }
}

/// What chitchat knows about one node at one instant, after seal checks.
#[derive(Debug, Clone)]
pub struct NodeObservation {
    pub node_id: String,
    pub generation: u64,
    pub address: SocketAddr,
    pub heartbeat: u64,
    /// The failure detector considers it live (always true for this node itself).
    pub live: bool,
    /// Its verified summary, or `None` when it has published none that verifies.
    pub summary: Option<NodeSummary>,
    pub edges: Vec<DependencyEdge>,
    /// Its verified view of the decision log, when it is a voter that publishes one.
    pub consensus: Option<plexus_protocol::ConsensusSummary>,
    /// Its verified reports about its peers (quarantine's evidence).
    pub observations: Vec<plexus_protocol::PeerReport>,
}

/// One member of the mesh in the view.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub node_id: String,
    pub generation: u64,
    pub address: SocketAddr,
    pub state: MemberState,
    /// Whether this is the agent's own node.
    pub local: bool,
    /// Time since its heartbeat last advanced.
    #[serde(serialize_with = "millis")]
    pub heartbeat_age: Duration,
    pub summary: Option<NodeSummary>,
    pub edges: Vec<DependencyEdge>,
    /// Its verified view of the decision log, when it is a voter that publishes one.
    #[serde(skip)]
    pub consensus: Option<plexus_protocol::ConsensusSummary>,
    /// What it reports about its peers (sealed by it, so each observer speaks for itself).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<plexus_protocol::PeerReport>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One member hosting one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceEndpoint {
    pub node_id: String,
    pub address: SocketAddr,
    pub state: MemberState,
    pub zone: String,
    pub version: String,
    pub ready: bool,
    /// Whether callers route to it now: member routable, not leaving, service ready.
    pub routable: bool,
    pub requests_per_sec: f32,
    pub errors_per_sec: f32,
    pub p50_us: u32,
    pub p99_us: u32,
    pub in_flight: u32,
    pub capacity: u32,
    pub protocol: plexus_protocol::AppProtocol,
    pub concurrency_limit: u32,
    pub shed_per_sec: f32,
}

/// One caller-to-callee edge of the whole mesh, summed over the callers' agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphEdge {
    pub caller: String,
    pub callee: String,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    /// Agents that reported this edge.
    pub reporters: usize,
}

/// The mesh as this agent sees it at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshView {
    /// Members sorted by node ID (one entry per node: its newest generation).
    pub members: Vec<Member>,
}

impl MeshView {
    /// Addresses of the agents that serve `service` now, sorted by node ID.
    pub fn endpoints(&self, service: &ServiceName) -> Vec<SocketAddr> {
        self.service_endpoints(service)
            .into_iter()
            .filter(|e| e.routable)
            .map(|e| e.address)
            .collect()
    }

    /// How `service` is carried, as its serving agents say (`None` when nobody serves it).
    pub fn protocol(&self, service: &ServiceName) -> Option<plexus_protocol::AppProtocol> {
        self.members
            .iter()
            .filter(|m| m.state.routable())
            .filter_map(|m| m.summary.as_ref())
            .flat_map(|s| &s.services)
            .find(|s| &s.name == service)
            .map(|s| s.protocol)
    }

    /// Every member that says it hosts `service`, routable or not.
    pub fn service_endpoints(&self, service: &ServiceName) -> Vec<ServiceEndpoint> {
        self.services().remove(service).unwrap_or_default()
    }

    /// Every service any member hosts, with its endpoints (dead and left members excluded).
    pub fn services(&self) -> BTreeMap<ServiceName, Vec<ServiceEndpoint>> {
        let mut out: BTreeMap<ServiceName, Vec<ServiceEndpoint>> = BTreeMap::new();
        for member in self.members.iter().filter(|m| m.state.routable()) {
            let Some(summary) = &member.summary else {
                continue;
            };
            for service in &summary.services {
                out.entry(service.name.clone())
                    .or_default()
                    .push(ServiceEndpoint {
                        node_id: member.node_id.clone(),
                        address: member.address,
                        state: member.state,
                        zone: summary.zone.clone(),
                        version: service.version.clone(),
                        ready: service.ready,
                        routable: service.ready && !summary.leaving,
                        requests_per_sec: service.requests_per_sec,
                        errors_per_sec: service.errors_per_sec,
                        p50_us: service.p50_us,
                        p99_us: service.p99_us,
                        in_flight: service.in_flight,
                        capacity: service.capacity,
                        protocol: service.protocol,
                        concurrency_limit: service.concurrency_limit,
                        shed_per_sec: service.shed_per_sec,
                    });
            }
        }
        out
    }

    /// The dependency map: every edge reported by a live member, summed per (caller, callee).
    pub fn graph(&self) -> Vec<GraphEdge> {
        let mut edges: BTreeMap<(String, String), GraphEdge> = BTreeMap::new();
        for member in self.members.iter().filter(|m| m.state.routable()) {
            for edge in &member.edges {
                let key = (edge.caller.clone(), edge.callee.to_string());
                let entry = edges.entry(key).or_insert_with(|| GraphEdge {
                    caller: edge.caller.clone(),
                    callee: edge.callee.to_string(),
                    requests_per_sec: 0.0,
                    errors_per_sec: 0.0,
                    reporters: 0,
                });
                entry.requests_per_sec += f64::from(edge.requests_per_sec);
                entry.errors_per_sec += f64::from(edge.errors_per_sec);
                entry.reporters += 1;
            }
        }
        edges.into_values().collect()
    }

    /// Members other than this node that are routable.
    pub fn live_peers(&self) -> usize {
        self.members
            .iter()
            .filter(|m| !m.local && m.state.routable())
            .count()
    }
}

#[derive(Debug)]
struct Tracked {
    generation: u64,
    heartbeat: u64,
    heartbeat_changed: Instant,
    state: MemberState,
}

/// Tracks member states across observations.
#[derive(Debug)]
pub struct Membership {
    self_id: String,
    suspect_after: Duration,
    tracked: HashMap<String, Tracked>,
    /// Graceful leaves heard directly: node ID to the generation that left.
    leaves: HashMap<String, u64>,
}

impl Membership {
    /// `suspect_after`: how long without a new heartbeat before a live member is suspected.
    pub fn new(self_id: impl Into<String>, suspect_after: Duration) -> Self {
        Self {
            self_id: self_id.into(),
            suspect_after,
            tracked: HashMap::new(),
            leaves: HashMap::new(),
        }
    }

    /// Records a graceful leave the node announced itself.
    pub fn left(&mut self, node_id: &str, generation: u64) {
        self.leaves.insert(node_id.to_owned(), generation);
    }

    /// Folds in one observation of every node chitchat knows. Returns the view and the
    /// (node, new state) transitions since the previous call.
    pub fn observe(
        &mut self,
        now: Instant,
        nodes: Vec<NodeObservation>,
    ) -> (MeshView, Vec<(String, MemberState)>) {
        // One entry per node ID: its newest generation.
        let mut newest: BTreeMap<String, NodeObservation> = BTreeMap::new();
        for node in nodes {
            match newest.get(&node.node_id) {
                Some(seen) if seen.generation >= node.generation => {}
                _ => {
                    newest.insert(node.node_id.clone(), node);
                }
            }
        }
        let mut transitions = Vec::new();
        let mut members = Vec::with_capacity(newest.len());
        for (node_id, node) in newest {
            let local = node_id == self.self_id;
            let tracked = self
                .tracked
                .entry(node_id.clone())
                .or_insert_with(|| Tracked {
                    generation: node.generation,
                    heartbeat: node.heartbeat,
                    heartbeat_changed: now,
                    state: MemberState::Alive,
                });
            let first_sight = tracked.generation != node.generation;
            if first_sight || tracked.heartbeat != node.heartbeat {
                tracked.generation = node.generation;
                tracked.heartbeat = node.heartbeat;
                tracked.heartbeat_changed = now;
            }
            let heartbeat_age = now.saturating_duration_since(tracked.heartbeat_changed);
            let announced_leave = self.leaves.get(&node_id) == Some(&node.generation)
                || node.summary.as_ref().is_some_and(|s| s.leaving);
            let state = if local {
                MemberState::Alive
            } else if announced_leave {
                MemberState::Left
            } else if !node.live {
                MemberState::Dead
            } else if heartbeat_age > self.suspect_after {
                MemberState::Suspected
            } else {
                MemberState::Alive
            };
            if state != tracked.state || first_sight {
                if state != tracked.state {
                    transitions.push((node_id.clone(), state));
                }
                tracked.state = state;
            }
            members.push(Member {
                node_id,
                generation: node.generation,
                address: node.address,
                state,
                local,
                heartbeat_age,
                summary: node.summary,
                edges: node.edges,
                consensus: node.consensus,
                observations: node.observations,
            });
        }
        let known: std::collections::HashSet<&str> =
            members.iter().map(|m| m.node_id.as_str()).collect();
        self.tracked.retain(|id, _| known.contains(id.as_str()));
        self.leaves.retain(|id, _| known.contains(id.as_str()));
        (MeshView { members }, transitions)
    }
}

#[cfg(test)]
mod tests;
