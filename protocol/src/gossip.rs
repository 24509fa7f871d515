//! What agents gossip: the frames that carry gossip between two agents, and the summaries each
//! agent publishes about itself.
//!
//! Gossip is chitchat's scuttlebutt protocol. Its messages travel inside a [`GossipMessage`]
//! frame, one per unidirectional QUIC stream, so only peers whose certificate verified can
//! speak it. A [`GossipMessage`] names the node that sends it; the receiving agent compares that
//! name with the node ID in the sender's certificate before chitchat sees a byte.
//!
//! Scuttlebutt relays every node's state through every other node, so the transport alone
//! cannot stop a relay from forging a third node's state. Every value a node publishes about
//! itself is therefore a [`SealedValue`]: the payload plus the node's signature over
//! [`sealed_message`], which binds node ID, generation, key and chitchat version. A value whose
//! seal does not verify against the certificate the same node published is ignored and counted.
//!
//! Payloads are bincode 2 like every other Plexus message, with a byte budget each
//! ([`SUMMARY_BUDGET`], [`EDGES_BUDGET`]) that the publisher enforces and the reader checks.

use serde::{Deserialize, Serialize};

use crate::frame::{bincode_config, decode_exact, encode_within, FrameMessage, FrameType};
use crate::identity::{NodeId, ServiceName};

/// Largest encoded [`NodeSummary`] a node may publish, in bytes (before base64).
pub const SUMMARY_BUDGET: usize = 2048;
/// Largest encoded [`DependencyEdges`] a node may publish, in bytes (before base64).
pub const EDGES_BUDGET: usize = 2048;
/// Largest chitchat message one gossip frame may carry.
pub const MAX_GOSSIP_MESSAGE: usize = 256 * 1024;
/// Most services one node summary lists.
pub const MAX_SERVICES_PER_NODE: usize = 32;
/// Most dependency edges one node publishes (the busiest are kept).
pub const MAX_EDGES_PER_NODE: usize = 48;
/// Longest free-text field (zone, version strings) in a summary.
pub const MAX_LABEL_LEN: usize = 64;

/// One chitchat message from one node, as a frame on a unidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMessage {
    /// The node ID the sender gossips under; must equal the one in its certificate.
    pub sender: NodeId,
    /// The sender's chitchat generation (its start time), so a restart is a new incarnation.
    pub generation: u64,
    /// chitchat's own encoding of the message.
    pub chitchat: Vec<u8>,
}

impl FrameMessage for GossipMessage {
    const FRAME_TYPE: FrameType = FrameType::Gossip;
    const MAX_PAYLOAD: usize = MAX_GOSSIP_MESSAGE + 1024;

    fn validate(&self) -> Result<(), String> {
        if self.chitchat.len() > MAX_GOSSIP_MESSAGE {
            return Err(format!(
                "chitchat message of {} bytes exceeds {MAX_GOSSIP_MESSAGE}",
                self.chitchat.len()
            ));
        }
        Ok(())
    }
}

/// A node announcing that it is leaving the mesh on purpose (graceful shutdown). The sender is
/// the node of the connection's certificate; nothing in the message can name another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipLeave {
    /// The generation that is leaving; a later generation of the same node is a new member.
    pub generation: u64,
}

impl FrameMessage for GossipLeave {
    const FRAME_TYPE: FrameType = FrameType::GossipLeave;
    const MAX_PAYLOAD: usize = 16;
}

/// A value a node published about itself, with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    /// The TLS 1.3 signature scheme code (as in rustls' `SignatureScheme`).
    pub scheme: u16,
    /// The signature over [`sealed_message`].
    pub signature: Vec<u8>,
    /// The bincode-encoded value.
    pub payload: Vec<u8>,
}

impl SealedValue {
    /// Largest encoded sealed value.
    pub const MAX_LEN: usize = crate::decision::CONSENSUS_SUMMARY_BUDGET + 512;

    /// Encodes the sealed value (bincode).
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode_config())
            .expect("encoding into a Vec cannot fail for plain data types")
    }

    /// Decodes a sealed value, refusing oversized input and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode_exact(bytes, Self::MAX_LEN)
    }
}

