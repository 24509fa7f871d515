//! Routing weights per endpoint, from gossiped load, damped so that the mesh settles.
//!
//! Each tick, [`targets`] says what weight each endpoint's load deserves against its peers
//! (see `target.rs`). The [`WeightDriver`] then decides how far the *committed* weight may
//! move toward it. The rules, and why:
//!
//! - **Halfway steps.** A move goes half the distance to where the window points (at least
//!   [`WeightSettings::min_change`]; all the way when less than that would be left), so a
//!   weight going down at most halves per step, and going up rises by at most
//!   [`WeightSettings::max_step_up`] (a quarter of full by default). The half is the gain of
//!   the loop: a weight changes the very load it is judged by (less traffic, less queueing),
//!   and going all the way to a target computed under the old weight overshoots the point
//!   where target and load agree; halfway steps approach it from one side. Restoring more
//!   slowly than cutting is the usual asymmetry (AIMD, Envoy's slow start): an endpoint that
//!   only looked well while idle shows it before it is flooded again.
//! - **Stabilization windows**, after Kubernetes' HPA. Every tick's target is remembered; a
//!   weight goes down only if *every* target over the last [`WeightSettings::down_window`]
//!   asked for it, and then toward the *highest* of them; up only if every target over
//!   [`WeightSettings::up_window`] (longer) asked for it, and toward the *lowest*. A noisy
//!   signal thus moves a weight only when the whole window agrees, and each move heads for the
//!   edge of the window's range nearest to where it was, so the next move needs the whole
//!   range to drift away. The window must be covered by samples (a sample at or before its
//!   start), so a fresh leader or a just-committed change waits a full window: the history is
//!   cleared whenever the committed weight changes, since targets computed under the old
//!   weight no longer describe the new load (a settle time).
//! - **Thresholds.** A move needs the window to be at least [`WeightSettings::min_change`] away
//!   from the committed weight; a move against the direction of the last committed move needs
//!   [`WeightSettings::reversal_change`] (twice as much by default): a Schmitt trigger, so that
//!   a weight that settled by moving down does not come back up on noise.
//! - **Reversals back off.** Each reversal within [`WeightSettings::reversal_memory`] of the
//!   previous one doubles the window the next reversal needs (up to 16x), as route flap
//!   damping does: a signal noisier than the thresholds can still turn a weight around, but
//!   less and less often.
//! - **Readiness is not damped**: an endpoint whose service is not ready goes to
//!   [`MIN_WEIGHT`] at once (readiness is already debounced by the health checker, and the
//!   endpoint takes no traffic meanwhile); when ready again it climbs back in bounded steps.
//! - **No evidence, no move**: an endpoint with too little traffic (scaled by its share, see
//!   [`evidence_floor`]) keeps its weight, and its window starts over.
//!
//! A decision is proposed only when some weight moves, and lists every endpoint of the service
//! below full weight.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use plexus_protocol::{
    Decision, DecisionKind, EndpointWeight, NodeId, ServiceDecisions, ServiceName, FULL_WEIGHT,
    MIN_WEIGHT,
};

use super::{Awaiting, Proposer};
use crate::gossip::view::ServiceEndpoint;

mod target;

use target::committed_weight;
pub use target::{evidence_floor, targets, Cause, Signal, Target};

/// Tuning of the weights policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightSettings {
    /// Requests per second an endpoint at full weight needs for its load to count (scaled
    /// down with its weight).
    pub min_requests_per_sec: f64,
    /// p99 or p50 up to this multiple of the peers' median is in line.
    pub latency_tolerance: f64,
    /// Latency excess over the peers' median always tolerated, microseconds: scheduling
    /// jitter of a sub-millisecond service is not slowness.
    pub latency_floor_us: u32,
    /// Error rate tolerated above the peers' median (absolute: 0.02 is two points).
    pub error_rate_tolerance: f64,
    /// Share of requests shed tolerated above the peers' median.
    pub shed_rate_tolerance: f64,
    /// Utilization (in flight over the concurrency limit) below which spare capacity is no
    /// signal at all.
    pub busy_utilization: f64,
    /// Above `busy_utilization`, the spare capacity an endpoint needs as a share of its
    /// peers' median spare capacity.
    pub spare_tolerance: f64,
    /// Least move of a weight, and least distance of the window from the committed weight.
    pub min_change: u32,
    /// Least distance for a move against the last committed move's direction.
    pub reversal_change: u32,
    /// Most a weight rises per step.
    pub max_step_up: u32,
    /// How long every target must have asked for less before a weight goes down.
    pub down_window: Duration,
    /// How long every target must have asked for more before a weight goes up.
    pub up_window: Duration,
    /// How long a reversal is remembered: each reversal within it of the previous one doubles
    /// the window the next reversal needs (up to 16x).
    pub reversal_memory: Duration,
}

