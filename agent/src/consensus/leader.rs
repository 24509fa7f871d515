//! The decision log's two small loops around the pure policies:
//!
//! - [`propose_decisions`]: on the leader, every second, hands the mesh view and the committed
//!   state to the [`Decider`] and proposes what it returns. A node that stops leading drops
//!   the decider's memory, so a later term starts with full windows again.
//! - [`follow_committed`]: on every agent, turns the committed state into metrics (weights are
//!   exported by the routes that apply them) and runs the `scale_hook` of `[[scaling]]` when a
//!   service's committed hint changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_protocol::{CommittedState, NodeId, ServiceName};
use tokio::sync::watch;

use super::Consensus;
use crate::access::PolicyProposer;
use crate::agent::stopping;
use crate::decide::{Decider, DeciderSettings, Proposer};
use crate::gossip::MeshView;
use crate::telemetry::{names, Telemetry};

/// How often the leader looks for decisions to propose.
pub const DECIDE_EVERY: Duration = Duration::from_secs(1);
/// How long a scale hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The leader's loop: propose what the policies decide, and the configured access policy
/// (`access`: `None` when this agent has no `[[policy]]`/`[access]`; a reload sends a new one). The nodes under
/// quarantine suspicion are shown through `observer` while this agent leads.
pub async fn propose_decisions(
    consensus: Consensus,
    node: NodeId,
    view: watch::Receiver<Arc<MeshView>>,
    settings: DeciderSettings,
    mut access_config: watch::Receiver<Option<plexus_protocol::AccessPolicy>>,
    observer: crate::quarantine::PeerObserver,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut decider = Decider::new(settings);
    let mut access = PolicyProposer::new(access_config.borrow_and_update().clone());
    let mut ticker = tokio::time::interval(DECIDE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping(&mut shutdown) => return,
        }
        if access_config.has_changed().unwrap_or(false) {
            access.configure(access_config.borrow_and_update().clone());
        }
        if !consensus.status().is_leader {
            if leading {
                decider = Decider::new(decider.settings().clone());
                access.forget();
                observer.set_suspicions(Vec::new());
                leading = false;
            }
            continue;
        }
        leading = true;
        let mesh = view.borrow().clone();
        let state = consensus.state();
        let proposer = Proposer {
            node: node.clone(),
            now_ms: unix_ms(),
        };
        let now = Instant::now();
        let policy = access.next(&state.trust.policy, &proposer, now);
        let decided = decider.decide_view(&mesh, &state, &proposer, now);
        observer.set_suspicions(decider.suspicions().to_vec());
        for decision in decided.into_iter().chain(policy) {
            let kind = decision.kind.label();
            let reason = decision.reason.clone();
            match consensus.propose(decision) {
                Ok(()) => tracing::info!(kind, %reason, "decision proposed"),
                Err(error) => tracing::warn!(kind, %error, "decision not proposed"),
            }
        }
    }
}

/// Every agent: metrics of the committed state, and scale hooks.
pub async fn follow_committed(
    mut committed: watch::Receiver<Arc<CommittedState>>,
    hooks: BTreeMap<ServiceName, PathBuf>,
    telemetry: Telemetry,
    mut shutdown: watch::Receiver<bool>,
) {
    // Hints already committed when the agent starts are not news: hooks run on changes.
    let mut seen: BTreeMap<ServiceName, u32> = desired(&committed.borrow_and_update());
    loop {
        let state = committed.borrow_and_update().clone();
        for (service, decided) in &state.services {
            if let Some(scaling) = decided.scaling {
                telemetry
                    .gauge(names::SCALING_HINT, &[("service", service.as_str())])
                    .set(f64::from(scaling.desired));
                if seen.insert(service.clone(), scaling.desired) != Some(scaling.desired) {
                    if let Some(hook) = hooks.get(service) {
                        run_hook(hook.clone(), service.clone(), scaling.desired);
                    }
                }
            }
            if let Some(canary) = &decided.canary {
                telemetry
                    .gauge(names::CANARY_SHARE, &[("service", service.as_str())])
                    .set(f64::from(canary.share_percent));
            }
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = stopping(&mut shutdown) => return,
        }
    }
}

fn desired(state: &CommittedState) -> BTreeMap<ServiceName, u32> {
    state
        .services
        .iter()
        .filter_map(|(s, d)| d.scaling.map(|h| (s.clone(), h.desired)))
        .collect()
}

/// Runs `HOOK SERVICE REPLICAS` off the runtime, bounded in time; its outcome is logged.
fn run_hook(hook: PathBuf, service: ServiceName, replicas: u32) {
    tokio::task::spawn_blocking(move || {
        let child = std::process::Command::new(&hook)
            .arg(service.as_str())
            .arg(replicas.to_string())
            .stdin(std::process::Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                tracing::warn!(hook = %hook.display(), %error, "scale hook could not start");
                return;
            }
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(hook = %hook.display(), %service, replicas, %status, "scale hook ran");
                    return;
                }
                Ok(None) if started.elapsed() < HOOK_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    tracing::warn!(hook = %hook.display(), %service, "scale hook timed out; killed");
                    return;
                }
            }
        }
    });
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