/// The bytes a node signs for one published value: a domain-separation label, then node ID,
/// generation, key and chitchat version, then the payload. A relay can neither move a value to
/// another node, key or incarnation, nor replay an old value under a newer version.
pub fn sealed_message(
    node_id: &str,
    generation: u64,
    key: &str,
    version: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + node_id.len() + key.len() + payload.len());
    message.extend_from_slice(b"plexus gossip value v1\0");
    for field in [node_id.as_bytes(), key.as_bytes()] {
        message.extend_from_slice(&(field.len() as u32).to_be_bytes());
        message.extend_from_slice(field);
    }
    message.extend_from_slice(&generation.to_be_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(payload);
    message
}

/// What a node says about itself and the services it hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The failure domain the operator put this node in (empty when not set).
    pub zone: String,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// Host CPU use over the last interval, per mille of all CPUs.
    pub host_cpu_permille: u16,
    /// Host memory in use, per mille of total.
    pub host_memory_permille: u16,
    /// CPU the agent process used over the last interval, per mille of one CPU.
    pub agent_cpu_permille: u16,
    /// Resident memory of the agent process, KiB.
    pub agent_rss_kib: u32,
    /// Serial number of the node's certificate (big-endian bytes).
    pub cert_serial: Vec<u8>,
    /// When the node's certificate expires, Unix seconds.
    pub cert_not_after: i64,
    /// Set when the node is shutting down on purpose: route nothing new to it.
    pub leaving: bool,
    /// Whether the node may vote in the decision log (it has `[consensus]` configured).
    pub voter_eligible: bool,
    /// The services this node hosts.
    pub services: Vec<ServiceSummary>,
}

/// Health and load of one hosted service, as its serving agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: ServiceName,
    /// The operator's version label (empty when not set).
    pub version: String,
    /// Whether callers should route to it.
    pub ready: bool,
    /// Requests (proxied streams) per second over the recent window.
    pub requests_per_sec: f32,
    /// Failed requests per second over the recent window.
    pub errors_per_sec: f32,
    /// Median latency over the recent window, microseconds.
    pub p50_us: u32,
    /// 99th percentile latency over the recent window, microseconds.
    pub p99_us: u32,
    /// Requests in progress now.
    pub in_flight: u32,
    /// How many requests the serving agent admits at once at most (configured).
    pub capacity: u32,
    /// How traffic to it is carried.
    pub protocol: crate::stream::AppProtocol,
    /// The adaptive concurrency limit now (at most `capacity`).
    pub concurrency_limit: u32,
    /// Requests shed per second over the recent window (over the limit or the capacity).
    pub shed_per_sec: f32,
}

impl NodeSummary {
    /// Encodes the summary, refusing one over [`SUMMARY_BUDGET`].
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        encode_within(self, SUMMARY_BUDGET)
    }

    /// Decodes and checks a summary.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let summary: Self = decode_exact(bytes, SUMMARY_BUDGET)?;
        summary.validate()?;
        Ok(summary)
    }

    fn validate(&self) -> Result<(), String> {
        check_label("zone", &self.zone)?;
        check_label("agent_version", &self.agent_version)?;
        if self.cert_serial.len() > 20 {
            return Err("certificate serial longer than 20 bytes".into());
        }
        if self.services.len() > MAX_SERVICES_PER_NODE {
            return Err(format!(
                "{} services, more than {MAX_SERVICES_PER_NODE}",
                self.services.len()
            ));
        }
        for service in &self.services {
            check_label("service version", &service.version)?;
            check_rate("requests_per_sec", service.requests_per_sec)?;
            check_rate("errors_per_sec", service.errors_per_sec)?;
        }
        Ok(())
    }
}

/// The caller-to-callee edges this node's outbound traffic took recently.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DependencyEdges {
    pub edges: Vec<DependencyEdge>,
}

/// Traffic from one calling service to one called service, seen by the caller's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyEdge {
    pub caller: String,
    pub callee: ServiceName,
    pub requests_per_sec: f32,
    pub errors_per_sec: f32,
}

