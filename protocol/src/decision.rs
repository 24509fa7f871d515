//! The decision log's typed commands and the committed state they build.
//!
//! Every entry the agents' Raft group commits is one [`Decision`]: what was decided
//! ([`DecisionKind`]), why (a one-line reason) and on what evidence. Applying the committed
//! decisions in log order with [`CommittedState::apply`] gives every agent the same
//! [`CommittedState`]: routing weights per service endpoint, canary shares and scaling hints.
//! Applying is pure and deterministic; a decision that does not fit the state (a canary step for
//! a service with no canary) is recorded in the log but changes nothing.
//!
//! Voters publish the committed state in gossip as a [`ConsensusSummary`], so agents that are not
//! voters learn it without joining the Raft group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frame::{decode_tagged, encode_tagged};
use crate::identity::{NodeId, ServiceName};
use crate::trust::{AccessPolicy, CaKey, JoinToken, TrustState, TrustedRoot};

/// Committed weights are integers in thousandths: 1000 is an endpoint's full share.
pub const FULL_WEIGHT: u32 = 1000;
/// The smallest weight a decision may give: an endpoint is never weighted out entirely (outlier
/// ejection, not weights, takes endpoints out of rotation).
pub const MIN_WEIGHT: u32 = 10;
/// Longest encoded [`Decision`], in bytes.
pub const MAX_DECISION_LEN: usize = 16 * 1024;
/// Longest encoded [`ConsensusSummary`] a voter publishes in gossip.
pub const CONSENSUS_SUMMARY_BUDGET: usize = 24 * 1024;
/// Most pieces of evidence one decision carries.
pub const MAX_EVIDENCE: usize = 64;
/// Most endpoints one weights decision lists.
pub const MAX_WEIGHTED_ENDPOINTS: usize = 256;
/// Most voters a group has.
pub const MAX_VOTERS: usize = 7;
/// Longest reason, version label or evidence label.
pub const MAX_TEXT: usize = 256;

/// One committed decision: what, why and on what evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: DecisionKind,
    /// One line saying why, in the mesh's words.
    pub reason: String,
    pub evidence: Vec<Evidence>,
    /// The node that proposed it (the leader at the time).
    pub proposer: NodeId,
    /// Unix time of the proposal, milliseconds (informational; applying never reads it).
    pub proposed_at_ms: u64,
}

/// A measured fact a decision rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What it is about: a node, a service, or `service/version`.
    pub subject: String,
    /// The signal's name: `p99_us`, `error_rate`, `utilization`, ...
    pub signal: String,
    pub value: f64,
    /// What it was compared with, when anything (the mesh's median, the baseline's value).
    pub reference: Option<f64>,
}

/// What a decision changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DecisionKind {
    /// New weights for a service's endpoints (by node). Endpoints not listed get full weight.
    Weights {
        service: ServiceName,
        weights: Vec<EndpointWeight>,
    },
    /// A canary release begins (its policy comes from the proposer's configuration).
    CanaryStart {
        service: ServiceName,
        policy: CanaryPolicy,
    },
    /// A canary's share of traffic changes.
    CanaryStep {
        service: ServiceName,
        share_percent: u8,
        phase: CanaryPhase,
    },
    /// The replicas a service should have, from its utilization.
    ScalingHint {
        service: ServiceName,
        current: u32,
        desired: u32,
    },
    /// The voter set changed (recorded after the membership change took effect).
    Voters { voters: Vec<NodeId> },
    /// The mesh CA enters the log (from a voter's `tls.ca_key`), with the join tokens
    /// `plexus pki init` made beside it.
    TrustInit {
        root: TrustedRoot,
        key: CaKey,
        tokens: Vec<(String, JoinToken)>,
    },
    /// A new root, cross-signed by the current issuer, becomes the issuer; every agent trusts
    /// both until the previous one's `retire_previous_at_ms`.
    CaRotate {
        root: TrustedRoot,
        key: CaKey,
        cross_signed: Vec<u8>,
        retire_previous_at_ms: u64,
    },
    /// A superseded root stops being trusted (no leaf it signed is still valid).
    CaRetire { serial: String },
    /// A join token is made.
    TokenCreate { id: String, token: JoinToken },
    /// A join token is refused from now on.
    TokenRevoke { id: String },
    /// A node received its first certificate with a join token.
    Joined { token: String, node: NodeId },
    /// The cell's access policy is replaced.
    Policy { policy: AccessPolicy },
    /// A node is quarantined: its certificates are denied everywhere and it leaves every
    /// endpoint set. The reports behind it are the decision's evidence.
    Quarantine {
        node: NodeId,
        serials: Vec<String>,
        observers: Vec<NodeId>,
    },
    /// A node's quarantine ends.
    Release { node: NodeId },
}

