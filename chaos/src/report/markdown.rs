//! report.md: the verdict first, then the evidence a person reads top to bottom.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{outcome_label, secs, status_str, us_to_ms, Totals};
use crate::record::{CheckResult, CheckStatus, Event, EventKind, RunRecord, Verdict};

/// At most this many reactions are listed; the timeline shows them all.
const MAX_REACTIONS: usize = 200;

/// `writeln!` into a String, which cannot fail.
macro_rules! w {
    ($out:expr) => {
        let _ = writeln!($out);
    };
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

pub(super) fn render(record: &RunRecord, verdict: &Verdict) -> String {
    let mut out = String::new();
    header(&mut out, record, verdict);
    checks(&mut out, verdict);
    phases(&mut out, record);
    faults(&mut out, record);
    reactions(&mut out, record);
    workload(&mut out, record);
    shares(&mut out, record);
    agents(&mut out, record);
    w!(out, "## Timeline\n");
    w!(
        out,
        "See [timeline.svg](timeline.svg): success rate, p99 latency and each node's share of \
         the traffic over time, fault windows shaded, the mesh's reactions marked.\n"
    );
    w!(out, "![timeline](timeline.svg)");
    out
}

fn header(out: &mut String, record: &RunRecord, verdict: &Verdict) {
    w!(out, "# Chaos run: {}\n", cell(&verdict.scenario));
    if !record.purpose.trim().is_empty() {
        w!(out, "_{}_\n", record.purpose.trim());
    }
    let count = |s| verdict.checks.iter().filter(|c| c.status == s).count();
    let (failed, skipped) = (count(CheckStatus::Fail), count(CheckStatus::NotEvaluated));
    let total = verdict.checks.len();
    let skipped = match skipped {
        0 => String::new(),
        n => format!(", {n} not evaluated"),
    };
    if verdict.passed {
        w!(
            out,
            "**Verdict: PASS**: no check of {total} failed{skipped}."
        );
    } else {
        w!(
            out,
            "**Verdict: FAIL**: {failed} of {total} checks failed{skipped}."
        );
    }
    if verdict.aborted {
        w!(out, "The run was **aborted** early by a failing check.");
    }
    if verdict.passed {
        w!(
            out,
            "\nSeed `{}`; replay: `{}`\n",
            verdict.seed,
            verdict.replay
        );
    } else {
        w!(out, "\nSeed: `{}`. Replay with:\n", verdict.seed);
        w!(out, "```sh\n{}\n```\n", verdict.replay);
    }
    let t = Totals::of(&record.samples);
    w!(
        out,
        "Length {}, {} requests, success rate {}.\n",
        at(record.length),
        t.requests,
        rate(t.ok, t.requests)
    );
}

fn checks(out: &mut String, verdict: &Verdict) {
    w!(out, "## Checks\n");
    if verdict.checks.is_empty() {
        w!(out, "No checks were declared.\n");
        return;
    }
    head(
        out,
        "status | check | measured: | threshold | pass %: | detail",
    );
    for c in &verdict.checks {
        w!(out, "{}", check_row(c));
    }
    w!(out);
}

/// One row of the checks table.
fn check_row(c: &CheckResult) -> String {
    let status = match c.status {
        CheckStatus::Fail => "**FAIL**".to_owned(),
        other => status_str(other).to_owned(),
    };
    let measured = match c.measured {
        Some(v) if c.unit.is_empty() => number(v),
        Some(v) => format!("{} {}", number(v), c.unit),
        None => "—".to_owned(),
    };
    let pass = match c.pass_percentage {
        p if p.is_finite() => format!("{p:.1}"),
        _ => "—".to_owned(),
    };
    format!(
        "| {status} | {} | {} | {} | {pass} | {} |",
        cell(&c.name),
        cell(&measured),
        cell(&c.threshold),
        cell(&c.detail)
    )
}

fn phases(out: &mut String, record: &RunRecord) {
    w!(out, "## Phases\n");
    if record.phases.is_empty() {
        w!(out, "No phase ran.\n");
        return;
    }
    head(out, "phase | start: | end: | length:");
    for p in &record.phases {
        let (start, end, length) = (at(p.start), at(p.end), at(p.length()));
        w!(out, "| {} | {start} | {end} | {length} |", cell(&p.name));
    }
    w!(out);
}

fn faults(out: &mut String, record: &RunRecord) {
    w!(out, "## Faults\n");
    if record.faults.is_empty() {
        w!(out, "No fault was applied.\n");
        return;
    }
    head(out, "fault | kind | targets | window");
    for f in &record.faults {
        w!(
            out,
            "| {} | {} | {} | {} → {} |",
            cell(&f.label),
            cell(&f.kind),
            cell(&f.targets.join(", ")),
            at(f.start),
            at(f.end)
        );
    }
    w!(out);
}

fn reactions(out: &mut String, record: &RunRecord) {
    w!(out, "## The mesh's reactions\n");
    let reactions: Vec<_> = (record.events.iter())
        .filter(|e| e.kind.is_reaction())
        .collect();
    if reactions.is_empty() {
        w!(
            out,
            "No ejection, return, member change or decision was seen.\n"
        );
    } else {
        head(out, "at: | phase | since fault start | event | detail");
        for e in reactions.iter().take(MAX_REACTIONS) {
            let phase = record.phases.iter().find(|p| p.contains(e.at));
            let faults = record.faults.iter().filter(|f| f.start <= e.at);
            let fault = faults.max_by_key(|f| f.start);
            let since = fault.map_or("—".to_owned(), |f| {
                format!("+{} ({})", at(e.at - f.start), cell(&f.label))
            });
            w!(
                out,
                "| {} | {} | {since} | {} | {} |",
                at(e.at),
                phase.map_or("—", |p| p.name.as_str()),
                kind_label(&e.kind),
                cell(&e.detail)
            );
        }
        if reactions.len() > MAX_REACTIONS {
            let more = reactions.len() - MAX_REACTIONS;
            w!(out, "\n…and {more} more (all are marked on the timeline).");
        }
        w!(out);
    }
    let incident = |e: &&Event| matches!(e.kind, EventKind::AgentExited | EventKind::Abort);
    let incidents: Vec<_> = record.events.iter().filter(incident).collect();
    if !incidents.is_empty() {
        w!(out, "Incidents:\n");
        for e in incidents {
            let (kind, detail) = (kind_label(&e.kind), cell(&e.detail));
            w!(out, "- {}: {kind}: {detail}", at(e.at));
        }
        w!(out);
    }
}

fn workload(out: &mut String, record: &RunRecord) {
    w!(out, "## Workload\n");
    if record.samples.is_empty() {
        w!(out, "No request was sent.\n");
        return;
    }
    head(
        out,
        "phase | requests: | ok: | success rate: | p50: | p99: | p99.9:",
    );
    let row = |out: &mut String, name: &str, t: Totals| {
        let lat = |us: Option<u64>| us.map_or("—".to_owned(), |us| ms(us_to_ms(us)));
        w!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            t.requests,
            t.ok,
            rate(t.ok, t.requests),
            lat(t.p50_us),
            lat(t.p99_us),
            lat(t.p999_us)
        );
    };
    for p in &record.phases {
        let t = Totals::of(record.samples.iter().filter(|s| p.contains(s.at)));
        row(out, &cell(&p.name), t);
    }
    row(out, "**all**", Totals::of(&record.samples));
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for s in record.samples.iter().filter(|s| !s.outcome.is_ok()) {
        *failures.entry(outcome_label(s.outcome)).or_default() += 1;
    }
    if !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|(k, n)| format!("{k} × {n}")).collect();
        w!(out, "\nFailed requests: {}.", list.join(", "));
    }
    w!(out);
}

