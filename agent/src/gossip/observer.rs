//! Each gossip round (and each node that leaves), chitchat's node states become the
//! [`MeshView`]: seals checked, membership stepped, transitions counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::ChitchatId;
use plexus_protocol::NodeId;
use tokio::sync::{mpsc, watch};

use super::checks::{RawNode, SealChecks};
use super::seal::CERT_KEY;
use super::view::{Membership, MeshView, NodeObservation};
use super::{CONSENSUS_KEY, EDGES_KEY, OBSERVATIONS_KEY, SUMMARY_KEY};
use crate::telemetry::{names, Telemetry};

pub(super) struct Observer {
    pub(super) chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    pub(super) membership: Membership,
    /// Shared with the blocking thread that checks new seals.
    pub(super) checks: Arc<std::sync::Mutex<SealChecks>>,
    pub(super) telemetry: Telemetry,
    pub(super) view: watch::Sender<Arc<MeshView>>,
}

impl Observer {
    pub(super) async fn run(
        mut self,
        every: Duration,
        mut leaves: mpsc::UnboundedReceiver<(NodeId, u64)>,
    ) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(50)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                leave = leaves.recv() => match leave {
                    Some((node, generation)) => self.membership.left(node.as_str(), generation),
                    None => return,
                },
            }
            self.observe().await;
        }
    }

    async fn observe(&mut self) {
        let raw = {
            let chitchat = self.chitchat.lock().await;
            let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
            let versioned = |state: &chitchat::NodeState, key: &str| {
                state
                    .get_versioned(key)
                    .filter(|v| !v.is_deleted())
                    .map(|v| (v.value.clone(), v.version))
            };
            chitchat
                .node_states()
                .iter()
                .map(|(id, state)| RawNode {
                    id: id.clone(),
                    heartbeat: u64::from(state.heartbeat()),
                    live: live.contains(id),
                    cert: state.get(CERT_KEY).map(str::to_owned),
                    summary: versioned(state, SUMMARY_KEY),
                    edges: versioned(state, EDGES_KEY),
                    consensus: versioned(state, CONSENSUS_KEY),
                    observations: versioned(state, OBSERVATIONS_KEY),
                })
                .collect::<Vec<_>>()
        };
        // Checking a new seal costs a signature verification and a certificate check (a few
        // hundred µs): when any is due, a blocking thread does it and the worker serves on.
        let due = lock(&self.checks).has_new_values(&raw);
        let nodes: Vec<NodeObservation> = if due {
            let checks = self.checks.clone();
            match tokio::task::spawn_blocking(move || lock(&checks).verify_all(raw)).await {
                Ok(nodes) => nodes,
                // A panic is this task's, as if it had happened inline; a round cancelled at
                // shutdown publishes nothing (an empty list would drop every member).
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => return,
            }
        } else {
            lock(&self.checks).verify_all(raw)
        };
        let (view, transitions) = self.membership.observe(Instant::now(), nodes);
        for (node, state) in transitions {
            tracing::info!(peer = %node, state = state.as_label(), "membership change");
            self.telemetry
                .counter(names::GOSSIP_TRANSITIONS, &[("state", state.as_label())])
                .increment(1);
        }
        self.telemetry
            .gauge(names::GOSSIP_LIVE_PEERS, &[])
            .set(view.live_peers() as f64);
        let _ = self.view.send(Arc::new(view));
    }
}

fn lock(checks: &std::sync::Mutex<SealChecks>) -> std::sync::MutexGuard<'_, SealChecks> {
    checks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
