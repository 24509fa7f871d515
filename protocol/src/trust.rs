//! Trust in the decision log: the mesh CA, join tokens, access policy and quarantine.
//!
//! The committed [`TrustState`] is part of [`crate::CommittedState`]. Its CA keys are secrets
//! that only the Raft group (voters and learners) may hold: [`CaKey`] refuses to serialize into
//! human-readable formats (JSON shows `"<redacted>"`), and a [`crate::ConsensusSummary`], which
//! travels in gossip to every agent, refuses to encode a state that still holds one
//! ([`TrustState::without_keys`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decision::{Decision, DecisionKind, Evidence};
use crate::identity::{NodeId, ServiceName};

mod leader;
pub use leader::{LeaderReply, LeaderRequest, OperatorAction};

/// Most roots trusted at once (two during a rotation; a few more if rotations overlap).
pub const MAX_ROOTS: usize = 4;
/// Longest DER certificate the trust state or a request carries.
pub const MAX_CERT_DER: usize = 4096;
/// Longest CA private key (PKCS#8 DER).
pub const MAX_CA_KEY: usize = 4096;
/// Most join tokens the state keeps (revoked and expired ones included, until pruned).
pub const MAX_TOKENS: usize = 128;
/// Longest token ID.
pub const MAX_TOKEN_ID: usize = 32;
/// Most access policy rules.
pub const MAX_POLICY_RULES: usize = 64;
/// Most nodes quarantined at once.
pub const MAX_QUARANTINED: usize = 64;
/// Most releases the committed state remembers (the newest): enough for agents that sample
/// it to notice a release, small enough for the gossiped consensus summary.
pub const MAX_RELEASES: usize = 16;
/// Most observers one quarantine names.
pub const MAX_OBSERVERS: usize = 32;

/// A mesh CA private key (PKCS#8 DER). Held by the Raft group only.
#[derive(Clone, PartialEq, Eq)]
pub struct CaKey(pub Vec<u8>);

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaKey(<redacted>)")
    }
}

impl Serialize for CaKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str("<redacted>")
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for CaKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return Err(serde::de::Error::custom(
                "a CA key is never read from a human-readable format",
            ));
        }
        Ok(Self(serde_bytes_vec(deserializer)?))
    }
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    deserializer.deserialize_byte_buf(Bytes)
}

/// A CA certificate every agent trusts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedRoot {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, lowercase hex: how decisions name it.
    pub serial: String,
    /// Unix time after which it is no longer valid, milliseconds.
    pub not_after_ms: u64,
    /// Once superseded by a rotation: when it stops being trusted (the newest leaf it signed
    /// has expired by then), Unix milliseconds.
    pub retire_at_ms: Option<u64>,
}

/// A join token as the mesh knows it: only the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinToken {
    pub secret_sha256: [u8; 32],
    pub created_ms: u64,
    /// Unix milliseconds after which the token is refused; `None` never expires.
    pub expires_ms: Option<u64>,
    pub revoked: bool,
    /// Who made it (`pki init`, or the node whose admin API asked).
    pub created_by: String,
    /// How many nodes joined with it.
    pub uses: u32,
}

impl JoinToken {
    /// Whether the token admits a join at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> Result<(), &'static str> {
        if self.revoked {
            return Err("revoked");
        }
        if self.expires_ms.is_some_and(|at| now_ms >= at) {
            return Err("expired");
        }
        Ok(())
    }
}

/// Whether a call is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PolicyAction {
    #[default]
    Allow,
    Deny,
}

impl PolicyAction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// One access rule: calls from nodes hosting `from` to the service `to`. `None` matches any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub from: Option<ServiceName>,
    pub to: Option<ServiceName>,
    pub action: PolicyAction,
}

impl PolicyRule {
    /// How specific the rule is: exact source and destination first, wildcards last.
    fn precedence(&self) -> u8 {
        match (&self.from, &self.to) {
            (Some(_), Some(_)) => 3,
            (None, Some(_)) => 2,
            (Some(_), None) => 1,
            (None, None) => 0,
        }
    }
}

/// The cell's access policy: rules, then a default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessPolicy {
    pub default: PolicyAction,
    pub rules: Vec<PolicyRule>,
}