fn shares(out: &mut String, record: &RunRecord) {
    w!(out, "## Traffic share per node\n");
    let answered: Vec<(Duration, &str)> = (record.samples.iter())
        .filter_map(|s| Some((s.at, s.served_by.as_deref()?)))
        .collect();
    if answered.is_empty() {
        w!(out, "No answered request named the node that served it.\n");
    } else {
        w!(out, "Share of the answered requests each node served.\n");
        share_table(out, record, "answered", &answered);
    }
    if !record.hits.is_empty() {
        let hits: Vec<(Duration, &str)> = (record.hits.iter())
            .map(|h| (h.at, h.node.as_str()))
            .collect();
        w!(
            out,
            "Requests as the backends received them (retries and hedges included).\n"
        );
        share_table(out, record, "received", &hits);
    }
}

/// Per phase (and overall): how many of `served` each node took, in percent.
fn share_table(out: &mut String, record: &RunRecord, what: &str, served: &[(Duration, &str)]) {
    let mut nodes: Vec<&str> = record.nodes.iter().map(String::as_str).collect();
    for (_, node) in served {
        if !nodes.contains(node) {
            nodes.push(node);
        }
    }
    let names: Vec<String> = nodes.iter().map(|n| format!("{}:", cell(n))).collect();
    head(out, &format!("phase | {what}: | {}", names.join(" | ")));
    let mut windows: Vec<(String, Duration, Duration)> = (record.phases.iter())
        .map(|p| (cell(&p.name), p.start, p.end))
        .collect();
    windows.push(("**all**".to_owned(), Duration::ZERO, Duration::MAX));
    for (name, start, end) in windows {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, node) in served.iter().filter(|(at, _)| *at >= start && *at < end) {
            *counts.entry(node).or_default() += 1;
        }
        let total: u64 = counts.values().sum();
        let cells: Vec<String> = (nodes.iter())
            .map(|n| match counts.get(n) {
                Some(&c) => format!("{:.1}%", c as f64 * 100.0 / total as f64),
                None => "0%".to_owned(),
            })
            .collect();
        w!(out, "| {name} | {total} | {} |", cells.join(" | "));
    }
    w!(out);
}

