//! What the rounds add up to, and the markdown tables printed from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::Outcome;

/// CPU counters at one instant: per tracked process, every other process (by PID, the
/// spinners left out), and UDP drops.
pub struct Snapshot {
    pub at: Instant,
    pub ticks: Vec<u64>,
    /// Context switches of each tracked process.
    pub switches: Vec<u64>,
    pub others: HashMap<u32, u64>,
    pub udp_drops: u64,
}

impl Snapshot {
    /// Ticks used since `earlier` by processes other than the tracked ones (and the spinners);
    /// a process that started since counts whole, one that ended is missed.
    fn foreign_ticks(&self, earlier: &Snapshot) -> u64 {
        self.others
            .iter()
            .map(|(pid, now)| now.saturating_sub(earlier.others.get(pid).copied().unwrap_or(0)))
            .sum()
    }

    /// CPU (% of one core) used since `earlier` by everything but the tracked and excluded
    /// processes: other work on the machine that would distort the figures.
    pub fn foreign_percent(&self, earlier: &Snapshot, tps: u64) -> f64 {
        let seconds = (self.at - earlier.at).as_secs_f64().max(1e-9);
        100.0 * self.foreign_ticks(earlier) as f64 / tps as f64 / seconds
    }
}

/// One path at one rate, all rounds merged.
pub struct Cell {
    pub outcome: Outcome,
    pub warmup: Outcome,
    /// CPU ticks and context switches of each tracked process over this path's measured
    /// windows.
    ticks: Vec<u64>,
    switches: Vec<u64>,
    foreign: u64,
    udp_drops: u64,
    wall: Duration,
    /// Rounds thrown away because other work on the machine overlapped them, and their outcome.
    redone: u32,
    discarded: Outcome,
    /// Rounds kept although other work overlapped them (attempts or waiting budget spent).
    contaminated: u32,
    /// Latency of each kept round, in round order.
    rounds: Vec<Histogram<u64>>,
}

pub struct RateResult {
    pub rate: u64,
    pub cells: Vec<Cell>,
    /// VmRSS (KiB) of each tracked process after this rate's rounds.
    pub rss: Vec<u64>,
}

/// What the tables are about.
pub struct Setup<'a> {
    pub paths: &'a [&'a str],
    /// Tracked processes: (name, pid, index of the path it serves, if a proxy).
    pub tracked: &'a [(&'a str, u32, Option<usize>)],
    pub idle_rss: &'a [u64],
    pub ticks_per_second: u64,
    pub description: String,
}

impl Cell {
    pub fn new(processes: usize) -> Self {
        Self {
            outcome: Outcome::new(),
            warmup: Outcome::new(),
            ticks: vec![0; processes],
            switches: vec![0; processes],
            foreign: 0,
            udp_drops: 0,
            wall: Duration::ZERO,
            redone: 0,
            discarded: Outcome::new(),
            contaminated: 0,
            rounds: Vec::new(),
        }
    }

    pub fn discard(&mut self, outcome: &Outcome) {
        self.redone += 1;
        self.discarded.merge(outcome);
    }

    pub fn add(&mut self, outcome: &Outcome, snapshots: &[Snapshot], contaminated: bool) {
        self.outcome.merge(outcome);
        self.rounds.push(outcome.latency.clone());
        self.contaminated += u32::from(contaminated);
        if let [before, after] = snapshots {
            self.wall += after.at - before.at;
            for (total, (b, a)) in self
                .ticks
                .iter_mut()
                .zip(before.ticks.iter().zip(&after.ticks))
            {
                *total += a.saturating_sub(*b);
            }
            for (total, (b, a)) in self
                .switches
                .iter_mut()
                .zip(before.switches.iter().zip(&after.switches))
            {
                *total += a.saturating_sub(*b);
            }
            self.foreign += after.foreign_ticks(before);
            self.udp_drops += after.udp_drops.saturating_sub(before.udp_drops);
        }
    }

    fn percent(&self, ticks: u64, tps: u64) -> f64 {
        100.0 * ticks as f64 / tps as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn bad(&self) -> u64 {
        self.outcome.bad() + self.warmup.bad() + self.discarded.bad()
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn quantiles(h: &Histogram<u64>) -> [f64; 3] {
    [us(h, 0.5), us(h, 0.99), us(h, 0.999)]
}

pub fn print(setup: &Setup<'_>, results: &[RateResult]) {
    println!();
    println!(
        "Command: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p plexus-agent --bench http`"
    );
    println!("{}", setup.description);
    println!();
    latency_table(setup, results);
    println!();
    resource_table(setup, results);
    println!();
    diagnostics_table(setup, results);
    println!();
    switches_table(setup, results);
    println!();
    targets(setup, results);
    println!();
    validity(setup, results);
}

fn latency_table(setup: &Setup<'_>, results: &[RateResult]) {
    println!(
        "| path | rate (req/s) | requests measured | failed / non-200 | p50 (µs) | p99 (µs) | \
         p99.9 (µs) | added vs direct p50 / p99 / p99.9 (µs) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let direct = quantiles(&r.cells[0].outcome.latency);
        for (i, (name, cell)) in setup.paths.iter().zip(&r.cells).enumerate() {
            let q = quantiles(&cell.outcome.latency);
            let added = if i == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:+.0} / {:+.0} / {:+.0}",
                    q[0] - direct[0],
                    q[1] - direct[1],
                    q[2] - direct[2]
                )
            };
            println!(
                "| {name} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {added} |",
                r.rate,
                cell.outcome.latency.len(),
                cell.bad(),
                q[0],
                q[1],
                q[2]
            );
        }
    }
    println!(
        "(latency from each request's scheduled send time to its complete answer; failures \
         counted over warm-up, lead-ins and measured windows)"
    );
}

