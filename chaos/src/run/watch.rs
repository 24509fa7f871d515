//! Watching the agents: warm-up until the mesh (and its decision group) has formed, and the
//! periodic looks during the run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{consensus, lock, note, trust, Seen, LOOK_EVERY, READY_LIMIT};
use crate::cluster::{Cluster, ProcState};
use crate::observe::{self, Watcher};
use crate::record::EventKind;
use crate::scenario::Scenario;

/// Waits until every agent is ready, each workload source routes to every node hosting the
/// workload's service and, with `[consensus]`, the agents have formed their group: the
/// expected number of voters, one leader they all name, voters known to every agent.
pub(super) async fn warm_up(scenario: &Scenario, cluster: &mut Cluster) -> Result<(), String> {
    let deadline = Instant::now() + READY_LIMIT;
    let service = scenario
        .topology
        .services
        .iter()
        .find(|s| s.name == scenario.workload.service);
    let expected = service.map_or(0, |s| s.on.len());
    loop {
        if let Some((name, status)) = cluster.reap().into_iter().next() {
            return Err(format!("agent {name} exited during start-up ({status})"));
        }
        let mut waiting = Vec::new();
        for node in &cluster.nodes {
            let ready = tokio::time::timeout(
                Duration::from_secs(1),
                plexus_agent::ctl::get(node.admin, "/readyz"),
            )
            .await;
            match ready {
                Ok(Ok((200, _))) => {}
                Ok(Ok((status, body))) => {
                    waiting.push(format!("{}: /readyz {status} {}", node.name, body.trim()))
                }
                _ => waiting.push(format!("{}: admin API not answering", node.name)),
            }
            if node.upstream.is_some() {
                let routed = observe::look(node.admin, false)
                    .await
                    .map_or(0, |l| l.routed.len());
                if routed < expected {
                    waiting.push(format!(
                        "{}: routes to {routed} of {expected} endpoints",
                        node.name
                    ));
                }
            }
        }
        if let Some(c) = &scenario.consensus {
            let nodes: Vec<(String, SocketAddr)> = cluster
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.admin))
                .collect();
            waiting.extend(consensus::not_ready(c.bootstrap_expect, &nodes).await);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the mesh did not form within {READY_LIMIT:?}: {}",
                waiting.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the watcher asks the agents besides their peers and routes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Watching {
    /// `/v1/decisions` and `/v1/quarantine`.
    pub consensus: bool,
    /// `/v1/certs` (the CA is in the decision log).
    pub certs: bool,
}

/// Looks at every running agent every 250 ms (counters every second, and the decision log and
/// the trust decisions every second when the scenario has `[consensus]`) until `stop`.
pub(super) async fn watch_agents(
    cluster: Arc<Mutex<Cluster>>,
    epoch: Instant,
    seen: Arc<Mutex<Seen>>,
    watching: Watching,
    mut stop: watch::Receiver<bool>,
) {
    let mut watcher = Watcher::default();
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        round += 1;
        let at = epoch.elapsed();
        let (nodes, exits) = {
            let mut c = lock(&cluster);
            let exits = c.reap();
            let nodes: Vec<(String, SocketAddr, ProcState, Option<u32>)> = c
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.admin, n.state, c.pid(&n.name)))
                .collect();
            (nodes, exits)
        };
        for (name, status) in exits {
            note(
                &seen,
                at,
                EventKind::AgentExited,
                Some(name.clone()),
                format!("{name} exited on its own: {status}"),
            );
        }
        let with_counters = round % 4 == 0;
        if watching.consensus && round % 4 == 2 {
            let running: Vec<(String, SocketAddr)> = nodes
                .iter()
                .filter(|n| n.2 == ProcState::Running)
                .map(|n| (n.0.clone(), n.1))
                .collect();
            consensus::look(&running, at, &seen).await;
            trust::look(&running, at, watching.certs, &seen).await;
        }
        for (name, admin, state, pid) in nodes {
            let running = state == ProcState::Running;
            let observation = observe::observation(at, &name, running, pid);
            let look = if running {
                observe::look(admin, with_counters).await
            } else {
                None
            };
            let mut s = lock(&seen);
            s.observations.push(observation);
            if let Some(look) = look {
                let events = watcher.update(&name, at, &look);
                s.events.extend(events);
                s.counters.extend(observe::readings(at, &name, &look));
            }
        }
    }
}
