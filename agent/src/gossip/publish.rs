//! What this node publishes about itself, and when.
//!
//! Every gossip interval the publisher reads the load book and the host, builds a
//! [`NodeSummary`] and [`DependencyEdges`], and publishes each only when it changed beyond a
//! threshold ([`summary_changed`], [`edges_changed`]): a flip of readiness, version or the set
//! of services is published at once; a rate, latency or load figure only when it moved by a
//! noticeable share. Gossip then carries a handful of changes per node, not a stream of noise.

use std::time::Instant;

use plexus_protocol::{
    DependencyEdge, DependencyEdges, NodeSummary, PeerObservations, ServiceSummary,
};

use crate::config::LocalService;
use crate::telemetry::{EdgeReading, HostUsage, HostedReading};

/// A relative change smaller than this (and an absolute one below the floors) is noise.
const RELATIVE: f32 = 0.2;
const RATE_FLOOR: f32 = 0.5;
const LATENCY_FLOOR_US: u32 = 500;
const PERMILLE_STEP: u16 = 50;

/// The parts of a summary that do not come from load readings.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub zone: String,
    /// `[consensus]` is configured: this node may vote.
    pub voter_eligible: bool,
    pub cert_serial: Vec<u8>,
    pub cert_not_after: i64,
    pub services: Vec<LocalService>,
}

/// Builds this node's summary from its facts and current readings.
pub fn build_summary(
    facts: &NodeFacts,
    host: HostUsage,
    hosted: &[HostedReading],
    leaving: bool,
) -> NodeSummary {
    let services = facts
        .services
        .iter()
        .take(plexus_protocol::gossip::MAX_SERVICES_PER_NODE)
        .map(|service| {
            let reading = hosted.iter().find(|r| r.service == service.name);
            let window = reading.map(|r| r.window).unwrap_or_default();
            ServiceSummary {
                name: service.name.clone(),
                version: truncate(service.version.as_deref().unwrap_or("")),
                ready: reading.is_some_and(|r| r.ready),
                requests_per_sec: window.requests_per_sec as f32,
                errors_per_sec: window.errors_per_sec as f32,
                p50_us: micros(window.p50),
                p99_us: micros(window.p99),
                in_flight: reading.map_or(0, |r| r.in_flight),
                capacity: reading.map_or(service.capacity, |r| r.capacity),
                protocol: service.protocol.wire(),
                concurrency_limit: reading.map_or(service.capacity, |r| r.concurrency_limit),
                shed_per_sec: reading.map_or(0.0, |r| r.shed_per_sec),
            }
        })
        .collect();
    NodeSummary {
        zone: truncate(&facts.zone),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        host_cpu_permille: host.host_cpu_permille,
        host_memory_permille: host.host_memory_permille,
        agent_cpu_permille: host.agent_cpu_permille,
        agent_rss_kib: host.agent_rss_kib,
        cert_serial: facts.cert_serial.iter().take(20).copied().collect(),
        cert_not_after: facts.cert_not_after,
        leaving,
        voter_eligible: facts.voter_eligible,
        services,
    }
}

/// The busiest edges, as many as a node may publish.
pub fn build_edges(readings: &[EdgeReading]) -> DependencyEdges {
    DependencyEdges {
        edges: readings
            .iter()
            .take(plexus_protocol::gossip::MAX_EDGES_PER_NODE)
            .map(|r| DependencyEdge {
                caller: truncate(&r.caller),
                callee: r.callee.clone(),
                requests_per_sec: r.window.requests_per_sec as f32,
                errors_per_sec: r.window.errors_per_sec as f32,
            })
            .collect(),
    }
}

fn truncate(label: &str) -> String {
    let mut end = label.len().min(plexus_protocol::gossip::MAX_LABEL_LEN);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    label[..end].chars().filter(|c| !c.is_control()).collect()
}

fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn moved(old: f32, new: f32, floor: f32) -> bool {
    let delta = (new - old).abs();
    delta >= floor && delta > old.abs().max(new.abs()) * RELATIVE
}

