//! The reporter: every second it turns the observation book into this agent's reports and
//! publishes them in gossip (sealed, under `plexus:observations`) when they changed
//! meaningfully: a report appeared or went, an anomaly restarted, or a value moved by more
//! than a fifth. It also keeps the book in step with the mesh: a peer that restarted starts
//! clean, and a quarantined or newly released peer is forgotten (its evidence has been used;
//! what counts after its release is new), even when its quarantine was too short to be seen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_protocol::{CommittedState, NodeId, PeerObservations, PeerReport};
use tokio::sync::watch;

use super::{PeerObserver, SeenReleases};
use crate::agent::stopping;
use crate::gossip::publish::ObservationsPublisher;
use crate::gossip::MeshView;
use crate::telemetry::{names, Telemetry};

/// How often the reports are recomputed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A relative change of a value smaller than this is not worth a gossip update.
const RELATIVE: f32 = 0.2;

/// Everything the reporter needs.
pub struct Reporter {
    pub observer: PeerObserver,
    /// `[quarantine] enabled`: without it nothing is reported.
    pub enabled: bool,
    pub view: watch::Receiver<Arc<MeshView>>,
    pub committed: watch::Receiver<Arc<CommittedState>>,
    pub publisher: ObservationsPublisher,
    pub telemetry: Telemetry,
}

impl Reporter {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(REPORT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let gauge = self.telemetry.gauge(names::QUARANTINE_REPORTS, &[]);
        let mut published: Option<Vec<PeerReport>> = None;
        let mut releases = SeenReleases::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping(&mut shutdown) => return,
            }
            let reports = self.reports_now(&mut releases);
            gauge.set(reports.len() as f64);
            let due = match &published {
                None => !reports.is_empty(),
                Some(old) => observations_changed(old, &reports),
            };
            if due {
                self.publisher.publish(&PeerObservations {
                    reports: reports.clone(),
                });
                published = Some(reports.clone());
            }
            self.observer.set_reports(reports);
        }
    }

    fn reports_now(&self, releases: &mut SeenReleases) -> Vec<PeerReport> {
        let view = self.view.borrow().clone();
        let committed = self.committed.borrow().clone();
        let mut book = self.observer.book();
        for member in &view.members {
            if let Ok(node) = NodeId::new(member.node_id.as_str()) {
                book.follow_generation(&node, member.generation);
            }
        }
        // A quarantined or released node's evidence has been used: what counts is new.
        let released = releases.news(&committed.trust.released);
        for node in committed.trust.quarantined.keys().chain(&released) {
            book.forget(node);
        }
        if !self.enabled {
            return Vec::new();
        }
        book.reports(Instant::now(), unix_ms())
    }
}

/// Whether `new` reports differ from the published `old` enough to publish them.
pub fn observations_changed(old: &[PeerReport], new: &[PeerReport]) -> bool {
    let moved = |a: f32, b: f32| (a - b).abs() > a.abs().max(b.abs()) * RELATIVE;
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.subject != b.subject
                || a.signal != b.signal
                || a.since_ms != b.since_ms
                || moved(a.value, b.value)
                || moved(a.reference, b.reference)
        })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use plexus_protocol::AnomalySignal;

    use super::*;

    fn report(subject: &str, value: f32, since_ms: u64) -> PeerReport {
        PeerReport {
            subject: NodeId::new(subject).unwrap(),
            signal: AnomalySignal::ErrorRate,
            value,
            reference: 0.0,
            since_ms,
        }
    }

    #[test]
    fn only_meaningful_changes_are_published() {
        let old = vec![report("a", 0.8, 1)];
        assert!(!observations_changed(&old, &[report("a", 0.9, 1)]));
        assert!(observations_changed(&old, &[report("a", 0.5, 1)]));
        assert!(observations_changed(&old, &[report("a", 0.8, 2)]));
        assert!(observations_changed(&old, &[report("b", 0.8, 1)]));
        assert!(observations_changed(&old, &[]));
        assert!(!observations_changed(&[], &[]));
    }
}