impl DecisionKind {
    /// A short label for logs, metrics and tables.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Weights { .. } => "weights",
            Self::CanaryStart { .. } => "canary_start",
            Self::CanaryStep { .. } => "canary_step",
            Self::ScalingHint { .. } => "scaling_hint",
            Self::Voters { .. } => "voters",
            Self::TrustInit { .. } => "trust_init",
            Self::CaRotate { .. } => "ca_rotate",
            Self::CaRetire { .. } => "ca_retire",
            Self::TokenCreate { .. } => "token_create",
            Self::TokenRevoke { .. } => "token_revoke",
            Self::Joined { .. } => "joined",
            Self::Policy { .. } => "policy",
            Self::Quarantine { .. } => "quarantine",
            Self::Release { .. } => "release",
        }
    }

    /// The service it is about, if any.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Self::Weights { service, .. }
            | Self::CanaryStart { service, .. }
            | Self::CanaryStep { service, .. }
            | Self::ScalingHint { service, .. } => Some(service),
            _ => None,
        }
    }
}

/// One endpoint's committed weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointWeight {
    pub node: NodeId,
    /// In thousandths of a full share, [`MIN_WEIGHT`]..=[`FULL_WEIGHT`].
    pub weight: u32,
}

/// How a canary release proceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryPolicy {
    /// The version label serving now.
    pub baseline: String,
    /// The version label being released.
    pub canary: String,
    /// How much the canary's share grows per step, percent.
    pub step_percent: u8,
    /// Least time between two steps, milliseconds.
    pub interval_ms: u64,
    /// Most the canary's error rate may exceed the baseline's (absolute, 0.01 = one point).
    pub max_error_rate_increase: f64,
    /// Most the canary's p99 may be, as a multiple of the baseline's.
    pub max_latency_ratio: f64,
}

/// Where a canary release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanaryPhase {
    /// Stepping up while the canary stays in bounds.
    Progressing,
    /// The canary takes all traffic.
    Promoted,
    /// The canary broke its bounds; its share is 0.
    RolledBack,
}

impl CanaryPhase {
    pub fn label(self) -> &'static str {
        match self {
            Self::Progressing => "progressing",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// A canary release as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryState {
    pub policy: CanaryPolicy,
    /// The canary version's share of the service's traffic, percent.
    pub share_percent: u8,
    pub phase: CanaryPhase,
    /// Log index of the last step (or of the start).
    pub last_step_index: u64,
    /// How many steps have been committed.
    pub steps: u32,
}

/// A service's scaling hint as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingState {
    pub current: u32,
    pub desired: u32,
    /// Log index of the decision.
    pub index: u64,
}

/// What the log decided about one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDecisions {
    /// Weight per endpoint node; a node not listed has [`FULL_WEIGHT`].
    pub weights: BTreeMap<NodeId, u32>,
    /// How many weights decisions were applied for this service: the data plane's weight epoch.
    pub weights_epoch: u64,
    pub canary: Option<CanaryState>,
    pub scaling: Option<ScalingState>,
}

impl ServiceDecisions {
    /// The committed weight of one endpoint.
    pub fn weight(&self, node: &NodeId) -> u32 {
        self.weights.get(node).copied().unwrap_or(FULL_WEIGHT)
    }
}

