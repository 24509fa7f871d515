//! What the checks measure on the record: success rates (overall or per workload source),
//! policy refusals, latency quantiles, traffic shares, retry amplification, detection times
//! and handshake failures. Pure functions of the [`RunRecord`].

use std::time::Duration;

use crate::record::{quantile, EventKind, Outcome, RunRecord, Sample, Window};

/// The share of requests due in `[from, to)` that succeeded.
pub fn success_rate(record: &RunRecord, from: Duration, to: Duration) -> Option<f64> {
    share_where(record, &[], from, to, |s| s.outcome.is_ok())
}

/// The share of requests due in `[from, to)`, sent through one of `sources` (every source
/// when empty), for which `counts` holds.
pub fn share_where(
    record: &RunRecord,
    sources: &[String],
    from: Duration,
    to: Duration,
    counts: impl Fn(&Sample) -> bool,
) -> Option<f64> {
    let (mut n, mut yes) = (0u64, 0u64);
    let sent_by = |s: &Sample| {
        sources.is_empty()
            || s.from
                .as_deref()
                .is_some_and(|f| sources.iter().any(|n| n == f))
    };
    for s in record
        .samples
        .iter()
        .filter(|s| s.at >= from && s.at < to && sent_by(s))
    {
        n += 1;
        yes += u64::from(counts(s));
    }
    (n > 0).then(|| yes as f64 / n as f64)
}

/// The share of requests due in `[from, to)` through `sources` that an agent's access
/// policy refused (403 `policy_denied`).
pub fn denied_share(
    record: &RunRecord,
    sources: &[String],
    from: Duration,
    to: Duration,
) -> Option<f64> {
    share_where(record, sources, from, to, |s| s.outcome == Outcome::Denied)
}

pub fn latency_quantile(
    record: &RunRecord,
    from: Duration,
    to: Duration,
    q: f64,
) -> Option<Duration> {
    let mut v: Vec<u64> = record
        .samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .map(|s| s.latency.as_micros() as u64)
        .collect();
    quantile(&mut v, q).map(Duration::from_micros)
}

/// The share of backend hits in `[from, to)` that reached `nodes`.
pub fn share_of(record: &RunRecord, nodes: &[String], from: Duration, to: Duration) -> Option<f64> {
    let (mut all, mut mine) = (0u64, 0u64);
    for h in record.hits.iter().filter(|h| h.at >= from && h.at < to) {
        all += 1;
        mine += u64::from(nodes.contains(&h.node));
    }
    (all > 0).then(|| mine as f64 / all as f64)
}

/// Backend hits per workload request sent in `[from, to)`.
pub fn amplification(record: &RunRecord, from: Duration, to: Duration) -> Option<f64> {
    let requests = record
        .samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .count();
    let hits = record
        .hits
        .iter()
        .filter(|h| h.at >= from && h.at < to)
        .count();
    (requests > 0).then(|| hits as f64 / requests as f64)
}

/// When every agent that ran throughout the window, and was not a target, had reported every
/// target dead or left.
pub(super) fn detected(record: &RunRecord, targets: &[String], w: &Window) -> Option<Duration> {
    if targets.is_empty() {
        return None;
    }
    let faulted: Vec<&String> = record
        .faults
        .iter()
        .filter(|f| f.start < w.end && f.end > w.start)
        .flat_map(|f| &f.targets)
        .collect();
    let observers: Vec<&String> = record
        .nodes
        .iter()
        .filter(|n| !faulted.contains(n))
        .collect();
    if observers.is_empty() {
        return None;
    }
    let mut latest = w.start;
    for observer in observers {
        for target in targets {
            let seen = record
                .events
                .iter()
                .filter(|e| e.kind == EventKind::MemberDown && e.at >= w.start)
                .find(|e| {
                    e.observer.as_ref() == Some(observer) && e.subject.as_ref() == Some(target)
                })?;
            latest = latest.max(seen.at);
        }
    }
    Some(latest)
}

/// Failed handshakes counted by agents no fault aimed at, in `[from, to)` (counter increases
/// only, so a restart's reset to zero is not a negative count).
pub fn handshake_failures(record: &RunRecord, from: Duration, to: Duration) -> f64 {
    let faulted: Vec<&String> = record.faults.iter().flat_map(|f| &f.targets).collect();
    let mut total = 0.0;
    for node in record.nodes.iter().filter(|n| !faulted.contains(n)) {
        let mut last: Option<f64> = None;
        for r in record
            .counters
            .iter()
            .filter(|r| &r.node == node && r.name == "plexus_handshake_failures_total" && r.at < to)
        {
            if let Some(prev) = last {
                if r.at >= from && r.value > prev {
                    total += r.value - prev;
                }
            }
            last = Some(r.value);
        }
    }
    total
}
