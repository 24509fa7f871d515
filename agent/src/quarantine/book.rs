//! What this agent saw each peer do over the last minute, and which of it is an anomaly worth
//! reporting. Pure: events and reports take the time as an argument.
//!
//! Events are counted per peer in 5 s buckets kept for [`OBSERVE_WINDOW`] (bounded memory per
//! peer, whatever the request rate). A report ([`PeerReport`]) is made when, over the window:
//!
//! - **error or reset share**: the peer's share of failed (or reset) attempts is at least
//!   [`MIN_SHARE`], [`RATE_FACTOR`] times and [`RATE_MARGIN`] above the median share of the
//!   *other* peers this agent called (at least [`MIN_ATTEMPTS`] attempts each), with at least
//!   [`MIN_ATTEMPTS`] attempts and [`MIN_FAILURES`] failures. With no other peer to compare
//!   with there is no report: a share is only anomalous against the mesh, and an agent whose
//!   every peer fails is more likely the one in trouble. Outlier ejection keeps a failing peer's
//!   attempts to a few per minute, which is why the minimum counts are small and the window long.
//! - **repeated ejection**: the peer's endpoints were ejected at least [`MIN_EJECTIONS`] times
//!   (a failed half-open probe after an ejection), far more than the other peers'. This is how
//!   a peer that turns bad after serving well is seen: ejection stops its failures long before
//!   they outweigh its earlier successes.
//! - **handshake or protocol violations**: at least [`MIN_VIOLATIONS`] in the window, far above
//!   the other peers' median (which is normally zero).
//! - **policy refusals**: at least [`MIN_REFUSALS`] calls the access policy refused.
//! - **traffic surge**: the peer's requests over the last 10 s are at least [`SURGE_FACTOR`]
//!   times its own history (a bias-corrected EWMA with a 5 min time constant, after at least
//!   [`MIN_HISTORY`] of it and [`SURGE_HISTORY_FLOOR`] per second), and at least
//!   [`SURGE_FLOOR`] per second: a caller that starts calling is not a surge.
//!
//! A report's `since_ms` is when this book first saw the anomaly, held without a break.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use plexus_protocol::gossip::{MAX_REPORTS_PER_NODE, OBSERVATIONS_BUDGET};
use plexus_protocol::{AnomalySignal, NodeId, PeerObservations, PeerReport};

use super::PeerEvent;

mod findings;
use findings::{count_findings, ejection_finding, share_findings, surge_finding, Finding};

/// Width of one counting bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// How far back the book looks.
pub const OBSERVE_WINDOW: Duration = Duration::from_secs(60);
/// Attempts a peer needs in the window before its shares say anything.
pub const MIN_ATTEMPTS: u32 = 5;
/// Failed (or reset) attempts an error (reset) report needs.
pub const MIN_FAILURES: u32 = 5;
/// Least ejections of a peer's endpoints in the window that are an anomaly: the second one
/// means the half-open probe after the first failed as well.
pub const MIN_EJECTIONS: u32 = 2;
/// Least share of failed (reset) attempts that is anomalous.
pub const MIN_SHARE: f64 = 0.5;
/// How many times the other peers' median share a share must be.
pub const RATE_FACTOR: f64 = 4.0;
/// How far above the other peers' median share a share must be.
pub const RATE_MARGIN: f64 = 0.3;
/// Handshake or protocol violations a report needs.
pub const MIN_VIOLATIONS: u32 = 3;
/// Policy refusals a report needs.
pub const MIN_REFUSALS: u32 = 10;
/// The recent traffic a surge is measured over.
pub const SURGE_RECENT: Duration = Duration::from_secs(10);
/// Time constant of a peer's traffic history.
pub const HISTORY_TAU: Duration = Duration::from_secs(300);
/// History a peer needs before its traffic can surge.
pub const MIN_HISTORY: Duration = Duration::from_secs(120);
/// Least historical rate (per second) a surge is measured against.
pub const SURGE_HISTORY_FLOOR: f64 = 5.0;
/// How many times its history a peer's recent traffic must be.
pub const SURGE_FACTOR: f64 = 10.0;
/// Least recent rate (per second) that is a surge.
pub const SURGE_FLOOR: f64 = 100.0;
/// Most peers the book follows.
pub const MAX_PEERS: usize = 4096;

const BUCKET_MS: u128 = BUCKET.as_millis();
const WINDOW_BUCKETS: u64 = (OBSERVE_WINDOW.as_millis() / BUCKET_MS) as u64;
const RECENT_BUCKETS: u64 = (SURGE_RECENT.as_millis() / BUCKET_MS) as u64;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    ok: u32,
    failed: u32,
    reset: u32,
    handshake: u32,
    protocol: u32,
    policy: u32,
    served: u32,
    ejected: u32,
}

