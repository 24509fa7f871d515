//! The scenario file as written (TOML), before validation. Unknown keys are refused.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: String,
    /// One line: what this scenario shows.
    pub purpose: String,
    pub seed: Option<u64>,
    /// Part of the quick subset (CI).
    #[serde(default)]
    pub quick: bool,
    pub topology: RawTopology,
    #[serde(default)]
    pub agent: RawAgent,
    /// The agents' `[consensus]` table (every agent gets the same).
    pub consensus: Option<RawConsensus>,
    /// The agents' `[[canary]]` tables (every agent gets them; the leader runs them).
    #[serde(default)]
    pub canary: Vec<RawCanary>,
    /// Where the mesh CA lives.
    pub trust: Option<RawTrust>,
    /// The agents' `[quarantine]` table.
    pub quarantine: Option<RawQuarantine>,
    /// The agents' `[access]` table.
    pub access: Option<RawAccess>,
    /// The agents' `[[policy]]` entries.
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    pub workload: RawWorkload,
    #[serde(default)]
    pub phase: Vec<RawPhase>,
    #[serde(default)]
    pub check: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    /// A count (`node-1` .. `node-N`) or the names.
    pub nodes: RawNodes,
    /// Zones, given to nodes in turn.
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub voters: Option<usize>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNodes {
    Count(i64),
    Names(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub protocol: Option<String>,
    /// `all`, or node names.
    pub on: Option<RawNodeList>,
    pub version: Option<String>,
    /// How long the harness's backend takes to answer when healthy (default 0).
    pub latency: Option<String>,
    /// Per node versions that differ from `version`.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNodeList {
    One(String),
    Many(Vec<String>),
}

/// Settings for every agent of the run; `upstream` and `service` are merged into each
/// `[[upstream]]` and `[[service]]` block the harness writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub gossip_interval: Option<String>,
    pub phi_threshold: Option<f64>,
    pub health_interval: Option<String>,
    pub upstream: Option<toml::Table>,
    pub service: Option<toml::Table>,
}

/// `[consensus]`, as the agent's configuration spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsensus {
    pub bootstrap_expect: Option<i64>,
    pub election_timeout: Option<String>,
    pub dead_voter_after: Option<String>,
    pub weights_window: Option<String>,
}

/// `[[canary]]`, as the agent's configuration spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub step_percent: Option<i64>,
    pub interval: Option<String>,
    pub max_error_rate_increase: Option<f64>,
    pub max_latency_ratio: Option<f64>,
}

/// `[trust]`: where the mesh CA lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// `files` (the default) or `decision-log`.
    pub ca: Option<String>,
    /// Lifetime of the leaves the leader signs (`decision-log` only).
    pub leaf_lifetime: Option<String>,
}

/// `[quarantine]`, as the agent's configuration spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuarantine {
    pub enabled: Option<bool>,
    pub min_observers: Option<i64>,
    pub window: Option<String>,
    pub probation: Option<String>,
    pub max_share: Option<f64>,
}

/// `[access]`, as the agent's configuration spells it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub default: Option<String>,
}

/// One `[[policy]]` entry (or one entry of a `policy-change` fault's `policy`): exactly one
/// of `allow` and `deny`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub allow: Option<RawPolicyMatch>,
    pub deny: Option<RawPolicyMatch>,
}

/// `{ from = "web", to = "echo" }`; omitted or `"*"` is any.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyMatch {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub kind: Option<String>,
    pub rate: i64,
    pub from: Option<RawNodeList>,
    pub service: String,
    pub timeout: Option<String>,
    pub max_in_flight: Option<i64>,
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    pub name: String,
    pub duration: String,
    #[serde(default)]
    pub faults: Vec<RawFault>,
}

/// Every fault key; which ones apply depends on `kind` (checked in validation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub kind: String,
    pub target: Option<String>,
    /// Network faults: the other end (default: every other node).
    pub peer: Option<String>,
    /// Network faults: `both` (default), `outbound` (from target), `inbound` (to target).
    pub direction: Option<String>,
    /// Offset into the phase (default 0).
    pub at: Option<String>,
    /// How long it lasts (default: to the end of the phase).
    #[serde(rename = "for")]
    pub lasts: Option<String>,
    pub rate: Option<f64>,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub bandwidth: Option<String>,
    pub status: Option<i64>,
    pub service: Option<String>,
    pub version: Option<String>,
    /// `rolling-restart`: time between two restarts.
    pub interval: Option<String>,
    /// `clock-skew`: e.g. `+2h`, `-30m`.
    pub offset: Option<String>,
    /// `lying-observer`: the node it lies about (`node:NAME`).
    pub about: Option<String>,
    /// `policy-change`: the new `[access] default`.
    pub default: Option<String>,
    /// `policy-change`: the new `[[policy]]` entries.
    pub policy: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub kind: String,
    pub mode: Option<String>,
    pub phase: Option<String>,
    /// Grace: skip this much of the check's window.
    pub after: Option<String>,
    pub min: Option<f64>,
    pub max: Option<toml::Value>,
    pub quantile: Option<f64>,
    pub target: Option<String>,
    pub abort: Option<bool>,
    pub pass_percent: Option<f64>,
    /// `time-to-shift`: the share under which the target counts as shifted away from.
    pub below: Option<f64>,
    /// `canary-outcome`: the service whose release is judged.
    pub service: Option<String>,
    /// `canary-outcome`: `promoted` or `rolled_back`.
    pub expect: Option<String>,
    /// `success-rate`, `policy-denied`: only requests sent through these workload sources.
    pub from: Option<RawNodeList>,
}
