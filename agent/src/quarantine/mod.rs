//! Quarantine of anomalous peers: what this agent observes about its peers, and (on the leader)
//! the verdicts that need reports from several distinct observers.
//!
//! ```text
//! data plane ─ PeerObserver::record(peer, PeerEvent) ─▶ ObservationBook (per peer, 5 s buckets, 1 min)
//! reporter, every 1 s ─ book.reports() ─▶ PeerObservations ─ sealed ─▶ gossip "plexus:observations"
//! leader, every 1 s ─ QuarantineVerdict(view with everyone's reports, committed state)
//!        ─▶ Quarantine { node, serials, observers } │ Release { node } ─▶ decision log
//! every agent ─ committed deny list ─▶ routes drop the node, its connections are closed,
//!                                       the TLS verifiers refuse it
//! ```
//!
//! - [`book`]: the observations, pure: a peer's error and reset shares far above the other
//!   peers' median, handshake and protocol violations, policy refusals, traffic far above the
//!   peer's own history. Minimum sample counts keep light traffic from looking anomalous.
//! - [`verdict`]: the leader's decision, pure: reports from at least `min_observers` distinct
//!   observers within `window` (by default a majority of the peers that talk to the node, and
//!   never fewer than 2), never a voter majority, never more than `max_share` of the mesh, never
//!   the leader; release after a probation without fresh reports, or by the operator.
//! - [`report`] and [`effects`]: the I/O shells (publishing reports; closing connections and
//!   counting verdicts when the committed deny list changes). [`admin`]: `/v1/quarantine`.
//!
//! **Why distinct observers, and sealed reports.** Each report travels in its observer's own
//! gossip state, signed with the observer's key, so a relay cannot add reports in another
//! node's name and one node counts once however much it reports. One faulty or lying observer
//! can therefore never reach the minimum of two.
//!
//! `PeerObserver` is the handle the data plane reports peer events into; it is cheap to clone.

pub mod admin;
pub mod book;
pub mod effects;
pub mod report;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_protocol::{NodeId, PeerReport};

pub use book::ObservationBook;
pub use verdict::{release_decision, QuarantineVerdict, Suspicion};

/// The releases an agent has acted on, from the committed `trust.released` (node → log index
/// of its last release). An agent samples the committed state, so a quarantine released soon
/// after (an operator undoing a verdict at once) can pass between two samples unseen; the
/// release record still says that an episode ended and its evidence is spent.
#[derive(Debug, Default)]
pub struct SeenReleases(Option<BTreeMap<NodeId, u64>>);

impl SeenReleases {
    /// The nodes released since the last call. The first call only takes note of the record:
    /// releases from before this agent (or this leader) looked are no news.
    pub fn news(&mut self, released: &BTreeMap<NodeId, u64>) -> Vec<NodeId> {
        let news = match &self.0 {
            None => Vec::new(),
            Some(seen) => released
                .iter()
                .filter(|(node, index)| seen.get(*node) != Some(*index))
                .map(|(node, _)| node.clone())
                .collect(),
        };
        self.0 = Some(released.clone());
        news
    }
}

/// Something a peer did that quarantine may care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerEvent {
    /// A request to or from the peer succeeded.
    RequestOk,
    /// A request to the peer failed (5xx, gateway error, connection failure).
    RequestFailed,
    /// A connection or stream with the peer was reset.
    Reset,
    /// The peer broke the TLS handshake rules.
    HandshakeViolation,
    /// The peer sent a malformed frame or message.
    ProtocolViolation,
    /// The peer called a service the access policy does not allow it.
    PolicyRefusal,
    /// The peer sent this agent a request or stream (its traffic, for surges).
    Served,
    /// One of the peer's endpoints was ejected by outlier detection.
    Ejected,
}

/// The `[quarantine]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarantineSettings {
    /// Whether this agent reports anomalies and, when it leads, proposes verdicts. Committed
    /// quarantines are enforced either way.
    pub enabled: bool,
    /// Distinct observers a verdict needs; `None`: a majority of the peers that talk to the
    /// node, and at least 2.
    pub min_observers: Option<usize>,
    /// How recent an observer's report must be to count.
    pub window: Duration,
    /// How long a quarantined node stays out, at least, before it is released (once no fresh
    /// report about it arrives).
    pub probation: Duration,
    /// The largest share of the mesh quarantined at once.
    pub max_share: f64,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_observers: None,
            window: Duration::from_secs(30),
            probation: Duration::from_secs(60),
            max_share: 1.0 / 3.0,
        }
    }
}

