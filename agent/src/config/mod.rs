//! The agent's TOML configuration, validated up front.
//!
//! Loading reads the file, refuses unknown keys, checks every address, duration, name and file,
//! loads the certificates, and reports *all* mistakes at once, one line each, as
//! `FILE: KEY: REASON`. A config that loads is one the agent can start with.

mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_protocol::{NodeId, ServiceName};

use crate::pki::{NodeCredentials, TrustBundle};

pub use validate::tls::JoinPlan;
pub use validate::{line_of, DEFAULT_ADMIN, DEFAULT_LISTEN};

/// A validated agent configuration with its certificates loaded.
#[derive(Debug)]
pub struct AgentConfig {
    /// The file this was loaded from.
    pub source: PathBuf,
    pub node_id: NodeId,
    pub zone: Option<String>,
    pub data_dir: PathBuf,
    /// Whether `data_dir` was set in the file (rather than defaulted).
    pub data_dir_set: bool,
    /// QUIC (UDP) address to bind.
    pub listen: SocketAddr,
    /// Address peers reach this agent at.
    pub advertise: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    /// Admin HTTP address (localhost by default).
    pub admin: SocketAddr,
    /// Threads the agent's async runtime runs on (`worker_threads`, 1 by default).
    pub worker_threads: usize,
    pub transport: TransportSettings,
    pub gossip: crate::gossip::GossipSettings,
    /// `[consensus]`: the decision log.
    pub consensus: crate::consensus::ConsensusSettings,
    /// `[[canary]]`: releases this agent runs when it leads the decision log.
    pub canaries: Vec<(ServiceName, plexus_protocol::CanaryPolicy)>,
    /// `[[scaling]]`: services that get scaling hints.
    pub scaling: Vec<ScalingPolicy>,
    /// `[access]` and `[[policy]]`: the access policy this agent proposes when it leads the
    /// decision log (rules in precedence order); `None` when the file has neither, so the
    /// agent never overwrites a committed policy.
    pub access: Option<plexus_protocol::AccessPolicy>,
    /// `[quarantine]`: reporting anomalous peers, and the leader's verdicts.
    pub quarantine: crate::quarantine::QuarantineSettings,
    /// `[telemetry] otlp_endpoint`: where to send request spans (OTLP/HTTP JSON), if anywhere.
    pub otlp_endpoint: Option<hyper::Uri>,
    pub services: Vec<LocalService>,
    pub upstreams: Vec<Upstream>,
    pub trust: TrustBundle,
    pub credentials: NodeCredentials,
    pub tls_files: TlsFiles,
    pub pki: PkiSettings,
}

/// One `[[scaling]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingPolicy {
    pub service: ServiceName,
    pub settings: crate::decide::ScalingSettings,
    /// Run as `HOOK SERVICE REPLICAS` on this agent when the committed hint changes.
    pub scale_hook: Option<PathBuf>,
}

/// The certificate authority settings of `[tls]`.
#[derive(Debug, Clone)]
pub struct PkiSettings {
    /// `tls.ca_key`: this voter brings the mesh CA into the decision log.
    pub ca_key: Option<PathBuf>,
    /// `tls.join_token_file`: how this agent got (or gets) its first certificate.
    pub join_token_file: Option<PathBuf>,
    /// `tls.leaf_lifetime`: how long the leaves the leader signs live.
    pub leaf_lifetime: Duration,
    /// Where obtained and renewed certificates are kept (`<data_dir>/tls`), when the agent has
    /// a data directory.
    pub stored: Option<PathBuf>,
}

impl PkiSettings {
    pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(86_400);
}

/// Where the certificates came from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// QUIC connection settings shared by every peer connection.
#[derive(Debug, Clone, Copy)]
pub struct TransportSettings {
    /// A connection with no traffic (keep-alives included) for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets on idle connections.
    pub keep_alive: Duration,
}

/// How a service's bytes are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A byte pipe per connection.
    Tcp,
    /// HTTP/1.1 or HTTP/2 from the app, carried request by request (balanced, retried, shed).
    Http,
}

impl Protocol {
    pub fn wire(self) -> plexus_protocol::AppProtocol {
        match self {
            Self::Tcp => plexus_protocol::AppProtocol::Tcp,
            Self::Http => plexus_protocol::AppProtocol::Http,
        }
    }
}

/// A `[[service]]`: a service this node hosts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LocalService {
    pub name: ServiceName,
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub version: Option<String>,
    /// Requests admitted at once; more are refused with `overloaded`.
    pub capacity: u32,
    /// The readiness probe; without one the service counts as ready.
    pub health: Option<HealthCheck>,
    /// The adaptive concurrency limit in front of it (HTTP services; on by default).
    #[serde(skip)]
    pub limit: Option<crate::policy::limit::LimitConfig>,
}

/// `health = { tcp = true }` or `health = { http = "/healthz" }`, with an `interval`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    #[serde(with = "humantime_secs")]
    pub interval: Duration,
}

/// How a local service is probed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthProbe {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String },
}

/// How an HTTP upstream treats each request: timeouts, retries, hedging.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RequestPolicy {
    /// The whole request, retries included.
    #[serde(with = "humantime_secs")]
    pub request_timeout: Duration,
    /// One attempt, until the response headers arrive.
    #[serde(with = "humantime_secs")]
    pub try_timeout: Duration,
    /// Retries per request at most (after the first attempt).
    pub retries: u32,
    /// Retry methods that are not idempotent too (POST, PATCH).
    pub retry_non_idempotent: bool,
    #[serde(skip)]
    pub retry_budget: crate::policy::retry::RetryBudgetConfig,
    /// Send a second attempt to another endpoint after the observed p95 (idempotent only).
    pub hedge: bool,
}

/// An `[[upstream]]`: a service this node's apps call through a local listener.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upstream {
    pub service: ServiceName,
    pub listen: SocketAddr,
    /// Static endpoints (agents), which override discovery; empty: the agents that gossip says
    /// serve the service.
    pub endpoints: Vec<SocketAddr>,
    /// The calling service, for the dependency map.
    pub caller: String,
    /// Per endpoint: bounds dialing it, and then separately opening a stream on it, before the
    /// next endpoint is tried.
    #[serde(with = "humantime_secs")]
    pub timeout: Duration,
    /// `None`: what gossip says the service speaks (TCP when unknown).
    pub protocol: Option<Protocol>,
    pub requests: RequestPolicy,
    #[serde(skip)]
    pub outlier: crate::policy::outlier::OutlierConfig,
}

mod humantime_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// One configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

/// Every mistake found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Where the agent keeps state on disk: `data_dir` when the file sets it or configures
    /// `[consensus]`; otherwise nothing is kept on disk.
    pub fn state_dir(&self) -> Option<PathBuf> {
        (self.data_dir_set || self.consensus.bootstrap_expect.is_some())
            .then(|| self.data_dir.clone())
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                key: "(file)".into(),
                reason: format!("cannot read configuration: {e}"),
            }])
        })?;
        Self::from_toml(path, &text)
    }

    /// The join a first start must do before [`AgentConfig::load`] can succeed, if any
    /// (`tls.join_token_file` set and no certificate yet); `None` also when the file is bad.
    pub fn join_plan(path: &Path) -> Option<JoinPlan> {
        let text = std::fs::read_to_string(path).ok()?;
        let raw = validate::parse(path, &text).ok()?;
        validate::tls::join_plan(path, &raw)
    }

    /// Parses and validates `text`; `path` names it in errors and anchors relative paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let raw = validate::parse(path, text)?;
        validate::validate(path, raw)
    }
}