impl Default for WeightSettings {
    fn default() -> Self {
        Self {
            // 0.2, not 1: callers' balancers route around a slow endpoint, so it gets a
            // request every few seconds; at 1 req/s that left no evidence, and no weight
            // change, once callers measured their other endpoints below a millisecond.
            min_requests_per_sec: 0.2,
            latency_tolerance: 1.5,
            latency_floor_us: 1_000,
            error_rate_tolerance: 0.02,
            shed_rate_tolerance: 0.05,
            busy_utilization: 0.5,
            spare_tolerance: 0.5,
            min_change: FULL_WEIGHT / 20,
            reversal_change: FULL_WEIGHT / 10,
            max_step_up: FULL_WEIGHT / 4,
            down_window: Duration::from_secs(10),
            up_window: Duration::from_secs(30),
            reversal_memory: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Down,
    Up,
}

/// What the driver remembers of one endpoint.
#[derive(Debug, Default)]
struct Track {
    /// The committed weight when last seen.
    seen: Option<u32>,
    /// The direction of the last committed change seen.
    last_move: Option<Direction>,
    /// Reversals seen in a row, each within `reversal_memory` of the previous one.
    reversals: u32,
    last_reversal: Option<Instant>,
    /// Targets since the committed weight last changed, oldest first.
    samples: VecDeque<(Instant, u32)>,
}

impl Track {
    /// Notes the committed weight; a change ends the history (see the module docs).
    fn sync(&mut self, committed: u32, now: Instant, settings: &WeightSettings) {
        if self.seen == Some(committed) {
            return;
        }
        if let Some(previous) = self.seen {
            let direction = if committed < previous {
                Direction::Down
            } else {
                Direction::Up
            };
            if self.last_move.is_some_and(|last| last != direction) {
                self.reversals = self.recent_reversals(now, settings) + 1;
                self.last_reversal = Some(now);
            }
            self.last_move = Some(direction);
        }
        self.seen = Some(committed);
        self.samples.clear();
    }

    fn recent_reversals(&self, now: Instant, settings: &WeightSettings) -> u32 {
        match self.last_reversal {
            Some(at) if now.saturating_duration_since(at) <= settings.reversal_memory => {
                self.reversals
            }
            _ => 0,
        }
    }

    /// Remembers a target, keeping what the longest window needs (one sample at or before
    /// its start). A gap of more than `gap` since the last sample starts the history over.
    fn record(&mut self, now: Instant, target: u32, horizon: Duration, gap: Duration) {
        let gap = self
            .samples
            .back()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > gap);
        if gap {
            // Samples from before a pause (an earlier leadership) say nothing about now.
            self.samples.clear();
        }
        self.samples.push_back((now, target));
        if let Some(start) = now.checked_sub(horizon) {
            while self.samples.get(1).is_some_and(|(at, _)| *at <= start) {
                self.samples.pop_front();
            }
        }
    }

    /// The lowest and highest target over the last `window`, if samples cover all of it.
    fn range(&self, now: Instant, window: Duration) -> Option<(u32, u32)> {
        let start = now.checked_sub(window)?;
        let from = self.samples.iter().rposition(|(at, _)| *at <= start)?;
        self.samples
            .iter()
            .skip(from)
            .fold(None, |acc, (_, t)| match acc {
                None => Some((*t, *t)),
                Some((lo, hi)) => Some((lo.min(*t), hi.max(*t))),
            })
    }

    /// Where the committed weight may go now.
    fn next(&self, current: u32, now: Instant, settings: &WeightSettings) -> u32 {
        let backoff = 1u32
            << self
                .recent_reversals(now, settings)
                .min(MAX_BACKOFF_DOUBLINGS);
        // (window, threshold) for a move in `direction`.
        let rule = |direction: Direction, window: Duration| {
            if self.last_move.is_some_and(|last| last != direction) {
                (window * backoff, settings.reversal_change)
            } else {
                (window, settings.min_change)
            }
        };
        let (window, threshold) = rule(Direction::Down, settings.down_window);
        if let Some((_, highest)) = self.range(now, window) {
            if highest.saturating_add(threshold) <= current {
                return step(current, highest, settings).max(MIN_WEIGHT);
            }
        }
        let (window, threshold) = rule(Direction::Up, settings.up_window);
        if let Some((lowest, _)) = self.range(now, window) {
            if lowest >= current.saturating_add(threshold) {
                return step(current, lowest, settings).min(FULL_WEIGHT);
            }
        }
        current
    }
}

/// Most doublings of a reversal's window (16x).
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

/// One damped step from `current` toward `goal`: half the distance (at least `min_change`,
/// rising by at most `max_step_up`), and all of it when less than `min_change` would be left.
fn step(current: u32, goal: u32, settings: &WeightSettings) -> u32 {
    let distance = current.abs_diff(goal);
    let mut by = distance.div_ceil(2).max(settings.min_change);
    if goal > current {
        by = by.min(settings.max_step_up);
    }
    if by >= distance || distance - by < settings.min_change {
        return goal;
    }
    if goal > current {
        current + by
    } else {
        current - by
    }
}

/// The weights policy of one service: a small state machine run by the leader each tick.
#[derive(Debug)]
pub struct WeightDriver {
    settings: WeightSettings,
    tracks: BTreeMap<String, Track>,
    awaiting: Awaiting,
}

impl WeightDriver {
    pub fn new(settings: WeightSettings) -> Self {
        Self {
            settings,
            tracks: BTreeMap::new(),
            awaiting: Awaiting::default(),
        }
    }