fn agents(out: &mut String, record: &RunRecord) {
    w!(out, "## Agents\n");
    if record.observations.is_empty() {
        w!(out, "No agent was observed.\n");
        return;
    }
    let mut order = record.nodes.clone();
    for o in &record.observations {
        if !order.contains(&o.node) {
            order.push(o.node.clone());
        }
    }
    head(
        out,
        "node | peak RSS: | last RSS: | observations: | seen not running:",
    );
    for node in order {
        let seen: Vec<_> = record
            .observations
            .iter()
            .filter(|o| o.node == node)
            .collect();
        if seen.is_empty() {
            continue;
        }
        let peak = seen.iter().filter_map(|o| o.rss_kib).max();
        let last = seen.iter().rev().find_map(|o| o.rss_kib);
        let down = seen.iter().filter(|o| !o.running).count();
        let mib = |k: Option<u64>| {
            k.map_or("—".to_owned(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            })
        };
        let (peak, last, count) = (mib(peak), mib(last), seen.len());
        w!(
            out,
            "| {} | {peak} | {last} | {count} | {down} |",
            cell(&node)
        );
    }
    w!(out);
}

fn kind_label(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::PhaseStart => "phase start",
        EventKind::FaultApplied => "fault applied",
        EventKind::FaultHealed => "fault healed",
        EventKind::Ejection => "ejection",
        EventKind::Return => "return",
        EventKind::MemberDown => "member down",
        EventKind::MemberUp => "member up",
        EventKind::Decision => "decision",
        EventKind::AgentExited => "agent exited",
        EventKind::Abort => "abort",
    }
}

/// A table's head from `a | b: | c`; a name ending in `:` is a right-aligned (numeric) column.
fn head(out: &mut String, columns: &str) {
    let (mut names, mut rules) = (Vec::new(), Vec::new());
    for c in columns.split(" | ") {
        names.push(c.trim_end_matches(':'));
        rules.push(if c.ends_with(':') { "---:" } else { "---" });
    }
    w!(out, "| {} |", names.join(" | "));
    w!(out, "|{}|", rules.join("|"));
}

/// A time offset: `12.35 s`.
pub(super) fn at(d: Duration) -> String {
    format!("{:.2} s", secs(d))
}

/// A success rate in percent, rounded down (a failure never shows as 100%).
fn rate(ok: u64, requests: u64) -> String {
    if requests == 0 {
        return "—".to_owned();
    }
    let hundredths = u128::from(ok) * 10_000 / u128::from(requests);
    format!("{}.{:02}%", hundredths / 100, hundredths % 100)
}

fn ms(v: f64) -> String {
    format!("{} ms", number(v))
}

/// A number with at most four decimals, trailing zeros dropped.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0" } else { s }.to_owned()
}

/// Text safe inside a table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace(['\r', '\n'], " ").replace('|', "\\|")
}
