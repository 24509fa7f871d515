//! Scenario files: topology, workload, phases with faults, and checks, validated up front.
//! Every mistake is reported on its own line as `FILE: KEY: REASON`.

mod check;
mod consensus;
mod raw;
mod trust;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use check::{Check, CheckKind, Mode};
pub use consensus::{CanaryEnd, CanarySpec, ConsensusSpec};
pub use trust::{Access, PolicyRuleSpec, PolicySpec, QuarantineSpec, TrustSpec};

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub source: PathBuf,
    pub name: String,
    /// One line: what this scenario shows.
    pub purpose: String,
    /// The file's seed (the command line's `--seed` wins).
    pub seed: u64,
    /// Part of the quick subset CI runs.
    pub quick: bool,
    pub topology: Topology,
    pub agent: AgentSettings,
    /// The agents' `[consensus]`; `None`: they run without a decision log.
    pub consensus: Option<ConsensusSpec>,
    /// The agents' `[[canary]]` releases (only with `consensus`).
    pub canaries: Vec<CanarySpec>,
    /// Where the mesh CA lives.
    pub trust: TrustSpec,
    /// The agents' `[quarantine]` table, when the scenario sets one.
    pub quarantine: Option<QuarantineSpec>,
    /// The access policy every agent carries from the start (only with `consensus`).
    pub policy: Option<PolicySpec>,
    pub workload: Workload,
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub nodes: Vec<NodeSpec>,
    /// The nodes declared voters: the first `voters` nodes, spread across zones. With
    /// `[consensus]` the agents choose their voters themselves: role targets then ask them.
    pub voters: Vec<String>,
    pub services: Vec<ServiceSpec>,
}

impl Topology {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// A service the harness runs a backend for on each node in `on`.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub protocol: Protocol,
    pub on: Vec<String>,
    /// Version per node that hosts it.
    pub versions: BTreeMap<String, String>,
    /// How long its backends take to answer when no fault says otherwise.
    pub latency: Duration,
}

/// Settings every agent of the run gets.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    pub gossip_interval: Option<Duration>,
    pub phi_threshold: Option<f64>,
    /// How often agents probe their local services (`health = { http = "/healthz" }`).
    pub health_interval: Duration,
    /// Extra keys for each `[[upstream]]` block.
    pub upstream: toml::Table,
    /// Extra keys for each `[[service]]` block.
    pub service: toml::Table,
}

/// Open-loop traffic from `from` nodes (through their upstream listener) to `service`.
#[derive(Debug, Clone)]
pub struct Workload {
    pub protocol: Protocol,
    /// Requests (or TCP exchanges) per second, on a fixed timetable.
    pub rate: u32,
    pub from: Vec<String>,
    pub service: String,
    /// A request not answered within this counts as failed (`timeout`).
    pub timeout: Duration,
    /// Requests outstanding at once at most; one due beyond it fails at once (`overflow`).
    pub max_in_flight: usize,
    pub method: String,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: Target,
    /// Offset into its phase.
    pub at: Duration,
    /// How long it lasts; `None`: to the end of the phase.
    pub lasts: Option<Duration>,
}

/// Who a fault or a check is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One node chosen with the seed (never a workload source).
    One,
    /// Fewer than half of the nodes, chosen with the seed (never a workload source).
    Minority,
    /// More than half of the nodes, chosen with the seed (sources included when needed).
    Majority,
    All,
    /// The consensus leader, asked of the agents when the fault starts (needs consensus).
    Leader,
    /// Every voter.
    Voter,
    /// Every node that is not a voter.
    NonVoter,
    /// Fewer than half of the voters, drawn with the seed (sparing workload sources).
    VoterMinority,
    /// More than half of the voters, drawn with the seed (sparing workload sources).
    VoterMajority,
    Node(String),
    Zone(String),
    /// Checks only: the nodes the faults of the check's window were aimed at.
    Faulted,
    /// Network peers only: every node not in the fault's target.
    Rest,
}

