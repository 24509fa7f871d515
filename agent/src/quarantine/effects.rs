//! What a committed quarantine does on every agent, beyond routing (routes drop quarantined
//! endpoints themselves, see `proxy::route`) and the TLS verifiers (which refuse the node's
//! certificates): existing connections to and from a quarantined node are closed, and the
//! verdicts are counted. Run whenever the committed state changes, and every second, so a
//! connection that slipped in (a dial racing the commit) does not stay.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plexus_protocol::{CommittedState, NodeId};
use tokio::sync::watch;

use crate::agent::stopping;
use crate::telemetry::{names, Telemetry};
use crate::transport::PeerPool;

/// The QUIC application close code of a connection closed because its peer is quarantined.
pub const QUARANTINED_CLOSE: u32 = 0x51;
/// How often connections are checked besides on every committed change.
const RECHECK: Duration = Duration::from_secs(1);

/// Closes the connections of quarantined nodes; returns how many it closed.
pub fn close_quarantined(
    quarantined: &BTreeSet<NodeId>,
    connections: impl IntoIterator<Item = (NodeId, quinn::Connection)>,
) -> usize {
    let mut closed = 0;
    for (node, connection) in connections {
        if quarantined.contains(&node) && connection.close_reason().is_none() {
            connection.close(QUARANTINED_CLOSE.into(), b"quarantined");
            tracing::info!(peer = %node, "connection to a quarantined node closed");
            closed += 1;
        }
    }
    closed
}

/// Every agent: follows the committed deny list, closing connections to and from quarantined
/// nodes (outbound ones in `pool`, inbound ones from `inbound`) and exporting
/// `plexus_quarantined_nodes` and `plexus_quarantine_verdicts_total`.
pub async fn enforce(
    mut committed: watch::Receiver<Arc<CommittedState>>,
    pool: Arc<PeerPool>,
    inbound: impl Fn() -> Vec<(NodeId, quinn::Connection)> + Send + 'static,
    telemetry: Telemetry,
    mut shutdown: watch::Receiver<bool>,
) {
    let gauge = telemetry.gauge(names::QUARANTINED_NODES, &[]);
    let verdict =
        |kind: &'static str| telemetry.counter(names::QUARANTINE_VERDICTS, &[("verdict", kind)]);
    let (quarantine, release) = (verdict("quarantine"), verdict("release"));
    // What was committed before this agent started is not news.
    let mut known: BTreeSet<NodeId> = quarantined(&committed.borrow_and_update());
    let mut ticks = tokio::time::interval(RECHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        gauge.set(known.len() as f64);
        if !known.is_empty() {
            let outbound = pool
                .connected()
                .into_iter()
                .map(|(_, peer)| (peer.node_id, peer.connection));
            close_quarantined(&known, outbound.chain(inbound()));
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = ticks.tick() => {}
            _ = stopping(&mut shutdown) => return,
        }
        let now = quarantined(&committed.borrow_and_update());
        for node in now.difference(&known) {
            tracing::warn!(peer = %node, "node quarantined: its connections are closed and refused");
            quarantine.increment(1);
        }
        for node in known.difference(&now) {
            tracing::info!(peer = %node, "node released from quarantine");
            release.increment(1);
        }
        known = now;
    }
}

fn quarantined(state: &CommittedState) -> BTreeSet<NodeId> {
    state.trust.quarantined.keys().cloned().collect()
}