impl Counts {
    fn add(&mut self, event: PeerEvent) {
        let slot = match event {
            PeerEvent::RequestOk => &mut self.ok,
            PeerEvent::RequestFailed => &mut self.failed,
            PeerEvent::Reset => &mut self.reset,
            PeerEvent::HandshakeViolation => &mut self.handshake,
            PeerEvent::ProtocolViolation => &mut self.protocol,
            PeerEvent::PolicyRefusal => &mut self.policy,
            PeerEvent::Served => &mut self.served,
            PeerEvent::Ejected => &mut self.ejected,
        };
        *slot = slot.saturating_add(1);
    }

    fn merge(&mut self, other: &Counts) {
        self.ok = self.ok.saturating_add(other.ok);
        self.failed = self.failed.saturating_add(other.failed);
        self.reset = self.reset.saturating_add(other.reset);
        self.handshake = self.handshake.saturating_add(other.handshake);
        self.protocol = self.protocol.saturating_add(other.protocol);
        self.policy = self.policy.saturating_add(other.policy);
        self.served = self.served.saturating_add(other.served);
        self.ejected = self.ejected.saturating_add(other.ejected);
    }

    fn attempts(&self) -> u32 {
        self.ok
            .saturating_add(self.failed)
            .saturating_add(self.reset)
    }
}

/// A peer's traffic history: an EWMA of its per-bucket rate, bias-corrected.
#[derive(Debug, Default, Clone)]
struct History {
    ewma: f64,
    /// Buckets folded in so far.
    folded: u32,
    /// The next bucket index to fold.
    next: Option<u64>,
}

impl History {
    fn alpha() -> f64 {
        BUCKET.as_secs_f64() / HISTORY_TAU.as_secs_f64()
    }

    /// Folds every bucket before `until` (absent buckets count as silence).
    fn fold(&mut self, buckets: &VecDeque<(u64, Counts)>, until: u64) {
        let alpha = Self::alpha();
        let Some(first) = buckets.front().map(|(i, _)| *i) else {
            return;
        };
        let start = self.next.unwrap_or(first);
        let mut next = start;
        for (index, counts) in buckets.iter().filter(|(i, _)| *i >= start && *i < until) {
            self.silence(index - next, alpha);
            let rate = f64::from(counts.served) / BUCKET.as_secs_f64();
            self.ewma += alpha * (rate - self.ewma);
            self.folded = self.folded.saturating_add(1);
            next = index + 1;
        }
        if until > next {
            self.silence(until - next, alpha);
            next = until;
        }
        self.next = Some(next);
    }

    fn silence(&mut self, buckets: u64, alpha: f64) {
        if buckets > 0 {
            let n = i32::try_from(buckets).unwrap_or(i32::MAX);
            self.ewma *= (1.0 - alpha).powi(n);
            self.folded = self
                .folded
                .saturating_add(u32::try_from(buckets).unwrap_or(u32::MAX));
        }
    }

    /// The historical rate per second, once there is enough history.
    fn rate(&self) -> Option<f64> {
        let observed = BUCKET * self.folded;
        if observed < MIN_HISTORY {
            return None;
        }
        let n = i32::try_from(self.folded).unwrap_or(i32::MAX);
        let correction = 1.0 - (1.0 - Self::alpha()).powi(n);
        Some(self.ewma / correction.max(f64::EPSILON))
    }
}

#[derive(Debug, Default)]
struct PeerRecord {
    /// (bucket index, counts), oldest first, within the window.
    buckets: VecDeque<(u64, Counts)>,
    /// The peer's gossip generation when last told: a restart starts the record over.
    generation: Option<u64>,
    /// Since when each current anomaly has held.
    since: BTreeMap<AnomalySignal, Instant>,
    history: History,
}

impl PeerRecord {
    /// Folds what leaves the recent window into the history and drops what leaves the window.
    fn maintain(&mut self, now_index: u64) {
        let recent_start = now_index.saturating_sub(RECENT_BUCKETS - 1);
        self.history.fold(&self.buckets, recent_start);
        let window_start = now_index.saturating_sub(WINDOW_BUCKETS - 1);
        while self.buckets.front().is_some_and(|(i, _)| *i < window_start) {
            self.buckets.pop_front();
        }
    }

    fn window(&self) -> Counts {
        let mut total = Counts::default();
        for (_, counts) in &self.buckets {
            total.merge(counts);
        }
        total
    }

