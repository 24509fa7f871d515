//! One measured run: membership, propagation and steady-state phases, and what they yield.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{build_cluster, Cluster, Node, KEY, SHUTDOWN_BOUND};
use crate::net::{Meter, Net};
use crate::plan::{Mode, Topology};
use crate::relay::push;
use crate::report::fmt_opt;
use crate::sim::{PhaseMeter, PhaseStats, Sim};
use crate::summary::{node_name, summary, summary_entry, zone_name, Rng};

const MEMBERSHIP_POLL: Duration = Duration::from_millis(100);
const PROPAGATION_POLL: Duration = Duration::from_millis(20);
const PROPAGATION_BOUND: Duration = Duration::from_secs(20);
const STEADY_WINDOW: Duration = Duration::from_secs(5);

struct Change {
    origin: usize,
    origin_zone: usize,
    value: String,
    remote_key: String,
    needle: String,
}

async fn sees_change(cluster: &Cluster, node: &Node, change: &Change) -> bool {
    let origin_id = &cluster.nodes[change.origin].id;
    if node.zone == change.origin_zone {
        return node
            .handle
            .with_chitchat(|c| {
                c.node_state(origin_id).and_then(|s| s.get(KEY)) == Some(change.value.as_str())
            })
            .await;
    }
    let reps = &cluster.zone_reps[node.zone];
    node.handle
        .with_chitchat(|c| {
            reps.iter().any(|rep| {
                c.node_state(rep)
                    .and_then(|s| s.get(&change.remote_key))
                    .is_some_and(|v| v.contains(&change.needle))
            })
        })
        .await
}

pub(crate) enum Membership {
    Done(Duration),
    NotDone {
        after: Duration,
        complete: usize,
        total: usize,
    },
}

pub(crate) struct RunResult {
    pub(crate) n: usize,
    pub(crate) zones: usize,
    pub(crate) sim: Sim,
    pub(crate) membership: Membership,
    pub(crate) t99: Option<Duration>,
    pub(crate) t100: Option<Duration>,
    pub(crate) prop_bound: Duration,
    pub(crate) seen_final: usize,
    pub(crate) bytes_node_s: f64,
    pub(crate) msgs_node_s: f64,
    pub(crate) syn_node_s: f64,
    pub(crate) nominal_syn_node_s: f64,
    pub(crate) rep_extra_bytes_s: Option<f64>,
    pub(crate) steady_max_syn: usize,
    pub(crate) steady_max_syn_ack: usize,
    pub(crate) steady_max_ack: usize,
    pub(crate) run_max_msg: usize,
    pub(crate) mtu_refused: u64,
    pub(crate) undelivered_pct: f64,
    pub(crate) phases: [PhaseStats; 3],
    pub(crate) cpu_ms_per_node_s: f64,
    pub(crate) wall: Duration,
}

impl RunResult {
    /// Did the simulator fall behind (rounds slower than nominal, or timers late by more than a
    /// fifth of a round)?
    pub(crate) fn starved(&self) -> bool {
        let round_ms = self.sim.interval.as_secs_f64() * 1000.0;
        self.syn_node_s < 0.9 * self.nominal_syn_node_s
            || self.phases.iter().any(|p| p.lag_p99_ms > 0.2 * round_ms)
    }
}

pub(crate) enum Outcome {
    Done(Box<RunResult>),
    Skipped(String),
    Failed(String),
}

pub(crate) struct Run {
    pub(crate) mode: Mode,
    pub(crate) n: usize,
    pub(crate) interval: Duration,
    pub(crate) outcome: Outcome,
}

