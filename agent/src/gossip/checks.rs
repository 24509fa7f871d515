//! Checking the sealed values gossip brings: each node's certificate and the signature over
//! every value it published, with refusals counted once per version. Checks are cached per
//! value and version ([`SealVerifier`]), so only new values cost a signature verification;
//! the observer runs a round with new values on a blocking thread, off the worker.

use std::collections::{HashMap, HashSet};

use chitchat::ChitchatId;
use plexus_protocol::{ConsensusSummary, DependencyEdges, NodeSummary, PeerObservations};

use super::seal::SealVerifier;
use super::view::NodeObservation;
use super::{CONSENSUS_KEY, EDGES_KEY, OBSERVATIONS_KEY, SUMMARY_KEY};
use crate::telemetry::{names, Telemetry};

/// A node's raw state, copied out of chitchat under its lock.
pub(super) struct RawNode {
    pub id: ChitchatId,
    pub heartbeat: u64,
    pub live: bool,
    pub cert: Option<String>,
    pub summary: Option<(String, u64)>,
    pub edges: Option<(String, u64)>,
    pub consensus: Option<(String, u64)>,
    pub observations: Option<(String, u64)>,
}

/// The verifier and what it refused.
pub(super) struct SealChecks {
    verifier: SealVerifier,
    /// Node ID to the (max) version whose refusal was last counted.
    rejected: HashMap<String, u64>,
    telemetry: Telemetry,
}

impl SealChecks {
    pub(super) fn new(verifier: SealVerifier, telemetry: Telemetry) -> Self {
        Self {
            verifier,
            rejected: HashMap::new(),
            telemetry,
        }
    }

    /// Whether some node has a sealed value that was not checked before.
    pub(super) fn has_new_values(&self, nodes: &[RawNode]) -> bool {
        nodes.iter().any(|node| self.has_new_value(node))
    }

    /// The nodes whose certificate proves their identity, with the values that verify.
    pub(super) fn verify_all(&mut self, nodes: Vec<RawNode>) -> Vec<NodeObservation> {
        // Every incarnation gossip still holds is in `nodes`: results of the others go.
        let present: HashSet<(&str, u64)> = nodes
            .iter()
            .map(|n| (&*n.id.node_id, n.id.generation_id))
            .collect();
        self.verifier
            .retain(&|node, generation| present.contains(&(node, generation)));
        // A refusal is logged and counted once while gossip holds the node; a refused node is
        // never a member, so it is kept by what gossip holds, not by the view.
        let names: HashSet<&str> = present.iter().map(|(node, _)| *node).collect();
        self.rejected
            .retain(|node, _| names.contains(node.as_str()));
        nodes.into_iter().filter_map(|n| self.verify(n)).collect()
    }

    /// Whether some sealed value of `node` was not checked before.
    fn has_new_value(&self, node: &RawNode) -> bool {
        let node_id = &node.id.node_id;
        if self
            .verifier
            .is_refused(node_id, node.id.generation_id, node.cert.as_deref())
        {
            return false;
        }
        [
            (SUMMARY_KEY, &node.summary),
            (EDGES_KEY, &node.edges),
            (CONSENSUS_KEY, &node.consensus),
            (OBSERVATIONS_KEY, &node.observations),
        ]
        .into_iter()
        .any(|(key, value)| {
            value.as_ref().is_some_and(|(value, version)| {
                !self
                    .verifier
                    .is_cached(node_id, node.id.generation_id, key, *version, value)
            })
        })
    }

    /// Opens a node's sealed values. A node without a certificate proving its node ID is no
    /// member at all; a node whose values do not verify keeps no summary (and so hosts nothing
    /// anyone routes to). Each refusal is counted once per version.
    fn verify(&mut self, node: RawNode) -> Option<NodeObservation> {
        let node_id = node.id.node_id.to_string();
        let generation = node.id.generation_id;
        if let Err(error) = self
            .verifier
            .certificate(&node_id, generation, node.cert.as_deref())
        {
            // Before its first delta arrives a node has no state at all: that is no refusal.
            if node.cert.is_some() && self.rejected.get(&node_id) != Some(&0) {
                self.rejected.insert(node_id.clone(), 0);
                tracing::warn!(node = %node_id, %error, "gossiped node has no valid certificate; ignored");
                self.telemetry
                    .counter(names::GOSSIP_REJECTED, &[("reason", error.label())])
                    .increment(1);
            }
            return None;
        }
        if self.rejected.get(&node_id) == Some(&0) {
            // Its certificate is accepted now: a later refusal is news again.
            self.rejected.remove(&node_id);
        }
        let mut open = |key: &str, value: &Option<(String, u64)>| {
            let (value, version) = value.as_ref()?;
            let result = self.verifier.open(
                &node_id,
                generation,
                node.cert.as_deref(),
                key,
                *version,
                value,
            );
            Some((result, *version))
        };
        let summary = open(SUMMARY_KEY, &node.summary);
        let edges = open(EDGES_KEY, &node.edges);
        let consensus = open(CONSENSUS_KEY, &node.consensus);
        let observations = open(OBSERVATIONS_KEY, &node.observations);
        let mut refusal = None;
        let summary = match summary {
            Some((Ok(payload), version)) => match NodeSummary::decode(&payload) {
                Ok(summary) => Some(summary),
                Err(_) => {
                    refusal = Some(("malformed_summary", version));
                    None
                }
            },
            Some((Err(error), version)) => {
                refusal = Some((error.label(), version));
                None
            }
            None => None,
        };
        let edges = match edges {
            Some((Ok(payload), version)) => match DependencyEdges::decode(&payload) {
                Ok(edges) => edges.edges,
                Err(_) => {
                    refusal = refusal.or(Some(("malformed_edges", version)));
                    Vec::new()
                }
            },
            Some((Err(error), version)) => {
                refusal = refusal.or(Some((error.label(), version)));
                Vec::new()
            }
            None => Vec::new(),
        };
        let consensus = match consensus {
            Some((Ok(payload), version)) => match ConsensusSummary::decode(&payload) {
                Ok(summary) => Some(summary),
                Err(_) => {
                    refusal = refusal.or(Some(("malformed_consensus", version)));
                    None
                }
            },
            Some((Err(error), version)) => {
                refusal = refusal.or(Some((error.label(), version)));
                None
            }
            None => None,
        };
        let observations = match observations {
            Some((Ok(payload), version)) => match PeerObservations::decode(&payload) {
                Ok(observations) => observations.reports,
                Err(_) => {
                    refusal = refusal.or(Some(("malformed_observations", version)));
                    Vec::new()
                }
            },
            Some((Err(error), version)) => {
                refusal = refusal.or(Some((error.label(), version)));
                Vec::new()
            }
            None => Vec::new(),
        };
        if let Some((reason, version)) = refusal {
            if self.rejected.get(&node_id) != Some(&version) {
                self.rejected.insert(node_id.clone(), version);
                tracing::warn!(node = %node_id, reason, "gossiped state failed verification; ignored");
                self.telemetry
                    .counter(names::GOSSIP_REJECTED, &[("reason", reason)])
                    .increment(1);
            }
        }
        Some(NodeObservation {
            node_id,
            generation,
            address: node.id.gossip_advertise_addr,
            heartbeat: node.heartbeat,
            live: node.live,
            summary,
            edges,
            consensus,
            observations,
        })
    }
}