fn resource_table(setup: &Setup<'_>, results: &[RateResult]) {
    let tps = setup.ticks_per_second;
    let mut header = "| process | RSS idle before load (MiB) |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for r in results {
        header.push_str(&format!(
            " CPU at {0} req/s (% of one core) | RSS at {0} req/s (MiB) |",
            r.rate
        ));
        rule.push_str("---|---|");
    }
    header.push_str(" CPU while other paths run (% of one core) |");
    rule.push_str("---|");
    println!("{header}\n{rule}");
    let per_path = |r: &RateResult, ticks: &dyn Fn(&Cell) -> u64| {
        setup
            .paths
            .iter()
            .zip(&r.cells)
            .map(|(p, c)| format!("{} {:.1}", &p[..1], c.percent(ticks(c), tps)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tracked = setup.tracked;
    for (i, (name, _, serves)) in tracked.iter().enumerate() {
        let members = [i];
        row(setup, results, name, &members, *serves);
        let last_of_group = tracked.get(i + 1).is_none_or(|next| next.2 != *serves);
        if serves.is_some() && last_of_group {
            let members: Vec<usize> = (0..tracked.len())
                .filter(|j| tracked[*j].2 == *serves)
                .collect();
            let label = if name.starts_with("plexus") {
                "**both agents**"
            } else {
                "**both haproxy**"
            };
            row(setup, results, label, &members, *serves);
        }
        if serves.is_none() {
            let mut line = format!("| {name} (per path) | {:.1} |", mib(setup.idle_rss[i]));
            for r in results {
                let cpu = per_path(r, &|c: &Cell| c.ticks[i]);
                line.push_str(&format!(" {cpu} | {:.1} |", mib(r.rss[i])));
            }
            println!("{line} - |");
        }
    }
    let mut line = "| all other processes (kernel threads included) | - |".to_owned();
    for r in results {
        let cpu = per_path(r, &|c: &Cell| c.foreign);
        line.push_str(&format!(" {cpu} | - |"));
    }
    println!("{line} - |");
    println!(
        "(a proxy's CPU is taken over the measured windows of the path it serves; per-path \
         figures: d = direct, p = plexus, h = haproxy; RSS (VmRSS) at the end of each rate's \
         rounds; CPU from /proc/PID/stat utime + stime)"
    );
}

/// One resource row for the proxies `members` (summed), serving path `serves`.
fn row(
    setup: &Setup<'_>,
    results: &[RateResult],
    name: &str,
    members: &[usize],
    serves: Option<usize>,
) {
    let Some(p) = serves else { return };
    let tps = setup.ticks_per_second;
    let bold = |s: String| {
        if name.starts_with("**") {
            format!("**{s}**")
        } else {
            s
        }
    };
    let idle: u64 = members.iter().map(|j| setup.idle_rss[*j]).sum();
    let mut line = format!("| {name} | {} |", bold(format!("{:.1}", mib(idle))));
    let (mut other_ticks, mut other_wall) = (0u64, Duration::ZERO);
    for r in results {
        let cell = &r.cells[p];
        let ticks: u64 = members.iter().map(|j| cell.ticks[*j]).sum();
        let rss: u64 = members.iter().map(|j| r.rss[*j]).sum();
        line.push_str(&format!(
            " {} | {} |",
            bold(format!("{:.1}", cell.percent(ticks, tps))),
            bold(format!("{:.1}", mib(rss)))
        ));
        for (_, other) in r.cells.iter().enumerate().filter(|(q, _)| *q != p) {
            other_ticks += members.iter().map(|j| other.ticks[*j]).sum::<u64>();
            other_wall += other.wall;
        }
    }
    let idle_cpu = 100.0 * other_ticks as f64 / tps as f64 / other_wall.as_secs_f64().max(1e-9);
    println!("{line} {idle_cpu:.1} |");
}

fn diagnostics_table(setup: &Setup<'_>, results: &[RateResult]) {
    println!(
        "| diagnostics: path | rate (req/s) | generator lag p50 / p99 / p99.9 (µs) | \
         from actual send p50 / p99 / p99.9 (µs) | added p99 per round: min / median / max (µs) \
         | UDP receive-buffer drops | rounds redone / kept with foreign load |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        for (name, cell) in setup.paths.iter().zip(&r.cells) {
            let lag = quantiles(&cell.outcome.lag);
            let service = quantiles(&cell.outcome.service);
            let mut added: Vec<f64> = cell
                .rounds
                .iter()
                .zip(&r.cells[0].rounds)
                .map(|(round, direct)| us(round, 0.99) - us(direct, 0.99))
                .collect();
            added.sort_by(f64::total_cmp);
            let spread = match (added.first(), added.last()) {
                (Some(min), Some(max)) if !std::ptr::eq(cell, &r.cells[0]) => {
                    format!("{min:+.0} / {:+.0} / {max:+.0}", added[added.len() / 2])
                }
                _ => "-".to_owned(),
            };
            println!(
                "| {name} | {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {spread} | {} | \
                 {} / {} |",
                r.rate,
                lag[0],
                lag[1],
                lag[2],
                service[0],
                service[1],
                service[2],
                cell.udp_drops,
                cell.redone,
                cell.contaminated
            );
        }
    }
    println!(
        "(generator lag: scheduled to actual send, i.e. how late the load generator's own \
         threads woke; from actual send: not corrected for coordinated omission, for comparison \
         only; UDP drops: machine-wide RcvbufErrors during that path's measured windows; a \
         round is redone (at most twice) when other processes used over 10% of a core during it)"
    );
}

fn switches_table(setup: &Setup<'_>, results: &[RateResult]) {
    let mut header = "| diagnostics: context switches per request |".to_owned();
    let mut rule = "|---|".to_owned();
    for r in results {
        header.push_str(&format!(" at {} req/s |", r.rate));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (i, (name, _, serves)) in setup.tracked.iter().enumerate() {
        let Some(p) = serves else { continue };
        let mut line = format!("| {name} |");
        for r in results {
            let cell = &r.cells[*p];
            let requests = (cell.wall.as_secs_f64() * r.rate as f64).max(1.0);
            line.push_str(&format!(" {:.1} |", cell.switches[i] as f64 / requests));
        }
        println!("{line}");
    }
    println!(
        "(voluntary + involuntary, all threads, over the measured windows of the path served)"
    );
}

/// The targets at 1 000 req/s.
fn targets(setup: &Setup<'_>, results: &[RateResult]) {
    let Some(r) = results.iter().find(|r| r.rate == 1_000) else {
        return;
    };
    let p99 = |i: usize| us(&r.cells[i].outcome.latency, 0.99);
    let added = p99(1) - p99(0);
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    println!("| target (1 000 req/s) | measured | verdict |");
    println!("|---|---|---|");
    println!(
        "| p99 added by two agents < 1 ms | {added:+.0} µs ({:.0} vs {:.0} direct) | {} |",
        p99(1),
        p99(0),
        verdict(added < 1000.0)
    );
    match setup.paths.iter().position(|p| p.starts_with("haproxy")) {
        Some(h) => {
            let haproxy = p99(h) - p99(0);
            println!(
                "| p99 added not above the HAProxy pair's | plexus {added:+.0} µs, haproxy \
                 {haproxy:+.0} µs | {} |",
                verdict(added <= haproxy)
            );
        }
        None => println!("| p99 added not above the HAProxy pair's | HAProxy not measured | - |"),
    }
    let agents: Vec<(&str, f64)> = setup
        .tracked
        .iter()
        .enumerate()
        .filter(|(_, (n, _, _))| n.starts_with("plexus"))
        .map(|(i, (n, _, _))| (n.trim_start_matches("plexus "), mib(r.rss[i])))
        .collect();
    let worst = agents.iter().map(|a| a.1).fold(0.0, f64::max);
    let listed: Vec<String> = agents
        .iter()
        .map(|(n, m)| format!("{n} {m:.1} MiB"))
        .collect();
    println!(
        "| agent RSS < 30 MiB (each) | {} | {} |",
        listed.join(", "),
        verdict(worst < 30.0)
    );
}

fn validity(setup: &Setup<'_>, results: &[RateResult]) {
    let mut valid = true;
    for r in results {
        for (name, cell) in setup.paths.iter().zip(&r.cells) {
            if cell.bad() == 0 {
                continue;
            }
            valid = false;
            let (o, w, d) = (&cell.outcome, &cell.warmup, &cell.discarded);
            println!(
                "ERRORS: {name} at {} req/s: kept rounds: {} failed or unsent, non-200 (status, \
                 plexus-error) {:?}, first failure: {}; warm-up: {} failed, non-200 {:?}, first \
                 failure: {}; redone rounds: {} failed, non-200 {:?}",
                r.rate,
                o.errors,
                o.non_200,
                o.first_error.as_deref().unwrap_or("-"),
                w.errors,
                w.non_200,
                w.first_error.as_deref().unwrap_or("-"),
                d.errors,
                d.non_200,
            );
        }
    }
    let contaminated: u32 = results
        .iter()
        .flat_map(|r| &r.cells)
        .map(|c| c.contaminated)
        .sum();
    if contaminated > 0 {
        println!(
            "WARNING: {contaminated} measured rounds overlapped other work on the machine \
             (see the diagnostics): the figures are disturbed."
        );
    }
    if valid {
        println!("Every request on every path was answered 200 with the expected 100-byte body.");
    } else {
        println!("THIS RUN HAD ERRORS: it is not a valid measurement.");
    }
}
