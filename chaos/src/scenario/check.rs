//! Checks as validated: a steady-state promise, the mode that says when it must hold, and
//! what it measures.

use std::time::Duration;

use super::{CanaryEnd, Target};

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
    /// Share of requests answered 2xx (or echoed in full), at least `min`; only those sent
    /// through the `from` sources when given (empty: every source).
    SuccessRate { min: f64, from: Vec<String> },
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
    /// Needs consensus: no node that no fault targeted was ever quarantined (an operator's
    /// action, a CA rotation or a policy change, leaves its targets healthy).
    NoHealthyQuarantined,
    /// Needs consensus: the target is quarantined within `max`.
    QuarantineWithin { target: Target, max: Duration },
    /// Needs consensus: the leader lists the target under quarantine suspicion within `max`
    /// (a report about it reached the leader).
    Suspected { target: Target, max: Duration },
    /// Needs `[trust] ca = "decision-log"` and a `ca-rotate` fault: every running agent's
    /// leaf is reissued under the new root and the old root is retired everywhere, within
    /// `max` of the rotation.
    CaRotated { max: Duration },
    /// Requests sent through the `from` sources answered 403 `policy_denied`: a share of at
    /// least `min`.
    PolicyDenied { min: f64, from: Vec<String> },
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
            CheckKind::Suspected { .. } => "suspected",
            CheckKind::CaRotated { .. } => "ca-rotated",
            CheckKind::PolicyDenied { .. } => "policy-denied",
            CheckKind::VoterLogsIdentical => "voter-logs-identical",
            CheckKind::NoDecisionLost => "no-decision-lost",
            CheckKind::CanaryOutcome { .. } => "canary-outcome",
            CheckKind::VotersReplaced { .. } => "voters-replaced",
            CheckKind::DecisionsResume { .. } => "decisions-resume",
        }
    }
}