/// Whether `new` differs from the published `old` enough to publish it.
pub fn summary_changed(old: &NodeSummary, new: &NodeSummary) -> bool {
    let facts = |s: &NodeSummary| {
        (
            s.zone.clone(),
            s.agent_version.clone(),
            s.cert_serial.clone(),
            s.cert_not_after,
            s.leaving,
        )
    };
    if facts(old) != facts(new) || old.services.len() != new.services.len() {
        return true;
    }
    let step = |a: u16, b: u16| a.abs_diff(b) >= PERMILLE_STEP;
    if step(old.host_cpu_permille, new.host_cpu_permille)
        || step(old.host_memory_permille, new.host_memory_permille)
        || step(old.agent_cpu_permille, new.agent_cpu_permille)
        || moved(old.agent_rss_kib as f32, new.agent_rss_kib as f32, 4096.0)
    {
        return true;
    }
    old.services.iter().zip(&new.services).any(|(a, b)| {
        a.name != b.name
            || a.version != b.version
            || a.ready != b.ready
            || a.capacity != b.capacity
            || a.protocol != b.protocol
            || moved(a.shed_per_sec, b.shed_per_sec, RATE_FLOOR)
            || moved(
                a.concurrency_limit as f32,
                b.concurrency_limit as f32,
                (b.capacity as f32 / 10.0).max(2.0),
            )
            || moved(a.requests_per_sec, b.requests_per_sec, RATE_FLOOR)
            || moved(a.errors_per_sec, b.errors_per_sec, RATE_FLOOR)
            || moved(a.p50_us as f32, b.p50_us as f32, LATENCY_FLOOR_US as f32)
            || moved(a.p99_us as f32, b.p99_us as f32, LATENCY_FLOOR_US as f32)
            || moved(
                a.in_flight as f32,
                b.in_flight as f32,
                (b.capacity as f32 / 10.0).max(2.0),
            )
    })
}

/// Whether `new` edges differ from the published `old` enough to publish them.
pub fn edges_changed(old: &DependencyEdges, new: &DependencyEdges) -> bool {
    if old.edges.len() != new.edges.len() {
        return true;
    }
    old.edges.iter().zip(&new.edges).any(|(a, b)| {
        a.caller != b.caller
            || a.callee != b.callee
            || moved(a.requests_per_sec, b.requests_per_sec, RATE_FLOOR)
            || moved(a.errors_per_sec, b.errors_per_sec, RATE_FLOOR)
    })
}

/// Remembers what was published, and when, so the publisher sends at most one update per
/// interval and only meaningful ones.
#[derive(Debug)]
pub struct PublishGate<T> {
    published: Option<T>,
    at: Option<Instant>,
}

impl<T> Default for PublishGate<T> {
    fn default() -> Self {
        Self {
            published: None,
            at: None,
        }
    }
}

impl<T: Clone> PublishGate<T> {
    /// Whether `next` should be published now; if so, it becomes the published value.
    pub fn offer(
        &mut self,
        now: Instant,
        min_gap: std::time::Duration,
        next: &T,
        changed: impl Fn(&T, &T) -> bool,
    ) -> bool {
        if let Some(at) = self.at {
            if now.saturating_duration_since(at) < min_gap {
                return false;
            }
        }
        let due = match &self.published {
            None => true,
            Some(old) => changed(old, next),
        };
        if due {
            self.published = Some(next.clone());
            self.at = Some(now);
        }
        due
    }
}

/// Publishes this node's [`PeerObservations`] in gossip at the publisher's next round (sealed
/// like every value). Quarantine's reporter decides when they changed enough.
#[derive(Clone)]
pub struct ObservationsPublisher(tokio::sync::watch::Sender<Option<Vec<u8>>>);

impl ObservationsPublisher {
    pub fn new(sender: tokio::sync::watch::Sender<Option<Vec<u8>>>) -> Self {
        Self(sender)
    }

    pub fn publish(&self, observations: &PeerObservations) {
        match observations.encode() {
            Ok(payload) => {
                self.0.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&payload);
                    if changed {
                        *current = Some(payload);
                    }
                    changed
                });
            }
            Err(reason) => tracing::error!(%reason, "observations over budget; not published"),
        }
    }
}

#[cfg(test)]
mod tests;
