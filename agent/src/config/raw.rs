//! The configuration file as written, before validation: every field optional where the user
//! may leave it out, unknown keys refused.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node_id: Option<String>,
    pub zone: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    #[serde(default)]
    pub seeds: Vec<String>,
    pub admin: Option<String>,
    pub worker_threads: Option<i64>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub transport: RawTransport,
    #[serde(default)]
    pub gossip: RawGossip,
    #[serde(default)]
    pub consensus: RawConsensus,
    #[serde(default)]
    pub canary: Vec<RawCanary>,
    #[serde(default)]
    pub scaling: Vec<RawScaling>,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub service: Vec<RawService>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    pub access: Option<RawAccess>,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
    #[serde(default)]
    pub quarantine: RawQuarantine,
}

/// `[quarantine]`: verdicts on anomalous peers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuarantine {
    pub enabled: Option<bool>,
    pub min_observers: Option<i64>,
    pub window: Option<String>,
    pub probation: Option<String>,
    pub max_share: Option<f64>,
}

/// `[access]`: the cell's access policy settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub default: Option<String>,
}

/// One `[[policy]]` entry: exactly one of `allow` and `deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub allow: Option<RawPolicyMatch>,
    pub deny: Option<RawPolicyMatch>,
}

/// `{ from = "web", to = "payments" }`; omitted or `"*"` means any.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyMatch {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The mesh CA key a voter brings into the decision log (PEM, from `plexus pki init`).
    pub ca_key: Option<PathBuf>,
    /// A join token: a new agent obtains its first certificate from the leader with it.
    pub join_token_file: Option<PathBuf>,
    /// How long the leaves the leader signs live (default 24h).
    pub leaf_lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransport {
    pub idle_timeout: Option<String>,
    pub keep_alive: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsensus {
    pub bootstrap_expect: Option<i64>,
    pub election_timeout: Option<String>,
    pub dead_voter_after: Option<String>,
    pub weights_window: Option<String>,
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaling {
    pub service: String,
    pub target_utilization: Option<f64>,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub downscale_window: Option<String>,
    pub scale_hook: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGossip {
    pub interval: Option<String>,
    pub phi_threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub address: String,
    pub protocol: Option<String>,
    pub version: Option<String>,
    pub capacity: Option<u32>,
    pub health: Option<RawHealth>,
    pub adaptive_limit: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub tcp: Option<bool>,
    pub http: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub interval: Option<String>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub service: String,
    pub listen: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub timeout: Option<String>,
    pub caller: Option<String>,
    pub protocol: Option<String>,
    pub request_timeout: Option<String>,
    pub try_timeout: Option<String>,
    pub retries: Option<u32>,
    pub retry_non_idempotent: Option<bool>,
    pub retry_budget: Option<RawRetryBudget>,
    pub hedge: Option<bool>,
    pub outlier: Option<RawOutlier>,
}
