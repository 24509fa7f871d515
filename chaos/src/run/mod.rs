//! One run of a scenario: start the cluster behind the fault relay, warm up, then drive the
//! workload through the phases while applying and healing faults on the seeded schedule,
//! watching the agents, and judging the checks (live for `abort = true` ones).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

mod consensus;
mod faults;
mod progress;
mod trust;
mod watch;

use crate::backend::Backend;
use crate::checks;
use crate::cluster::{reserve_udp, Cluster, Hosted, Variant, Wiring};
use crate::record::{CounterReading, Event, EventKind, Observation, RunRecord, Verdict};
use crate::relay::RelayMesh;
use crate::scenario::{FaultKind, Scenario, Target};
use crate::schedule;
use crate::workload::{self, Samples};
use faults::{apply, heal};
use progress::{abort_check, last_second, planned, progress_line, snapshot};
use watch::{warm_up, watch_agents};

/// How a run is done.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// The `plexus` binary the agents run.
    pub plexus: PathBuf,
    /// Print progress once a second on stderr.
    pub progress: bool,
    /// Where agents' logs are kept (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
}

const READY_LIMIT: Duration = Duration::from_secs(45);
const LOOK_EVERY: Duration = Duration::from_millis(250);
const GRACE: Duration = Duration::from_secs(10);

