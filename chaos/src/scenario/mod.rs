//! Scenario files: topology, workload, phases with faults, and checks, validated up front.
//! Every mistake is reported on its own line as `FILE: KEY: REASON`.

mod consensus;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use consensus::{CanaryEnd, CanarySpec, ConsensusSpec};

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
}

impl FaultKind {
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

/// A steady-state promise and when it must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub mode: Mode,
    /// Only this phase (default: the window the mode implies).
    pub phase: Option<String>,
    /// Skip this much at the start of the window (time allowed to react).
    pub after: Duration,
    /// End the run at once when this check fails.
    pub abort: bool,
    /// `continuous`: the share of 1 s slices that must pass, in percent.
    pub pass_percent: f64,
}

/// When a check is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Before the first fault.
    Before,
    /// From the first fault's start to the last fault's heal.
    During,
    /// After the last fault healed.
    After,
    /// Every 1 s slice of the whole run.
    Continuous,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Before => "before",
            Mode::During => "during",
            Mode::After => "after",
            Mode::Continuous => "continuous",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Share of requests answered 2xx (or echoed in full), at least `min`.
    SuccessRate { min: f64 },
    /// The `quantile` latency at most `max`.
    Latency { quantile: f64, max: Duration },
    /// The target's share of answered requests within [`min`, `max`].
    TrafficShare {
        target: Target,
        min: Option<f64>,
        max: Option<f64>,
    },
    /// From the window's start until the target's share stays at or under `below`.
    TimeToShift {
        target: Target,
        below: f64,
        max: Duration,
    },
    /// From the window's start until an agent ejects the target.
    TimeToEject { target: Target, max: Duration },
    /// From the window's start until every running agent reports the target dead.
    TimeToDetect { target: Target, max: Duration },
    /// Backend attempts per workload request at most `max`.
    RetryAmplification { max: f64 },
    /// Peak agent RSS at most `max_mib`.
    AgentRss { max_mib: f64 },
    /// Failed TLS handshakes counted by the agents not targeted by a fault, at most `max`.
    FailedHandshakes { max: f64 },
    /// Needs consensus: no node that no fault targeted was ever quarantined.
    NoHealthyQuarantined,
    /// Needs consensus: the target is quarantined within `max`.
    QuarantineWithin { target: Target, max: Duration },
    /// Needs consensus: every voter ends with the same committed log.
    VoterLogsIdentical,
    /// Needs consensus: every acknowledged decision is in the final log.
    NoDecisionLost,
    /// Needs a `[[canary]]`: the service's committed release ends as `expect` within `max`.
    CanaryOutcome {
        service: String,
        expect: CanaryEnd,
        max: Duration,
    },
    /// Needs consensus: within `max`, the target is out of the committed voter set and the
    /// set has `voters` members again.
    VotersReplaced {
        target: Target,
        max: Duration,
        voters: usize,
    },
    /// Needs consensus: within `max`, among the agents no process or network fault holds at
    /// that moment, one leads, every voter names it, and every one has applied what was
    /// committed by the window's start.
    DecisionsResume { max: Duration },
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::SuccessRate { .. } => "success-rate",
            CheckKind::Latency { .. } => "latency",
            CheckKind::TrafficShare { .. } => "traffic-share",
            CheckKind::TimeToShift { .. } => "time-to-shift",
            CheckKind::TimeToEject { .. } => "time-to-eject",
            CheckKind::TimeToDetect { .. } => "time-to-detect",
            CheckKind::RetryAmplification { .. } => "retry-amplification",
            CheckKind::AgentRss { .. } => "agent-rss",
            CheckKind::FailedHandshakes { .. } => "failed-handshakes",
            CheckKind::NoHealthyQuarantined => "no-healthy-quarantined",
            CheckKind::QuarantineWithin { .. } => "quarantine-within",
            CheckKind::VoterLogsIdentical => "voter-logs-identical",
            CheckKind::NoDecisionLost => "no-decision-lost",
            CheckKind::CanaryOutcome { .. } => "canary-outcome",
            CheckKind::VotersReplaced { .. } => "voters-replaced",
            CheckKind::DecisionsResume { .. } => "decisions-resume",
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