impl Target {
    /// Whether the nodes it names depend on the agents' consensus roles, which only the
    /// agents know (they elect the leader and choose the voters): such a target is resolved
    /// when its fault starts, by asking them.
    pub fn asks_agents(&self, consensus: bool) -> bool {
        match self {
            Target::Leader => true,
            Target::Voter | Target::NonVoter | Target::VoterMinority | Target::VoterMajority => {
                consensus
            }
            _ => false,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::One => f.write_str("one"),
            Target::Minority => f.write_str("minority"),
            Target::Majority => f.write_str("majority"),
            Target::All => f.write_str("all"),
            Target::Leader => f.write_str("leader"),
            Target::Voter => f.write_str("voter"),
            Target::NonVoter => f.write_str("non-voter"),
            Target::VoterMinority => f.write_str("voter-minority"),
            Target::VoterMajority => f.write_str("voter-majority"),
            Target::Node(n) => write!(f, "node:{n}"),
            Target::Zone(z) => write!(f, "zone:{z}"),
            Target::Faulted => f.write_str("faulted"),
            Target::Rest => f.write_str("rest"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// kill -9 at the start; started again when the fault heals.
    Kill,
    /// SIGSTOP at the start, SIGCONT when it heals: alive to the kernel, dead to peers.
    Stop,
    /// kill -9 and start again at once.
    Restart,
    /// Each target in turn: SIGTERM (a graceful leave), start again, wait `interval`.
    RollingRestart { interval: Duration },
    /// On the links between the target and `peer`, through the fault relay.
    Network {
        effect: NetEffect,
        peer: Target,
        direction: Direction,
    },
    /// The harness's backends on the target nodes (for one service and version, or all).
    Backend {
        effect: BackendEffect,
        service: Option<String>,
        version: Option<String>,
    },
    /// The target restarts with a bad certificate; the good one comes back when it heals.
    Certificate(CertFlaw),
    /// The target restarts with its clock shifted (libfaketime); healed by a clean restart.
    ClockSkew { offset_secs: i64 },
    /// Asks the target's agent (once, when the fault starts) to rotate the mesh CA; nothing
    /// to heal.
    CaRotate,
    /// The target restarts (gracefully) as a lying observer: a real agent that keeps telling
    /// its quarantine book that requests to `about` fail; healed by a graceful restart as
    /// itself.
    LyingObserver { about: String },
    /// The targets' configuration files get this access policy and the agents are told to
    /// reload (SIGHUP); nothing to heal.
    PolicyChange(PolicySpec),
}

impl FaultKind {
    /// Whether it is an action at one instant, with nothing to heal (its window starts and
    /// ends together).
    pub fn is_instant(&self) -> bool {
        matches!(
            self,
            FaultKind::Restart
                | FaultKind::RollingRestart { .. }
                | FaultKind::CaRotate
                | FaultKind::PolicyChange(_)
        )
    }

    /// The kind as written in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Restart => "restart",
            FaultKind::RollingRestart { .. } => "rolling-restart",
            FaultKind::Network { effect, .. } => effect.name(),
            FaultKind::Backend { effect, .. } => effect.name(),
            FaultKind::Certificate(flaw) => flaw.name(),
            FaultKind::ClockSkew { .. } => "clock-skew",
            FaultKind::CaRotate => "ca-rotate",
            FaultKind::LyingObserver { .. } => "lying-observer",
            FaultKind::PolicyChange(_) => "policy-change",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NetEffect {
    Partition,
    Loss {
        rate: f64,
    },
    Latency {
        delay: Duration,
        jitter: Duration,
    },
    /// A share of datagrams held back so later ones overtake them (the relay's fixed hold).
    Reorder {
        rate: f64,
    },
    Duplicate {
        rate: f64,
    },
    Bandwidth {
        bytes_per_sec: u64,
    },
}

impl NetEffect {
    pub fn name(&self) -> &'static str {
        match self {
            NetEffect::Partition => "partition",
            NetEffect::Loss { .. } => "loss",
            NetEffect::Latency { .. } => "latency",
            NetEffect::Reorder { .. } => "reorder",
            NetEffect::Duplicate { .. } => "duplicate",
            NetEffect::Bandwidth { .. } => "bandwidth",
        }
    }
}

/// Which ordered links of a network fault are affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Both,
    /// target → peer only.
    Outbound,
    /// peer → target only.
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackendEffect {
    Errors { rate: f64, status: u16 },
    Latency { delay: Duration, jitter: Duration },
    Hang,
    Reset { rate: f64 },
}

impl BackendEffect {
    pub fn name(&self) -> &'static str {
        match self {
            BackendEffect::Errors { .. } => "backend-errors",
            BackendEffect::Latency { .. } => "backend-latency",
            BackendEffect::Hang => "backend-hang",
            BackendEffect::Reset { .. } => "backend-reset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFlaw {
    Expired,
    NotYetValid,
    WrongTrustDomain,
    Untrusted,
}

impl CertFlaw {
    pub fn name(&self) -> &'static str {
        match self {
            CertFlaw::Expired => "cert-expired",
            CertFlaw::NotYetValid => "cert-not-yet-valid",
            CertFlaw::WrongTrustDomain => "cert-wrong-trust-domain",
            CertFlaw::Untrusted => "cert-untrusted",
        }
    }
}

/// Every mistake in a scenario file, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioErrors(pub Vec<String>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ScenarioErrors {}

impl Scenario {
    /// Reads and validates the scenario at `path`.
    pub fn load(path: &Path) -> Result<Self, ScenarioErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ScenarioErrors(vec![format!(
                "{}: (file): cannot read: {e}",
                path.display()
            )])
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates `text`; `path` names it in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ScenarioErrors> {
        validate::scenario(path, text)
    }

    /// The whole run's planned length.
    pub fn length(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }
}

#[cfg(test)]
mod tests;