/// Runs `scenario`; returns what was recorded and the verdict. `Err` means the harness could
/// not run it (not that a check failed).
pub async fn run(
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<(RunRecord, Verdict), String> {
    let seed = options.seed.unwrap_or(scenario.seed);
    let mut plan = schedule::plan(scenario, seed);
    let temp = tempfile::Builder::new()
        .prefix("plexus-chaos-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let dir = options
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Absolute: agents read relative paths in their configuration from its directory.
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;

    // Addresses: each agent's own QUIC socket, and the relay's front for it.
    let mut reservations = Vec::new();
    let mut listen: Vec<(String, SocketAddr)> = Vec::new();
    for name in scenario.topology.names() {
        let (socket, addr) = reserve_udp()?;
        reservations.push((name.clone(), socket));
        listen.push((name, addr));
    }
    let relay = RelayMesh::start(&listen, seed)
        .await
        .map_err(|e| format!("fault relay: {e}"))?;
    let mut tasks = JoinSet::new();
    let mut backends: Vec<Backend> = Vec::new();
    for (i, service) in scenario.topology.services.iter().enumerate() {
        for (j, node) in service.on.iter().enumerate() {
            let version = service
                .versions
                .get(node)
                .cloned()
                .unwrap_or_else(|| "v1".into());
            let backend_seed =
                seed ^ ((i as u64) << 32 | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let b = Backend::start(
                node,
                &service.name,
                &version,
                service.protocol,
                service.latency,
                backend_seed,
                &mut tasks,
            )
            .await
            .map_err(|e| format!("backend {} on {node}: {e}", service.name))?;
            backends.push(b);
        }
    }
    let advertise = |name: &str| {
        relay
            .front(name)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)))
    };
    let hosted = |name: &str| {
        backends
            .iter()
            .filter(|b| b.node == name)
            .map(|b| {
                let protocol = scenario
                    .topology
                    .services
                    .iter()
                    .find(|s| s.name == b.service)
                    .map_or(crate::scenario::Protocol::Http, |s| s.protocol);
                Hosted {
                    service: b.service.clone(),
                    protocol,
                    version: b.version.clone(),
                    address: b.addr,
                }
            })
            .collect()
    };
    let mut cluster = Cluster::prepare(
        scenario,
        &dir,
        &options.plexus,
        &listen,
        &Wiring {
            advertise: &advertise,
            services: &hosted,
        },
    )?;
    if plan
        .iter()
        .any(|f| matches!(f.kind, FaultKind::ClockSkew { .. }))
        && !cluster.has_faketime()
    {
        return Err(
            "this scenario skews a clock, which needs libfaketime (apt-get install faketime)"
                .into(),
        );
    }
    cluster.hold(reservations);
    for name in scenario.topology.names() {
        cluster.start(&name, Variant::Good)?;
        // One at a time: the next agent's port stays held until this one is up and has bound
        // its own sockets (its ephemeral UDP ones included). Started all at once, an agent
        // sometimes found its QUIC port taken ("Address already in use") by another's socket
        // bound in the moment after the harness released it. Best effort, bounded: an agent
        // still joining opens its admin port late, and the warm-up below judges it.
        let admin = cluster.node(&name).map(|n| n.admin);
        if let Some(admin) = admin {
            let up = Instant::now() + Duration::from_secs(5);
            while Instant::now() < up && tokio::net::TcpStream::connect(admin).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    if let Err(e) = warm_up(scenario, &mut cluster).await {
        let tails: Vec<String> = scenario
            .topology
            .names()
            .iter()
            .map(|n| {
                format!(
                    "--- {n} (last lines of its log)\n{}",
                    cluster.log_tail(n, 8)
                )
            })
            .collect();
        return Err(format!("{e}\n{}", tails.join("\n")));
    }

    let cluster = Arc::new(Mutex::new(cluster));
    let epoch = Instant::now();
    let samples: Samples = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sources: Vec<(Arc<str>, SocketAddr)> = {
        let c = lock(&cluster);
        scenario
            .workload
            .from
            .iter()
            .filter_map(|n| Some((Arc::from(n.as_str()), c.node(n)?.upstream?)))
            .collect()
    };
    let load = tokio::spawn(workload::drive(
        scenario.workload.clone(),
        sources,
        epoch,
        scenario.length(),
        stop_rx.clone(),
        samples.clone(),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch_agents(
        cluster.clone(),
        epoch,
        seen.clone(),
        watch::Watching {
            consensus: scenario.consensus.is_some(),
            certs: scenario.trust.ca_in_log,
        },
        stop_rx,
    ));

    // The schedule: phase starts, fault applications and heals, in time order.
    let mut actions: Vec<(Duration, Action)> = Vec::new();
    let mut t = Duration::ZERO;
    for (i, phase) in scenario.phases.iter().enumerate() {
        actions.push((t, Action::Phase(i)));
        t += phase.duration;
    }
    for (i, fault) in plan.iter().enumerate() {
        actions.push((fault.start, Action::Apply(i)));
        if fault.end > fault.start {
            actions.push((fault.end, Action::Heal(i)));
        }
    }
    actions.sort_by_key(|(at, a)| (*at, a.order()));
    let end = scenario.length();
    let scheduled = planned(scenario, seed, &plan);
    let mut healed_at: BTreeMap<usize, Duration> = BTreeMap::new();
    // Faults whose role target the agents did not name: never applied, so never healed.
    let mut unresolved: std::collections::BTreeSet<usize> = Default::default();
    // When each fault was really applied (a rolling restart can hold the loop for seconds).
    let mut applied: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut active = faults::Active::default();
    let mut harness_errors: Vec<String> = Vec::new();
    let mut aborted = false;
    let mut next_progress = Duration::from_secs(1);
    let mut actions = actions.into_iter().peekable();
    let mut current_phase = 0;
    let finished_at = loop {
        let now = epoch.elapsed();
        if now >= end {
            break end;
        }
        let next_action = actions.peek().map(|(at, _)| *at);
        let wake = [Some(next_progress), next_action, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        if wake > now {
            tokio::time::sleep_until(epoch + wake).await;
        }
        let now = epoch.elapsed();
        while let Some((at, _)) = actions.peek() {
            if *at > now {
                break;
            }
            let Some((at, action)) = actions.next() else {
                break;
            };
            match action {
                Action::Phase(i) => {
                    current_phase = i;
                    let phase = &scenario.phases[i];
                    note(
                        &seen,
                        at,
                        EventKind::PhaseStart,
                        None,
                        format!("phase `{}` ({:?})", phase.name, phase.duration),
                    );
                    if options.progress {
                        eprintln!(
                            "[{:>6.1}s] phase `{}` for {:?}",
                            at.as_secs_f64(),
                            phase.name,
                            phase.duration
                        );
                    }
                }
                Action::Apply(i) | Action::Heal(i) => {
                    let healing = matches!(action, Action::Heal(_));
                    if healing && unresolved.contains(&i) {
                        continue;
                    }
                    // A role target (the leader, the voters) is asked of the agents now.
                    let resolved = match plan[i].pending.as_ref().filter(|_| !healing) {
                        Some(pending) => {
                            let leader = [&pending.target, &pending.peer]
                                .iter()
                                .any(|t| **t == Some(Target::Leader));
                            match consensus::roles_now(&cluster, leader).await {
                                Ok(roles) => plan[i].resolve(scenario, &roles),
                                Err(e) => Err(e),
                            }
                        }
                        None => Ok(()),
                    };
                    let fault = &plan[i];
                    let at = epoch.elapsed();
                    let result = match resolved {
                        Err(e) => {
                            unresolved.insert(i);
                            Err(e)
                        }
                        Ok(()) if healing => {
                            heal(i, fault, &cluster, &relay, &backends, &mut active).await
                        }
                        Ok(()) => apply(i, fault, &cluster, &relay, &backends, &mut active).await,
                    };
                    if !healing && !unresolved.contains(&i) {
                        applied.insert(i, at);
                    }
                    if healing || fault.end == fault.start {
                        healed_at.insert(i, at);
                    }
                    let (done, verb, kind) = if healing {
                        ("healed", "heal", EventKind::FaultHealed)
                    } else {
                        ("applied", "apply", EventKind::FaultApplied)
                    };
                    let detail = match &result {
                        Ok(()) => format!("{done}: {}", fault.label),
                        Err(e) => format!("could not {verb} {}: {e}", fault.label),
                    };
                    if result.is_err() {
                        harness_errors.push(detail.clone());
                    }
                    if options.progress {
                        eprintln!("[{:>6.1}s] fault {detail}", at.as_secs_f64());
                    }
                    note(&seen, at, kind, fault.targets.first().cloned(), detail);
                }
            }
        }
        if now >= next_progress {
            next_progress += Duration::from_secs(1);
            if options.progress {
                let recent = last_second(scenario, &samples, &seen, &backends, epoch, now);
                eprintln!(
                    "{}",
                    progress_line(&recent, now, &scenario.phases[current_phase].name)
                );
            }
            // Abort checks see only requests whose outcome is settled (older than the timeout).
            let settled = now.saturating_sub(scenario.workload.timeout);
            let failed = scenario.checks.iter().any(|c| c.abort).then(|| {
                let judged = snapshot(
                    scenario, seed, &plan, &applied, &healed_at, &samples, &seen, &backends, epoch,
                    settled,
                );
                abort_check(scenario, &scheduled, &judged, settled)
            });
            if let Some(failed) = failed.flatten() {
                note(
                    &seen,
                    now,
                    EventKind::Abort,
                    None,
                    format!("aborted: {failed}"),
                );
                if options.progress {
                    eprintln!("[{:>6.1}s] ABORT: {failed}", now.as_secs_f64());
                }
                aborted = true;
                break now;
            }
        }
    };
    let _ = stop_tx.send(true);
    let (mut load, mut watcher) = (load, watcher);
    let settle = scenario.workload.timeout + Duration::from_secs(2);
    let _ = tokio::time::timeout(settle, &mut load).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), &mut watcher).await;
    load.abort();
    watcher.abort();
    let evidence = match scenario.consensus {
        Some(_) => {
            let collected = std::mem::take(&mut lock(&seen).consensus);
            let trusted = std::mem::take(&mut lock(&seen).trust);
            let mut evidence = consensus::evidence(&cluster, collected).await;
            trusted.into_evidence(&mut evidence);
            Some(evidence)
        }
        None => None,
    };
    // Heal what is still applied (network links, backends), then stop everything.
    relay.heal_all();
    for b in &backends {
        b.set(None);
    }
    lock(&cluster).shutdown();
    relay.shutdown();
    tasks.abort_all();

    let mut record = snapshot(
        scenario,
        seed,
        &plan,
        &applied,
        &healed_at,
        &samples,
        &seen,
        &backends,
        epoch,
        finished_at,
    );
    record.samples.sort_by_key(|s| s.at);
    let mut results: Vec<_> = scenario
        .checks
        .iter()
        .map(|c| checks::evaluate(c, &record, evidence.as_ref()))
        .collect();
    results.push(checks::harness_integrity(&record, &harness_errors));
    let verdict = checks::verdict(scenario, &record, results, aborted);
    if options.work_dir.is_none() {
        drop(temp);
    }
    Ok((record, verdict))
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Phase(usize),
    Apply(usize),
    Heal(usize),
}

impl Action {
    /// At one instant: a phase starts, then heals happen, then new faults.
    fn order(&self) -> u8 {
        match self {
            Action::Phase(_) => 0,
            Action::Heal(_) => 1,
            Action::Apply(_) => 2,
        }
    }
}

/// What the watcher collected.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    observations: Vec<Observation>,
    counters: Vec<CounterReading>,
    consensus: consensus::Collected,
    trust: trust::Collected,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn note(
    seen: &Mutex<Seen>,
    at: Duration,
    kind: EventKind,
    subject: Option<String>,
    detail: String,
) {
    lock(seen).events.push(Event {
        at,
        kind,
        subject,
        observer: None,
        detail,
    });
}