impl DependencyEdges {
    /// Encodes the edges, refusing more than [`MAX_EDGES_PER_NODE`] or over [`EDGES_BUDGET`].
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        encode_within(self, EDGES_BUDGET)
    }

    /// Decodes and checks edges.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let edges: Self = decode_exact(bytes, EDGES_BUDGET)?;
        edges.validate()?;
        Ok(edges)
    }

    fn validate(&self) -> Result<(), String> {
        if self.edges.len() > MAX_EDGES_PER_NODE {
            return Err(format!(
                "{} edges, more than {MAX_EDGES_PER_NODE}",
                self.edges.len()
            ));
        }
        for edge in &self.edges {
            check_label("caller", &edge.caller)?;
            check_rate("requests_per_sec", edge.requests_per_sec)?;
            check_rate("errors_per_sec", edge.errors_per_sec)?;
        }
        Ok(())
    }
}

/// Largest encoded [`PeerObservations`] a node may publish, in bytes (before base64).
pub const OBSERVATIONS_BUDGET: usize = 2048;
/// Most reports one node publishes at once.
pub const MAX_REPORTS_PER_NODE: usize = 24;

/// What this node currently observes about its peers' behaviour: the evidence quarantine rests
/// on. Each node speaks only for itself (the value is sealed with its key), so a verdict can
/// count distinct observers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerObservations {
    pub reports: Vec<PeerReport>,
}

/// One anomaly this node sees in one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    pub subject: NodeId,
    pub signal: AnomalySignal,
    /// The measured value (a rate per second, or a share 0..=1 for error rates).
    pub value: f32,
    /// What it was compared with (the mesh's value as this node sees it).
    pub reference: f32,
    /// Unix milliseconds since when the anomaly has held without a break.
    pub since_ms: u64,
}

/// What kind of misbehaviour a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalySignal {
    /// Requests to the peer fail far more often than to the rest of the mesh.
    ErrorRate,
    /// Connections or streams with the peer are reset far more often.
    ResetRate,
    /// The peer broke the TLS handshake rules (bad certificate, wrong identity).
    HandshakeViolation,
    /// The peer sent malformed frames or messages.
    ProtocolViolation,
    /// The peer called services the access policy does not allow it.
    PolicyRefusals,
    /// The peer sends far more traffic than its own history.
    TrafficSurge,
    /// The peer's endpoints were ejected again and again (their half-open probes failed too),
    /// far more often than other peers'.
    RepeatedEjection,
}

impl AnomalySignal {
    pub fn label(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::ResetRate => "reset_rate",
            Self::HandshakeViolation => "handshake_violation",
            Self::ProtocolViolation => "protocol_violation",
            Self::PolicyRefusals => "policy_refusals",
            Self::TrafficSurge => "traffic_surge",
            Self::RepeatedEjection => "repeated_ejection",
        }
    }
}

impl PeerObservations {
    /// Encodes the reports, refusing more than [`MAX_REPORTS_PER_NODE`] or over the budget.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        encode_within(self, OBSERVATIONS_BUDGET)
    }

    /// Decodes and checks reports.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let observations: Self = decode_exact(bytes, OBSERVATIONS_BUDGET)?;
        observations.validate()?;
        Ok(observations)
    }

    fn validate(&self) -> Result<(), String> {
        if self.reports.len() > MAX_REPORTS_PER_NODE {
            return Err(format!(
                "{} reports, more than {MAX_REPORTS_PER_NODE}",
                self.reports.len()
            ));
        }
        for report in &self.reports {
            check_rate("value", report.value)?;
            check_rate("reference", report.reference)?;
        }
        Ok(())
    }
}

fn check_label(what: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_LABEL_LEN {
        return Err(format!("{what} longer than {MAX_LABEL_LEN} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} holds control characters"));
    }
    Ok(())
}

fn check_rate(what: &str, value: f32) -> Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} is {value}, not a finite non-negative rate"))
    }
}

#[cfg(test)]
mod tests;