#[derive(Debug)]
struct Shared {
    book: Mutex<ObservationBook>,
    /// The reports this agent publishes now.
    reports: Mutex<Vec<PeerReport>>,
    /// On the leader: the nodes under suspicion now.
    suspicions: Mutex<Vec<Suspicion>>,
}

/// The data plane's handle for reporting peer events; also what the admin API reads (this
/// agent's current reports, and the leader's suspicions).
///
/// ```
/// use plexus_agent::quarantine::{PeerEvent, PeerObserver};
/// use plexus_protocol::NodeId;
///
/// let observer = PeerObserver::new();
/// observer.record(&NodeId::new("node-b").unwrap(), PeerEvent::RequestOk);
/// assert!(observer.reports().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct PeerObserver {
    shared: Arc<Shared>,
}

impl Default for PeerObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerObserver {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                book: Mutex::new(ObservationBook::new(Instant::now())),
                reports: Mutex::default(),
                suspicions: Mutex::default(),
            }),
        }
    }

    /// Records one event about `peer`, now.
    pub fn record(&self, peer: &NodeId, event: PeerEvent) {
        self.book().record(peer, event, Instant::now());
    }

    /// The reports this agent publishes now.
    pub fn reports(&self) -> Vec<PeerReport> {
        lock(&self.shared.reports).clone()
    }

    /// On the leader: the nodes under suspicion now (empty elsewhere).
    pub fn suspicions(&self) -> Vec<Suspicion> {
        lock(&self.shared.suspicions).clone()
    }

    /// The leader's loop publishes its suspicions here (an empty list when it stops leading).
    pub fn set_suspicions(&self, suspicions: Vec<Suspicion>) {
        *lock(&self.shared.suspicions) = suspicions;
    }

    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, ObservationBook> {
        lock(&self.shared.book)
    }

    pub(crate) fn set_reports(&self, reports: Vec<PeerReport>) {
        *lock(&self.shared.reports) = reports;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The inbound peer connections of the agent, by the node each belongs to.
pub type InboundConnections = Box<dyn Fn() -> Vec<(NodeId, quinn::Connection)> + Send + Sync>;

/// What the agent hands quarantine's tasks.
pub struct QuarantineSetup {
    pub observer: PeerObserver,
    pub settings: QuarantineSettings,
    pub view: tokio::sync::watch::Receiver<std::sync::Arc<crate::gossip::MeshView>>,
    pub committed: tokio::sync::watch::Receiver<std::sync::Arc<plexus_protocol::CommittedState>>,
    pub publisher: crate::gossip::publish::ObservationsPublisher,
    pub pool: std::sync::Arc<crate::transport::PeerPool>,
    pub inbound: InboundConnections,
    pub telemetry: crate::telemetry::Telemetry,
}

/// Starts the reporter (this agent's reports into gossip) and the enforcement of committed
/// quarantines (connections closed, verdicts counted) in `tasks`.
pub fn start(
    setup: QuarantineSetup,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let reporter = report::Reporter {
        observer: setup.observer,
        enabled: setup.settings.enabled,
        view: setup.view,
        committed: setup.committed.clone(),
        publisher: setup.publisher,
        telemetry: setup.telemetry.clone(),
    };
    tasks.spawn(reporter.run(shutdown.clone()));
    tasks.spawn(effects::enforce(
        setup.committed,
        setup.pool,
        setup.inbound,
        setup.telemetry,
        shutdown,
    ));
}

/// A certificate serial as decisions name it: lowercase hex of its big-endian bytes.
pub fn serial_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_news_once_and_again_when_it_recurs() {
        let n = |s: &str| NodeId::new(s).unwrap();
        let mut seen = SeenReleases::default();
        let mut released = BTreeMap::from([(n("a"), 7)]);
        // What is on record at the first look happened before: no news.
        assert!(seen.news(&released).is_empty());
        released.insert(n("a"), 8);
        assert_eq!(seen.news(&released), [n("a")]);
        assert!(seen.news(&released).is_empty());
        released.insert(n("b"), 9);
        assert_eq!(seen.news(&released), [n("b")]);
        // `a` quarantined and released again: a later index is news again.
        released.insert(n("a"), 12);
        assert_eq!(seen.news(&released), [n("a")]);
    }
}