/// Everything the decision log has decided, as of `applied_index`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommittedState {
    /// Index of the last log entry applied.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// The committed voter set, as last recorded.
    pub voters: Vec<NodeId>,
    pub services: BTreeMap<ServiceName, ServiceDecisions>,
    /// Roots, CA keys (Raft group only), join tokens, access policy, quarantine.
    pub trust: TrustState,
}

impl CommittedState {
    /// Applies one committed decision at `index`/`term`. Pure and deterministic: every agent that
    /// applies the same entries in the same order holds the same state.
    pub fn apply(&mut self, index: u64, term: u64, decision: &Decision) {
        self.applied_index = index;
        self.applied_term = term;
        match &decision.kind {
            DecisionKind::Weights { service, weights } => {
                let entry = self.services.entry(service.clone()).or_default();
                entry.weights = weights
                    .iter()
                    .filter(|w| w.weight < FULL_WEIGHT)
                    .map(|w| (w.node.clone(), w.weight.clamp(MIN_WEIGHT, FULL_WEIGHT)))
                    .collect();
                entry.weights_epoch += 1;
            }
            DecisionKind::CanaryStart { service, policy } => {
                let entry = self.services.entry(service.clone()).or_default();
                entry.canary = Some(CanaryState {
                    policy: policy.clone(),
                    share_percent: 0,
                    phase: CanaryPhase::Progressing,
                    last_step_index: index,
                    steps: 0,
                });
            }
            DecisionKind::CanaryStep {
                service,
                share_percent,
                phase,
            } => {
                if let Some(canary) = self
                    .services
                    .get_mut(service)
                    .and_then(|s| s.canary.as_mut())
                {
                    canary.share_percent = (*share_percent).min(100);
                    canary.phase = *phase;
                    canary.last_step_index = index;
                    canary.steps += 1;
                }
            }
            DecisionKind::ScalingHint {
                service,
                current,
                desired,
            } => {
                self.services.entry(service.clone()).or_default().scaling = Some(ScalingState {
                    current: *current,
                    desired: *desired,
                    index,
                });
            }
            DecisionKind::Voters { voters } => self.voters = voters.clone(),
            _ => self.trust.apply(index, decision),
        }
    }

    /// The state as agents outside the Raft group may see it (gossip, admin): no CA keys.
    pub fn without_keys(&self) -> Self {
        Self {
            trust: self.trust.without_keys(),
            ..self.clone()
        }
    }

    /// Records that an entry with no decision (a leader's empty entry or a membership change)
    /// was applied.
    pub fn skip(&mut self, index: u64, term: u64) {
        self.applied_index = index;
        self.applied_term = term;
    }

    /// Encodes the state (the [`crate::frame::LOG_FORMAT`] byte, then bincode), for
    /// snapshots and the agent's own disk.
    pub fn encode(&self) -> Vec<u8> {
        encode_tagged(self, usize::MAX).expect("a state has no size budget")
    }

    /// Decodes a state, refusing another format, more than `limit` bytes and trailing bytes.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, String> {
        decode_tagged(bytes, limit, "committed state")
    }
}

