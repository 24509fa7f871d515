//! The slow decisions, pure: given what gossip says about each service's endpoints and what the
//! decision log has committed, which [`Decision`]s the Raft leader should propose.
//!
//! Nothing here opens a socket, spawns a task or reads a clock: the leader's tick (in
//! `consensus`) hands in the endpoints, the committed state, who is proposing and the time, and
//! proposes whatever comes back. That keeps every policy testable with virtual time and lets a
//! simulation drive thousands of ticks in milliseconds.
//!
//! - [`weights`]: routing weights per endpoint from its load relative to its peers, damped
//!   (bounded steps, stabilization windows, a wider threshold for reversals) so that the mesh
//!   does not herd traffic back and forth.
//! - [`canary`]: a canary release's share, stepped up while the canary stays within its
//!   bounds against the baseline, rolled back when it does not.
//! - [`scaling`]: desired replicas per service with the Kubernetes HPA formula and its
//!   downscale stabilization.
//!
//! The policies keep a little memory (stabilization windows, when a step was first seen), so
//! they are small state machines owned by a [`Decider`] on the leader. A new leader starts with
//! empty memory: every policy then waits a full window or interval before it moves, which is
//! conservative rather than wrong.
//!
//! **A leader waits for its own proposals.** The committed state lags a proposal by a commit
//! round trip, during which the same inputs would produce the same proposal again (and a second
//! canary step would step twice). Each policy therefore remembers the committed marker (weight
//! epoch, canary step index, scaling index) it proposed against and stays quiet until that
//! marker moves, or [`RESEND_AFTER`] has passed and the proposal is presumed lost (dropped by a
//! leader change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plexus_protocol::decision::{MAX_EVIDENCE, MAX_TEXT};
use plexus_protocol::{
    CanaryPolicy, CommittedState, Decision, DecisionKind, Evidence, NodeId, ServiceDecisions,
    ServiceName,
};

use crate::gossip::view::{MeshView, ServiceEndpoint};
use crate::quarantine::{QuarantineSettings, QuarantineVerdict, Suspicion};

pub mod canary;
pub mod scaling;
pub mod weights;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use canary::CanaryDriver;
pub use scaling::{ScalingDriver, ScalingSettings};
pub use weights::{WeightDriver, WeightSettings};

/// How long a policy waits for its own proposal to show up in the committed state before it
/// proposes again (the proposal may have been dropped by a leader change).
pub const RESEND_AFTER: Duration = Duration::from_secs(10);

/// Who proposes, and when (Unix milliseconds): stamped on every decision, never read by the
/// policies themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposer {
    pub node: NodeId,
    pub now_ms: u64,
}

impl Proposer {
    /// A decision stamped with this proposer. The reason is cut to [`MAX_TEXT`] bytes (at a
    /// character boundary) and the evidence to [`MAX_EVIDENCE`] entries, so that a decision
    /// with many endpoints still passes [`Decision::validate`].
    pub fn decision(
        &self,
        kind: DecisionKind,
        reason: String,
        evidence: Vec<Evidence>,
    ) -> Decision {
        let mut reason = reason;
        if reason.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let mut evidence = evidence;
        evidence.truncate(MAX_EVIDENCE);
        Decision {
            kind,
            reason,
            evidence,
            proposer: self.node.clone(),
            proposed_at_ms: self.now_ms,
        }
    }
}

/// Settings of one service's policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePolicy {
    /// Its own weight settings, instead of [`DeciderSettings::weights`].
    pub weights: Option<WeightSettings>,
    /// A canary release to run, from the leader's configuration.
    pub canary: Option<CanaryPolicy>,
    /// Scaling hints, when wanted.
    pub scaling: Option<ScalingSettings>,
}

/// Settings of every policy: weights for every service, the rest per service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeciderSettings {
    /// Weight settings of services without their own.
    pub weights: WeightSettings,
    pub services: BTreeMap<ServiceName, ServicePolicy>,
    /// `[quarantine]`: verdicts on anomalous peers (see [`crate::quarantine::verdict`]).
    pub quarantine: QuarantineSettings,
}

impl DeciderSettings {
    fn weights_for(&self, service: &ServiceName) -> WeightSettings {
        self.services
            .get(service)
            .and_then(|p| p.weights)
            .unwrap_or(self.weights)
    }
}

#[derive(Debug, Default)]
struct ServiceDrivers {
    weights: Option<WeightDriver>,
    canary: CanaryDriver,
    scaling: Option<ScalingDriver>,
}

/// Every policy of every service, as run by the Raft leader each tick.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Instant;
/// use plexus_agent::decide::{Decider, DeciderSettings, Proposer};
/// use plexus_protocol::{CommittedState, NodeId};
///
/// let mut decider = Decider::new(DeciderSettings::default());
/// let proposer = Proposer { node: NodeId::new("node-a").unwrap(), now_ms: 0 };
/// let decisions = decider.decide(&BTreeMap::new(), &CommittedState::default(), &proposer, Instant::now());
/// assert!(decisions.is_empty());
/// ```
#[derive(Debug)]
pub struct Decider {
    settings: DeciderSettings,
    services: BTreeMap<ServiceName, ServiceDrivers>,
    quarantine: QuarantineVerdict,
}