impl AccessPolicy {
    /// Decides a call to `to` by a node hosting `caller_services`. The most specific matching
    /// rule wins (exact source and destination, then any source, then any destination); among
    /// equally specific matches a deny wins; with no match, the default. A caller that hosts no
    /// service matches only rules with any source.
    pub fn decide(&self, caller_services: &[ServiceName], to: &ServiceName) -> PolicyAction {
        let matching = self.rules.iter().filter(|rule| {
            rule.to.as_ref().is_none_or(|t| t == to)
                && rule
                    .from
                    .as_ref()
                    .is_none_or(|f| caller_services.contains(f))
        });
        let mut best: Option<(u8, PolicyAction)> = None;
        for rule in matching {
            let candidate = (rule.precedence(), rule.action);
            best = match best {
                Some((p, _)) if p > candidate.0 => best,
                Some((p, PolicyAction::Deny)) if p == candidate.0 => best,
                _ => Some(candidate),
            };
        }
        best.map(|(_, action)| action).unwrap_or(self.default)
    }
}

/// A quarantined node as committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// Serial numbers (lowercase hex) of the node's certificates: every agent's TLS verifier
    /// refuses them, and the node's ID, at once.
    pub serials: Vec<String>,
    /// The distinct observers whose reports led to the verdict.
    pub observers: Vec<NodeId>,
    pub reason: String,
    pub evidence: Vec<Evidence>,
    /// Unix milliseconds of the proposal (from the decision).
    pub since_ms: u64,
    /// Log index of the verdict.
    pub index: u64,
}

/// What the log decided about trust: roots, CA keys, join tokens, access policy, quarantine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustState {
    /// The roots every agent trusts, oldest first; the last one signs new leaves.
    pub roots: Vec<TrustedRoot>,
    /// The newest root cross-signed by the one before it (DER), while a rotation overlaps.
    pub cross_signed: Option<Vec<u8>>,
    /// CA private keys by root serial. Voters only: stripped before gossip and never shown.
    pub keys: BTreeMap<String, CaKey>,
    /// Join tokens by ID.
    pub tokens: BTreeMap<String, JoinToken>,
    pub policy: AccessPolicy,
    /// Quarantined nodes: the committed deny list.
    pub quarantined: BTreeMap<NodeId, QuarantineRecord>,
    /// The log index of each node's last release (at most [`MAX_RELEASES`], the oldest
    /// forgotten). An agent that samples the state may never see a short quarantine at all;
    /// this still tells it that an episode ended, so it drops the evidence of it.
    pub released: BTreeMap<NodeId, u64>,
    /// How many CA rotations were committed.
    pub rotations: u32,
}

impl TrustState {
    /// Whether the mesh CA is in the log (issuance and renewal work).
    pub fn has_ca(&self) -> bool {
        self.roots
            .last()
            .is_some_and(|root| self.keys.contains_key(&root.serial))
    }

    /// The root that signs new leaves.
    pub fn issuer(&self) -> Option<&TrustedRoot> {
        self.roots.last()
    }