impl Decision {
    /// Checks the bounds every decision must keep (text lengths, list sizes, weight range).
    pub fn validate(&self) -> Result<(), String> {
        if self.reason.len() > MAX_TEXT {
            return Err(format!("reason longer than {MAX_TEXT} bytes"));
        }
        if self.evidence.len() > MAX_EVIDENCE {
            return Err(format!("more than {MAX_EVIDENCE} pieces of evidence"));
        }
        if self
            .evidence
            .iter()
            .any(|e| e.subject.len() > MAX_TEXT || e.signal.len() > MAX_TEXT)
        {
            return Err(format!("an evidence label is longer than {MAX_TEXT} bytes"));
        }
        match &self.kind {
            DecisionKind::Weights { weights, .. } => {
                if weights.len() > MAX_WEIGHTED_ENDPOINTS {
                    return Err(format!("more than {MAX_WEIGHTED_ENDPOINTS} weights"));
                }
                if let Some(w) = weights
                    .iter()
                    .find(|w| !(MIN_WEIGHT..=FULL_WEIGHT).contains(&w.weight))
                {
                    return Err(format!(
                        "weight {} of {} outside {MIN_WEIGHT}..={FULL_WEIGHT}",
                        w.weight, w.node
                    ));
                }
            }
            DecisionKind::CanaryStart { policy, .. } => {
                if policy.baseline.len() > MAX_TEXT || policy.canary.len() > MAX_TEXT {
                    return Err(format!("a version label is longer than {MAX_TEXT} bytes"));
                }
                if policy.step_percent == 0 || policy.step_percent > 100 {
                    return Err("canary step must be 1..=100 percent".into());
                }
            }
            DecisionKind::CanaryStep { share_percent, .. } if *share_percent > 100 => {
                return Err("canary share above 100 percent".into());
            }
            DecisionKind::Voters { voters } if voters.len() > MAX_VOTERS => {
                return Err(format!("more than {MAX_VOTERS} voters"));
            }
            kind => crate::trust::validate_kind(kind)?,
        }
        Ok(())
    }

    /// Encodes a decision (bincode), refusing one that breaks its bounds.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.validate()?;
        encode_tagged(self, MAX_DECISION_LEN)
    }

    /// Decodes a decision; total: bad, oversized or out-of-bounds input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let decision: Self = decode_tagged(bytes, MAX_DECISION_LEN, "decision")?;
        decision.validate()?;
        Ok(decision)
    }
}

/// A change of the Raft group's membership, carried in its conf-change entry's context so that
/// applying it never parses the entry's protobuf data. `decision` records why, and its kind is
/// [`DecisionKind::Voters`] with the voter set after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub step: MembershipStep,
    pub node: NodeId,
    /// The node's Raft ID (derived from its node ID).
    pub raft_id: u64,
    pub decision: Decision,
}

/// One single-node membership step (never a joint change: one at a time, like Consul Autopilot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipStep {
    /// The node starts receiving the log without voting.
    AddLearner,
    /// A caught-up learner becomes a voter.
    Promote,
    /// The node leaves the group.
    Remove,
}

impl MembershipChange {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.decision.validate()?;
        encode_tagged(self, MAX_DECISION_LEN)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let change: Self = decode_tagged(bytes, MAX_DECISION_LEN, "membership change")?;
        change.decision.validate()?;
        Ok(change)
    }
}

/// What a voter publishes in gossip about the decision log: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsensusSummary {
    /// The publisher's current Raft term.
    pub term: u64,
    /// The leader the publisher knows of, if any.
    pub leader: Option<NodeId>,
    /// The publisher's commit index.
    pub commit: u64,
    /// The voter set the publisher's committed configuration holds.
    pub voters: Vec<NodeId>,
    /// The committed state the publisher has applied.
    pub state: CommittedState,
    /// Before any group exists: the first voters this node would form the group with. A group
    /// forms only once every one of them proposes the same set, so two agents that saw
    /// different members cannot start two groups.
    pub proposed: Vec<NodeId>,
}

impl ConsensusSummary {
    /// Encodes the summary, refusing one over [`CONSENSUS_SUMMARY_BUDGET`].
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        if self.voters.len() > MAX_VOTERS || self.proposed.len() > MAX_VOTERS {
            return Err(format!("more than {MAX_VOTERS} voters"));
        }
        if !self.state.trust.keys.is_empty() {
            return Err(
                "a summary never carries CA keys (use CommittedState::without_keys)".into(),
            );
        }
        encode_tagged(self, CONSENSUS_SUMMARY_BUDGET)
    }

    /// Decodes a summary; total.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let summary: Self = decode_tagged(bytes, CONSENSUS_SUMMARY_BUDGET, "consensus summary")?;
        if summary.voters.len() > MAX_VOTERS || summary.proposed.len() > MAX_VOTERS {
            return Err(format!("more than {MAX_VOTERS} voters"));
        }
        if !summary.state.trust.keys.is_empty() {
            return Err("a summary carries CA keys".into());
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests;
