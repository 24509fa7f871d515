//! Gossip scale benchmark: N chitchat 0.13 nodes in one process, over chitchat's in-memory
//! transport (`ChannelTransport::with_mtu(65_507)`, which encodes and decodes every message as
//! UDP would, counts messages and bytes, and refuses anything larger than the MTU).
//!
//! ```text
//! cargo bench -p plexus-agent --bench gossip_scale              # default plan, < 6 min
//! cargo bench -p plexus-agent --bench gossip_scale -- 100 300   # only these sizes
//! cargo bench -p plexus-agent --bench gossip_scale -- 1000 --modes flat-v0,flat-v1 --budget-secs 1500
//! ```
//!
//! Options: sizes as bare numbers; `--modes a,b` (below); `--intervals 500,1000` (ms);
//! `--zone-size 40`; `--dilate D`; `--budget-secs 330`. Other arguments (`--bench`) are ignored.
//!
//! Every node has a realistic id (`node-0042`), a millisecond-timestamp generation id, its own
//! `10.0.x.y:7946` address, three pseudo-random seeds, the agent's failure-detector settings
//! (phi 8, `max_interval` 4 intervals; sampling window 100 instead of 1 000 to fit 1 000 nodes in
//! one process), and a ~600-byte JSON `summary` (services, ports, certificate fingerprint) in
//! its state. Nodes start spread over one interval, so their rounds are out of phase. For each
//! configuration, size and interval the bench measures:
//!
//! 1. **membership**: time from the first spawn until every node sees every other node as live
//!    (polled every 100 ms, bounded; if the bound passes, how far it got);
//! 2. **propagation**: one node sets `summary` to a new value; time until 99 % and 100 % of all
//!    nodes see it (polled every 20 ms through `with_chitchat`, bounded);
//! 3. **steady state**: `ChannelTransport::statistics()` before and after a window of at least
//!    5 s (and 3 rounds), per node and second. A socket wrapper also records the largest Syn /
//!    SynAck / Ack, sends the MTU refused, and messages sent but never received (the channel
//!    transport drops them when a node's 100-message queue is full).
//!
//! Configurations (`--modes`; default plan: all four at 500 ms, `flat-v1` and `zoned-v1-push`
//! again at 1 s; flat modes at 1 000 nodes only when named, see below):
//! - `flat-v0`, `flat-v1`: one plain chitchat cluster of N nodes, digests uncompressed (V0) or
//!   zstd-compressed (V1, what the agent uses).
//! - `zoned-v1`: zones of about `--zone-size` nodes, each its own chitchat cluster (own
//!   `cluster_id`). The first two nodes of each zone are representatives: they also run a second
//!   chitchat instance in one cross-zone cluster, publish there a summarised zone state
//!   (`node-0042=REV:HASH;` per zone member), and copy every other zone's summary into their own
//!   zone state (`remote:zone-NN`), merged by highest revision; woken by chitchat key-change
//!   listeners, with a 1 s fallback tick. A node of zone B sees a change made in zone A when a
//!   representative of B carries, in B's cluster, A's summary with the new revision and hash.
//!   Membership here means every zone cluster and the cross-zone cluster fully live and every
//!   node seeing a summary of every other zone. Bytes count both clusters, divided by N; the
//!   representatives' extra traffic is shown separately.
//! - `-push` suffix: a node that changes its own state (the changed node, a representative that
//!   republishes) at once sends a Syn to three random live peers (`ChitchatHandle::gossip`).
//!
//! Simulated time: all N nodes share this machine's cores, real nodes each have their own, and
//! a flat cluster's work grows as N² (every message carries an N-entry digest). A CPU-starved
//! simulator slows the rounds down and every timing with them, so each run stretches all chitchat
//! durations by a dilation factor chosen from the expected CPU (see `Sim`) and divides measured
//! times by it; rates are per simulated second. The diagnostics table shows the CPU and timer lag
//! each phase actually had, and a run whose rounds fell behind is flagged CPU-starved. Flat
//! clusters of 1 000 nodes need ×26 (V0) to ×36 (V1) on 2 cores, about 4 to 5 minutes each, so
//! the default plan lists them as skipped; name them with `--modes` to run them.
//!
//! Every wait is bounded; the plan stops starting runs when `--budget-secs` is spent and reports
//! the rest as skipped.

