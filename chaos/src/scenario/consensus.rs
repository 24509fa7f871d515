//! What a scenario says about the agents' decision log: their `[consensus]` table and the
//! `[[canary]]` releases the leader runs.

use std::time::Duration;

/// The agents' `[consensus]` settings (every agent gets the same).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusSpec {
    /// How many voters the agents form their group with (they choose them, across zones).
    pub bootstrap_expect: usize,
    pub election_timeout: Option<Duration>,
    pub dead_voter_after: Option<Duration>,
    pub weights_window: Option<Duration>,
}

/// One `[[canary]]` release.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    pub service: String,
    pub baseline: String,
    pub canary: String,
    pub step_percent: Option<u8>,
    pub interval: Option<Duration>,
    pub max_error_rate_increase: Option<f64>,
    pub max_latency_ratio: Option<f64>,
}

/// How a canary release ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryEnd {
    /// The canary's share reached 100 %.
    Promoted,
    /// The canary's share was set to 0.
    RolledBack,
}

impl CanaryEnd {
    /// As scenario files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryEnd::Promoted => "promoted",
            CanaryEnd::RolledBack => "rolled_back",
        }
    }

    /// The phase `/v1/decisions` reports for it.
    pub fn agent_phase(self) -> &'static str {
        match self {
            CanaryEnd::Promoted => "Promoted",
            CanaryEnd::RolledBack => "RolledBack",
        }
    }
}