    pub fn settings(&self) -> &WeightSettings {
        &self.settings
    }

    /// The weights decision to propose for `service` now, if any weight should move.
    /// `endpoints` are every member hosting it (routable or not); `committed` is what the log
    /// decided about it.
    pub fn decide(
        &mut self,
        service: &ServiceName,
        endpoints: &[ServiceEndpoint],
        committed: &ServiceDecisions,
        proposer: &Proposer,
        now: Instant,
    ) -> Option<Decision> {
        let settings = self.settings;
        let gap = settings.down_window.max(settings.up_window);
        let horizon = gap * (1 << MAX_BACKOFF_DOUBLINGS);
        let targets = targets(endpoints, committed, &settings);
        self.tracks
            .retain(|node, _| endpoints.iter().any(|e| &e.node_id == node));
        // (target, from, to) of every endpoint whose weight moves.
        let mut weights: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut moves: Vec<(&Target, u32, u32)> = Vec::new();
        for target in &targets {
            let Ok(node) = NodeId::new(target.node.as_str()) else {
                continue;
            };
            let current = committed_weight(committed, &target.node);
            let track = self.tracks.entry(target.node.clone()).or_default();
            track.sync(current, now, &settings);
            match target.weight {
                Some(weight) => track.record(now, weight, horizon, gap),
                None => track.samples.clear(),
            }
            let next = match target.cause {
                Cause::NotReady => MIN_WEIGHT,
                _ => track.next(current, now, &settings),
            };
            if next != current {
                moves.push((target, current, next));
            }
            weights.insert(node, next);
        }
        if moves.is_empty() || self.awaiting.waiting(committed.weights_epoch, now) {
            return None;
        }
        self.awaiting.proposed(committed.weights_epoch, now);
        moves.sort_by_key(|(t, from, to)| (std::cmp::Reverse(from.abs_diff(*to)), t.node.clone()));
        let (first, from, to) = moves[0];
        let mut reason = format!("{}: weight {from} -> {to}", first.describe());
        if moves.len() > 1 {
            reason.push_str(&format!(" (and {} more endpoints)", moves.len() - 1));
        }
        let evidence = moves.iter().flat_map(|(t, ..)| t.evidence()).collect();
        let weights = weights
            .into_iter()
            .filter(|(_, weight)| *weight < FULL_WEIGHT)
            .map(|(node, weight)| EndpointWeight { node, weight })
            .collect();
        Some(proposer.decision(
            DecisionKind::Weights {
                service: service.clone(),
                weights,
            },
            reason,
            evidence,
        ))
    }
}

#[cfg(test)]
mod tests;