pub(crate) async fn run_one(
    n: usize,
    mode: &Mode,
    sim: Sim,
    zone_size: usize,
    remaining: Duration,
) -> anyhow::Result<RunResult> {
    let wall_start = Instant::now();
    let deadline = wall_start + remaining;
    let steady_real = STEADY_WINDOW.max(sim.real(sim.interval) * 3);
    let membership_meter = PhaseMeter::start();
    let cluster = build_cluster(n, mode, &sim, zone_size).await?;
    let zones = cluster.zones();

    // 1. Membership, from the first spawn (nodes start spread over one interval).
    let reserve =
        steady_real + sim.real(sim.interval * 2 + Duration::from_secs(3)) + SHUTDOWN_BOUND;
    let membership_deadline = (wall_start + sim.real(Duration::from_secs(20 + n as u64 / 40)))
        .min(deadline.checked_sub(reserve).unwrap_or(wall_start));
    let membership = loop {
        let (complete, total) = cluster.membership(membership_deadline).await;
        let elapsed = sim.nominal(wall_start.elapsed());
        if complete == total {
            break Membership::Done(elapsed);
        }
        if Instant::now() >= membership_deadline {
            break Membership::NotDone {
                after: elapsed,
                complete,
                total,
            };
        }
        tokio::time::sleep(MEMBERSHIP_POLL).await;
    };
    let (membership_phase, _) = membership_meter.finish(&sim).await;
    eprintln!(
        "  membership: {}",
        match &membership {
            Membership::Done(d) => format!("{:.2} s", d.as_secs_f64()),
            Membership::NotDone {
                complete, total, ..
            } => format!("not complete ({complete}/{total})"),
        }
    );
    // Let in-flight state exchange settle for two rounds before the change.
    tokio::time::sleep(sim.real(sim.interval * 2)).await;

    // 2. Propagation of one changed value.
    let change_meter = PhaseMeter::start();
    let origin = match mode.topology {
        Topology::Flat => n / 2,
        Topology::Zoned => {
            let members = &cluster.zone_members[0];
            members[members.len() / 2]
        }
    };
    let origin_zone = cluster.nodes[origin].zone;
    let value = summary(origin, origin_zone, 2);
    let change = Change {
        origin,
        origin_zone,
        needle: summary_entry(&node_name(origin), &value),
        remote_key: format!("remote:{}", zone_name(origin_zone)),
        value,
    };
    let prop_deadline = (Instant::now() + sim.real(PROPAGATION_BOUND)).min(
        deadline
            .checked_sub(steady_real + SHUTDOWN_BOUND)
            .unwrap_or(wall_start),
    );
    let prop_bound = sim.nominal(prop_deadline.saturating_duration_since(Instant::now()));
    let need99 = (n * 99).div_ceil(100);
    let origin_handle = cluster.nodes[origin].handle.clone();
    let t0 = Instant::now();
    let new_value = change.value.clone();
    origin_handle
        .with_chitchat(|c| c.self_node_state().set(KEY, &new_value))
        .await;
    if mode.push {
        push(&origin_handle, &mut Rng(7)).await;
    }
    let mut unseen: Vec<usize> = (0..n).filter(|&i| i != origin).collect();
    let (mut t99, mut t100) = (None, None);
    loop {
        let mut still = Vec::with_capacity(unseen.len());
        for &i in &unseen {
            // A pass still running at the bound stops checking (those count as unseen).
            if Instant::now() >= prop_deadline
                || !sees_change(&cluster, &cluster.nodes[i], &change).await
            {
                still.push(i);
            }
        }
        unseen = still;
        let elapsed = sim.nominal(t0.elapsed());
        if t99.is_none() && n - unseen.len() >= need99 {
            t99 = Some(elapsed);
        }
        if unseen.is_empty() {
            t100 = Some(elapsed);
            break;
        }
        if Instant::now() >= prop_deadline {
            break;
        }
        tokio::time::sleep(PROPAGATION_POLL).await;
    }
    let (change_phase, _) = change_meter.finish(&sim).await;
    let seen_final = n - unseen.len();
    eprintln!(
        "  change seen by 99%: {}, 100%: {} ({seen_final}/{n})",
        fmt_opt(t99),
        fmt_opt(t100)
    );

    // 3. Steady state.
    let run_max_msg = cluster
        .meters()
        .iter()
        .map(|m| {
            m.max_syn
                .load(Ordering::Relaxed)
                .max(m.max_syn_ack.load(Ordering::Relaxed))
                .max(m.max_ack.load(Ordering::Relaxed))
        })
        .max()
        .unwrap_or(0);
    for meter in cluster.meters() {
        meter.reset_max();
    }
    let steady_meter = PhaseMeter::start();
    let before = cluster.snapshot();
    let global_before = cluster.global_net.as_ref().map(Net::snapshot);
    let window_start = Instant::now();
    tokio::time::sleep(steady_real).await;
    let real_secs = window_start.elapsed().as_secs_f64();
    let delta = cluster.snapshot().since(before);
    let global_delta = match (&cluster.global_net, global_before) {
        (Some(net), Some(before)) => Some(net.snapshot().since(before)),
        _ => None,
    };
    let (steady_phase, steady_cpu) = steady_meter.finish(&sim).await;
    let secs = real_secs / sim.dilation as f64;
    let meters = cluster.meters();
    let steady_max = |f: fn(&Meter) -> &AtomicUsize| {
        meters
            .iter()
            .map(|m| f(m).load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    };
    let reps = cluster.reps.len();
    let result = RunResult {
        n,
        zones,
        sim,
        membership,
        t99,
        t100,
        prop_bound,
        seen_final,
        bytes_node_s: delta.bytes as f64 / n as f64 / secs,
        msgs_node_s: delta.messages as f64 / n as f64 / secs,
        syn_node_s: delta.syn as f64 / n as f64 / secs,
        nominal_syn_node_s: 3.0 * (n + reps) as f64 / n as f64 / sim.interval.as_secs_f64(),
        rep_extra_bytes_s: global_delta.map(|g| g.bytes as f64 / reps.max(1) as f64 / secs),
        steady_max_syn: steady_max(|m| &m.max_syn),
        steady_max_syn_ack: steady_max(|m| &m.max_syn_ack),
        steady_max_ack: steady_max(|m| &m.max_ack),
        run_max_msg: run_max_msg.max(steady_max(|m| &m.max_syn_ack)),
        mtu_refused: cluster.snapshot().mtu_refused,
        undelivered_pct: if delta.messages == 0 {
            0.0
        } else {
            100.0 * delta.messages.saturating_sub(delta.received) as f64 / delta.messages as f64
        },
        phases: [membership_phase, change_phase, steady_phase],
        cpu_ms_per_node_s: 1000.0 * steady_cpu / n as f64 / secs,
        wall: Duration::ZERO,
    };
    cluster.shutdown().await;
    Ok(RunResult {
        wall: wall_start.elapsed(),
        ..result
    })
}