impl Decider {
    pub fn new(settings: DeciderSettings) -> Self {
        Self {
            quarantine: QuarantineVerdict::new(settings.quarantine),
            settings,
            services: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &DeciderSettings {
        &self.settings
    }

    /// Replaces the settings (a configuration reload). Drivers whose settings changed start
    /// over with empty memory; the others keep theirs.
    pub fn set_settings(&mut self, settings: DeciderSettings) {
        for (service, drivers) in &mut self.services {
            if self.settings.weights_for(service) != settings.weights_for(service) {
                drivers.weights = None;
            }
            let policy = |s: &DeciderSettings| s.services.get(service).cloned().unwrap_or_default();
            let (old, new) = (policy(&self.settings), policy(&settings));
            if old.canary != new.canary {
                drivers.canary = CanaryDriver::default();
            }
            if old.scaling != new.scaling {
                drivers.scaling = None;
            }
        }
        if self.settings.quarantine != settings.quarantine {
            self.quarantine = QuarantineVerdict::new(settings.quarantine);
        }
        self.settings = settings;
    }

    /// What to propose now, for every service: weights for every service with endpoints, a
    /// canary step for every configured canary, a scaling hint for every service with scaling
    /// settings. `endpoints` is what [`MeshView::services`] gives.
    pub fn decide(
        &mut self,
        endpoints: &BTreeMap<ServiceName, Vec<ServiceEndpoint>>,
        committed: &CommittedState,
        proposer: &Proposer,
        now: Instant,
    ) -> Vec<Decision> {
        self.services
            .retain(|s, _| endpoints.contains_key(s) || self.settings.services.contains_key(s));
        let names: Vec<ServiceName> = endpoints
            .keys()
            .chain(self.settings.services.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let empty = ServiceDecisions::default();
        let mut out = Vec::new();
        for service in names {
            let here = endpoints.get(&service).map(Vec::as_slice).unwrap_or(&[]);
            let decided = committed.services.get(&service).unwrap_or(&empty);
            let policy = self.settings.services.get(&service);
            let weights = self.settings.weights_for(&service);
            let drivers = self.services.entry(service.clone()).or_default();
            if !here.is_empty() {
                let driver = drivers
                    .weights
                    .get_or_insert_with(|| WeightDriver::new(weights));
                out.extend(driver.decide(&service, here, decided, proposer, now));
            }
            let canary = policy.and_then(|p| p.canary.as_ref());
            if canary.is_some() {
                out.extend(
                    drivers
                        .canary
                        .decide(&service, canary, decided, here, proposer, now),
                );
            }
            if let Some(scaling) = policy.and_then(|p| p.scaling) {
                let driver = drivers
                    .scaling
                    .get_or_insert_with(|| ScalingDriver::new(scaling));
                out.extend(driver.decide(&service, here, decided, proposer, now));
            }
        }
        out
    }

    /// [`Decider::decide`] over a mesh view, and the quarantine verdicts on its members.
    pub fn decide_view(
        &mut self,
        view: &MeshView,
        committed: &CommittedState,
        proposer: &Proposer,
        now: Instant,
    ) -> Vec<Decision> {
        let mut out = self.decide(&view.services(), committed, proposer, now);
        out.extend(self.quarantine.decide(view, committed, proposer, now));
        out
    }

    /// The nodes under suspicion at the last [`Decider::decide_view`].
    pub fn suspicions(&self) -> &[Suspicion] {
        self.quarantine.suspicions()
    }
}

/// One piece of evidence.
pub(crate) fn evidence(
    subject: impl Into<String>,
    signal: &str,
    value: f64,
    reference: Option<f64>,
) -> Evidence {
    Evidence {
        subject: subject.into(),
        signal: signal.to_owned(),
        value,
        reference,
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Microseconds as milliseconds for a reason line: `9.8 ms`.
pub(crate) fn ms(us: f64) -> String {
    format!("{:.1} ms", us / 1000.0)
}

/// A share as a percentage for a reason line: `12.0%`.
pub(crate) fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The proposal a policy made and has not seen committed yet (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Awaiting {
    proposed: Option<(u64, Instant)>,
}

impl Awaiting {
    /// Whether the policy should stay quiet: it proposed against `marker`, the committed
    /// marker has not moved since, and [`RESEND_AFTER`] has not passed.
    pub(crate) fn waiting(&self, marker: u64, now: Instant) -> bool {
        self.proposed.is_some_and(|(proposed_against, at)| {
            proposed_against == marker && now.saturating_duration_since(at) < RESEND_AFTER
        })
    }

    /// Records a proposal made against `marker`.
    pub(crate) fn proposed(&mut self, marker: u64, now: Instant) {
        self.proposed = Some((marker, now));
    }
}
