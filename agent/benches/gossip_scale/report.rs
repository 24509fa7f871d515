//! Output: the results, diagnostics and verdict tables.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use crate::measure::{Membership, Outcome, Run, RunResult};
use crate::net::MTU;
use crate::plan::Topology;
use crate::sim::cores;

pub(crate) fn fmt_opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

pub(crate) fn fmt_interval(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1000.0 {
        format!("{:.1} KB", b / 1000.0)
    } else {
        format!("{b:.0} B")
    }
}

fn config_label(run: &Run) -> String {
    match &run.outcome {
        Outcome::Done(r) if r.zones > 1 => format!("{} ({} zones)", run.mode.name, r.zones),
        _ => run.mode.name.clone(),
    }
}

pub(crate) fn print_results(runs: &[Run]) {
    println!();
    println!("| config | nodes | interval | time to full membership | time to 99% | time to 100% | bytes/node/s | largest msg, steady: Syn / SynAck / Ack (B) | largest msg, whole run (B) | MTU-refused sends | time dilation |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let head = format!(
            "| {} | {} | {} |",
            config_label(run),
            run.n,
            fmt_interval(run.interval)
        );
        let r = match &run.outcome {
            Outcome::Done(r) => r,
            Outcome::Skipped(why) => {
                println!("{head} skipped: {why} | | | | | | | |");
                continue;
            }
            Outcome::Failed(err) => {
                println!("{head} failed: {err} | | | | | | | |");
                continue;
            }
        };
        let membership = match &r.membership {
            Membership::Done(d) => format!("{:.2} s", d.as_secs_f64()),
            Membership::NotDone {
                after,
                complete,
                total,
            } => format!(
                "**not within {:.0} s** ({complete}/{total} complete)",
                after.as_secs_f64()
            ),
        };
        let seen = |t: Option<Duration>| match t {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => format!(
                "**not within {:.0} s** ({}/{} saw it)",
                r.prop_bound.as_secs_f64(),
                r.seen_final,
                r.n
            ),
        };
        let mut bytes = fmt_bytes(r.bytes_node_s);
        if r.syn_node_s < 0.9 * r.nominal_syn_node_s && r.syn_node_s > 0.0 {
            let _ = write!(
                bytes,
                " ({} at the nominal Syn rate)",
                fmt_bytes(r.bytes_node_s * r.nominal_syn_node_s / r.syn_node_s)
            );
        }
        println!(
            "{head} {membership} | {} | {} | {bytes} | {} / {} / {} | {} | {} | ×{}{} |",
            seen(r.t99),
            seen(r.t100),
            r.steady_max_syn,
            r.steady_max_syn_ack,
            r.steady_max_ack,
            r.run_max_msg,
            r.mtu_refused,
            r.sim.dilation,
            if r.starved() { " **CPU-starved**" } else { "" },
        );
    }
}

pub(crate) fn print_diagnostics(runs: &[Run]) {
    println!();
    println!("Diagnostics. Times and rates are per simulated second; CPU is this process's, of {}% ({} cores).", 100 * cores(), cores());
    println!();
    println!("| config | nodes | interval | Syn/node/s (nominal) | msgs/node/s | representative extra bytes/s | sent, not delivered | CPU %: membership / change / steady | timer lag p99 (ms): membership / change / steady | simulator CPU per node (ms/s) | Syn bytes per member (flat) | wall (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let Outcome::Done(r) = &run.outcome else {
            continue;
        };
        println!(
            "| {} | {} | {} | {:.2} ({:.2}) | {:.1} | {} | {:.1}% | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} / {:.1} | {:.2} | {} | {:.0} |",
            config_label(run),
            r.n,
            fmt_interval(run.interval),
            r.syn_node_s,
            r.nominal_syn_node_s,
            r.msgs_node_s,
            r.rep_extra_bytes_s.map_or_else(|| "-".to_string(), fmt_bytes),
            r.undelivered_pct,
            r.phases[0].cpu_pct,
            r.phases[1].cpu_pct,
            r.phases[2].cpu_pct,
            r.phases[0].lag_p99_ms,
            r.phases[1].lag_p99_ms,
            r.phases[2].lag_p99_ms,
            r.cpu_ms_per_node_s,
            if r.zones > 1 {
                "-".to_string()
            } else {
                format!("{:.1}", r.steady_max_syn as f64 / r.n as f64)
            },
            r.wall.as_secs_f64(),
        );
    }
    // Where a flat V0/V1 Syn (one full digest) would stop fitting in one datagram.
    for protocol in ["v0", "v1"] {
        let largest = runs
            .iter()
            .filter_map(|run| match &run.outcome {
                Outcome::Done(r)
                    if run.mode.topology == Topology::Flat
                        && run.mode.name.contains(protocol)
                        && r.steady_max_syn > 0 =>
                {
                    Some(r)
                }
                _ => None,
            })
            .max_by_key(|r| r.n);
        if let Some(r) = largest {
            let per_member = r.steady_max_syn as f64 / r.n as f64;
            println!();
            println!(
                "flat {protocol}: the largest Syn at {} nodes was {} B ({per_member:.1} B per member); at that rate one digest exceeds the {MTU}-byte MTU past about {:.0} members (linear extrapolation).",
                r.n,
                r.steady_max_syn,
                MTU as f64 / per_member
            );
        }
    }
}

pub(crate) fn print_verdicts(runs: &[Run]) {
    println!();
    println!("| target | config | interval | measured | verdict |");
    println!("|---|---|---|---|---|");
    let mut done = BTreeSet::new();
    for run in runs {
        if !done.insert((run.mode.name.clone(), run.interval)) {
            continue;
        }
        let find = |n: usize| {
            runs.iter().find_map(|r| match &r.outcome {
                Outcome::Done(res)
                    if r.n == n && r.mode.name == run.mode.name && r.interval == run.interval =>
                {
                    Some(res)
                }
                _ => None,
            })
        };
        let interval = fmt_interval(run.interval);
        let caveat = |r: &RunResult| {
            if r.starved() {
                " (CPU-starved run)"
            } else {
                ""
            }
        };
        let line = |target: &str, measured: String, verdict: String| {
            println!(
                "| {target} | {} | {interval} | {measured} | {verdict} |",
                run.mode.name
            );
        };
        let target = "99% of 1000 nodes see a change within 3 s";
        match find(1000) {
            Some(r) => line(
                target,
                fmt_opt(r.t99),
                format!(
                    "{}{}",
                    if r.t99.is_some_and(|t| t <= Duration::from_secs(3)) {
                        "met"
                    } else {
                        "**missed**"
                    },
                    caveat(r)
                ),
            ),
            None => line(target, "not run".into(), "-".into()),
        }
        let target = "under 10 KB/s per node at 100 nodes";
        match find(100) {
            Some(r) => line(
                target,
                fmt_bytes(r.bytes_node_s),
                format!(
                    "{}{}",
                    if r.bytes_node_s < 10_000.0 {
                        "met"
                    } else {
                        "**missed**"
                    },
                    caveat(r)
                ),
            ),
            None => line(target, "not run".into(), "-".into()),
        }
    }
}