#[path = "gossip_scale/cluster.rs"]
mod cluster;
#[path = "gossip_scale/measure.rs"]
mod measure;
#[path = "gossip_scale/net.rs"]
mod net;
#[path = "gossip_scale/plan.rs"]
mod plan;
#[path = "gossip_scale/relay.rs"]
mod relay;
#[path = "gossip_scale/report.rs"]
mod report;
#[path = "gossip_scale/sim.rs"]
mod sim;
#[path = "gossip_scale/summary.rs"]
mod summary;

use std::time::Duration;

use tokio::time::Instant;

use crate::measure::{run_one, Outcome, Run};
use crate::net::MTU;
use crate::plan::{parse_plan, Plan, SECONDARY_MODES};
use crate::report::{fmt_interval, print_diagnostics, print_results, print_verdicts};
use crate::sim::{auto_dilation, cores, estimated_cores, Sim, MAX_AUTO_DILATION};
use crate::summary::summary;

async fn run_plan(plan: Plan) -> Vec<Run> {
    let start = Instant::now();
    let mut runs = Vec::new();
    for (k, &interval) in plan.intervals.iter().enumerate() {
        for &n in &plan.sizes {
            for mode in &plan.modes {
                if k > 0
                    && plan.secondary_modes_only
                    && !SECONDARY_MODES.contains(&mode.name.as_str())
                {
                    continue;
                }
                let auto = auto_dilation(n, mode, interval);
                let sim = Sim {
                    interval,
                    dilation: plan.dilation.unwrap_or(auto),
                };
                let remaining = plan.budget.saturating_sub(start.elapsed());
                let needed = sim.real(Duration::from_secs(12)) + Duration::from_secs(10);
                let outcome = if !plan.explicit_modes
                    && plan.dilation.is_none()
                    && auto > MAX_AUTO_DILATION
                {
                    Outcome::Skipped(format!(
                        "not in the default plan: needs ~{:.0} simulator cores, i.e. time dilation ×{auto}; name it with --modes",
                        estimated_cores(n, mode, interval)
                    ))
                } else if remaining < needed {
                    Outcome::Skipped(format!(
                        "time budget ({:.0} s left, needs ≥ {:.0} s at ×{}; see --budget-secs)",
                        remaining.as_secs_f64(),
                        needed.as_secs_f64(),
                        sim.dilation
                    ))
                } else {
                    eprintln!(
                        "[{:>5.1} s] {} nodes, {}, interval {}, dilation ×{}",
                        start.elapsed().as_secs_f64(),
                        n,
                        mode.name,
                        fmt_interval(interval),
                        sim.dilation
                    );
                    match run_one(n, mode, sim, plan.zone_size, remaining).await {
                        Ok(result) => Outcome::Done(Box::new(result)),
                        Err(error) => Outcome::Failed(format!("{error:#}")),
                    }
                };
                runs.push(Run {
                    mode: mode.clone(),
                    n,
                    interval,
                    outcome,
                });
            }
        }
    }
    eprintln!("[{:>5.1} s] done", start.elapsed().as_secs_f64());
    runs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let plan = parse_plan(&args);
    println!(
        "gossip_scale: chitchat 0.13, ChannelTransport (MTU {MTU}), {} cores, tokio multi-thread runtime ({} workers), {}-byte summary per node, phi threshold 8, zone size {} in zoned modes",
        cores(),
        cores(),
        summary(42, 1, 1).len(),
        plan.zone_size
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs = runtime.block_on(run_plan(plan));
    print_results(&runs);
    print_diagnostics(&runs);
    print_verdicts(&runs);
    runtime.shutdown_timeout(Duration::from_secs(5));
}