    /// The state as agents outside the Raft group may see it: no CA keys.
    pub fn without_keys(&self) -> Self {
        Self {
            keys: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// Whether a certificate serial (lowercase hex) or node is on the deny list.
    pub fn denies(&self, node: &NodeId, serial: &str) -> bool {
        self.quarantined.contains_key(node)
            || self
                .quarantined
                .values()
                .any(|q| q.serials.iter().any(|s| s == serial))
    }
}

impl TrustState {
    /// Applies one committed trust decision at `index`. Pure and deterministic; a decision that
    /// does not fit the state (revoking an unknown token) changes nothing. Bounds are kept:
    /// the oldest roots, tokens and quarantines beyond their maximum are dropped.
    pub(crate) fn apply(&mut self, index: u64, decision: &Decision) {
        match &decision.kind {
            DecisionKind::TrustInit { root, key, tokens } if self.roots.is_empty() => {
                self.roots.push(root.clone());
                self.keys.insert(root.serial.clone(), key.clone());
                for (id, token) in tokens {
                    self.tokens.insert(id.clone(), token.clone());
                }
            }
            DecisionKind::CaRotate {
                root,
                key,
                cross_signed,
                retire_previous_at_ms,
            } => {
                if self.roots.iter().any(|r| r.serial == root.serial) {
                    return;
                }
                for previous in &mut self.roots {
                    let at = previous.retire_at_ms.unwrap_or(u64::MAX);
                    previous.retire_at_ms = Some(at.min(*retire_previous_at_ms));
                }
                self.roots.push(root.clone());
                self.keys.insert(root.serial.clone(), key.clone());
                self.cross_signed = Some(cross_signed.clone());
                self.rotations += 1;
                while self.roots.len() > MAX_ROOTS {
                    let oldest = self.roots.remove(0);
                    self.keys.remove(&oldest.serial);
                }
            }
            // The issuer is never retired.
            DecisionKind::CaRetire { serial }
                if self.roots.len() > 1
                    && self.roots.last().is_some_and(|r| &r.serial != serial) =>
            {
                self.roots.retain(|r| &r.serial != serial);
                self.keys.remove(serial);
                if self.roots.len() == 1 {
                    self.cross_signed = None;
                }
            }
            DecisionKind::TokenCreate { id, token } => {
                self.tokens.insert(id.clone(), token.clone());
                while self.tokens.len() > MAX_TOKENS {
                    // Drop the oldest revoked or expired-looking token first, else the oldest.
                    let victim = self
                        .tokens
                        .iter()
                        .filter(|(_, t)| t.revoked)
                        .chain(self.tokens.iter())
                        .min_by_key(|(_, t)| (!t.revoked, t.created_ms))
                        .map(|(id, _)| id.clone());
                    match victim {
                        Some(victim) => self.tokens.remove(&victim),
                        None => break,
                    };
                }
            }
            DecisionKind::TokenRevoke { id } => {
                if let Some(token) = self.tokens.get_mut(id) {
                    token.revoked = true;
                }
            }
            DecisionKind::Joined { token, .. } => {
                if let Some(token) = self.tokens.get_mut(token) {
                    token.uses = token.uses.saturating_add(1);
                }
            }
            DecisionKind::Policy { policy } => self.policy = policy.clone(),
            DecisionKind::Quarantine {
                node,
                serials,
                observers,
            } if self.quarantined.len() < MAX_QUARANTINED
                || self.quarantined.contains_key(node) =>
            {
                self.quarantined.insert(
                    node.clone(),
                    QuarantineRecord {
                        serials: serials.clone(),
                        observers: observers.clone(),
                        reason: decision.reason.clone(),
                        evidence: decision.evidence.clone(),
                        since_ms: decision.proposed_at_ms,
                        index,
                    },
                );
            }
            DecisionKind::Release { node } => {
                if self.quarantined.remove(node).is_some() {
                    self.released.insert(node.clone(), index);
                }
                while self.released.len() > MAX_RELEASES {
                    let oldest = self
                        .released
                        .iter()
                        .min_by_key(|(_, index)| **index)
                        .map(|(node, _)| node.clone());
                    match oldest {
                        Some(node) => self.released.remove(&node),
                        None => break,
                    };
                }
            }
            _ => {}
        }
    }
}

/// Checks the bounds of a trust decision (other kinds pass).
pub(crate) fn validate_kind(kind: &DecisionKind) -> Result<(), String> {
    let root_ok = |root: &TrustedRoot| {
        check_len("root certificate", root.der.len(), MAX_CERT_DER)?;
        check_len("root serial", root.serial.len(), 64)
    };
    match kind {
        DecisionKind::TrustInit { root, key, tokens } => {
            root_ok(root)?;
            check_len("CA key", key.0.len(), MAX_CA_KEY)?;
            if tokens.len() > 8 {
                return Err("more than 8 initial join tokens".into());
            }
            tokens.iter().try_for_each(|(id, t)| check_token(id, t))
        }
        DecisionKind::CaRotate {
            root,
            key,
            cross_signed,
            ..
        } => {
            root_ok(root)?;
            check_len("CA key", key.0.len(), MAX_CA_KEY)?;
            check_len("cross-signed root", cross_signed.len(), MAX_CERT_DER)
        }
        DecisionKind::CaRetire { serial } => check_len("root serial", serial.len(), 64),
        DecisionKind::TokenCreate { id, token } => check_token(id, token),
        DecisionKind::TokenRevoke { id } | DecisionKind::Joined { token: id, .. } => {
            check_len("token ID", id.len(), MAX_TOKEN_ID)
        }
        DecisionKind::Policy { policy } if policy.rules.len() > MAX_POLICY_RULES => {
            Err(format!("more than {MAX_POLICY_RULES} policy rules"))
        }
        DecisionKind::Quarantine {
            serials, observers, ..
        } => {
            if serials.len() > 4 || serials.iter().any(|s| s.len() > 64) {
                return Err("at most 4 serials of at most 64 hex digits".into());
            }
            if observers.len() > MAX_OBSERVERS {
                return Err(format!("more than {MAX_OBSERVERS} observers"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_token(id: &str, token: &JoinToken) -> Result<(), String> {
    check_len("token ID", id.len(), MAX_TOKEN_ID)?;
    check_len(
        "token creator",
        token.created_by.len(),
        crate::decision::MAX_TEXT,
    )
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("{what} is {len} bytes; the maximum is {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