    fn recent_served(&self, now_index: u64) -> u32 {
        let start = now_index.saturating_sub(RECENT_BUCKETS - 1);
        self.buckets
            .iter()
            .filter(|(i, _)| *i >= start)
            .map(|(_, c)| c.served)
            .sum()
    }
}

/// The events seen per peer, and the anomalies in them.
#[derive(Debug)]
pub struct ObservationBook {
    origin: Instant,
    peers: HashMap<NodeId, PeerRecord>,
}

impl ObservationBook {
    /// A book whose buckets are counted from `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            peers: HashMap::new(),
        }
    }

    fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() / BUCKET_MS) as u64
    }

    /// Records one event about `peer` at `now`.
    pub fn record(&mut self, peer: &NodeId, event: PeerEvent, now: Instant) {
        let index = self.index(now);
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= MAX_PEERS {
                return;
            }
            self.peers.insert(peer.clone(), PeerRecord::default());
        }
        let Some(record) = self.peers.get_mut(peer) else {
            return;
        };
        match record.buckets.back_mut() {
            Some((i, counts)) if *i >= index => counts.add(event),
            _ => {
                record.maintain(index);
                let mut counts = Counts::default();
                counts.add(event);
                record.buckets.push_back((index, counts));
            }
        }
    }

    /// Follows a peer's gossip generation: a restarted peer starts with a clean record.
    pub fn follow_generation(&mut self, peer: &NodeId, generation: u64) {
        if let Some(record) = self.peers.get_mut(peer) {
            if record.generation.is_some_and(|g| g != generation) {
                *record = PeerRecord::default();
            }
            record.generation = Some(generation);
        }
    }

    /// Forgets everything about `peer` (it was quarantined: its evidence has been used).
    pub fn forget(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }

    /// Peers the book follows now.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// The anomalies seen now, as the reports to publish: at most
    /// [`MAX_REPORTS_PER_NODE`] and within [`OBSERVATIONS_BUDGET`] (the most severe kept),
    /// sorted by subject and signal. `now_ms` is the Unix time at `now`.
    pub fn reports(&mut self, now: Instant, now_ms: u64) -> Vec<PeerReport> {
        let index = self.index(now);
        for record in self.peers.values_mut() {
            record.maintain(index);
        }
        self.peers.retain(|_, r| !r.buckets.is_empty());
        let windows: Vec<(NodeId, Counts)> = self
            .peers
            .iter()
            .map(|(peer, record)| (peer.clone(), record.window()))
            .collect();
        let mut findings = Vec::new();
        for (peer, counts) in &windows {
            let others = || {
                windows
                    .iter()
                    .filter(move |(p, _)| p != peer)
                    .map(|(_, c)| c)
            };
            findings.extend(share_findings(peer, counts, others));
            findings.extend(ejection_finding(peer, counts, others));
            findings.extend(count_findings(peer, counts, others));
            if let Some(record) = self.peers.get(peer) {
                findings.extend(surge_finding(peer, record, index));
            }
        }
        // Since when each anomaly has held: forgotten once it no longer holds.
        let mut reports: Vec<(f64, PeerReport)> = Vec::new();
        for (peer, record) in &mut self.peers {
            let current: Vec<&Finding> = findings.iter().filter(|f| &f.subject == peer).collect();
            record
                .since
                .retain(|signal, _| current.iter().any(|f| f.signal == *signal));
            for finding in current {
                let since = *record.since.entry(finding.signal).or_insert(now);
                let held = u64::try_from(now.saturating_duration_since(since).as_millis())
                    .unwrap_or(u64::MAX);
                reports.push((
                    finding.severity(),
                    PeerReport {
                        subject: finding.subject.clone(),
                        signal: finding.signal,
                        value: finding.value as f32,
                        reference: finding.reference as f32,
                        since_ms: now_ms.saturating_sub(held),
                    },
                ));
            }
        }
        reports.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut reports: Vec<PeerReport> = reports
            .into_iter()
            .take(MAX_REPORTS_PER_NODE)
            .map(|(_, r)| r)
            .collect();
        while !reports.is_empty() && !fits(&reports) {
            reports.pop();
        }
        reports.sort_by(|a, b| (&a.subject, a.signal).cmp(&(&b.subject, b.signal)));
        reports
    }
}

fn fits(reports: &[PeerReport]) -> bool {
    let observations = PeerObservations {
        reports: reports.to_vec(),
    };
    observations
        .encode()
        .is_ok_and(|bytes| bytes.len() <= OBSERVATIONS_BUDGET)
}

#[cfg(test)]
mod tests;
