//! The record as it stands, live abort checks, and the progress line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, Seen};
use crate::backend::Backend;
use crate::checks;
use crate::record::{CheckStatus, FaultWindow, Hit, RunRecord, Window};
use crate::scenario::{Mode, Scenario};
use crate::schedule::PlannedFault;
use crate::workload::Samples;

/// The record as it stands at `now`.
#[allow(clippy::too_many_arguments)]
pub(super) fn snapshot(
    scenario: &Scenario,
    seed: u64,
    plan: &[PlannedFault],
    applied: &BTreeMap<usize, Duration>,
    healed_at: &BTreeMap<usize, Duration>,
    samples: &Samples,
    seen: &Mutex<Seen>,
    backends: &[Backend],
    epoch: Instant,
    now: Duration,
) -> RunRecord {
    let mut phases = Vec::new();
    let mut t = Duration::ZERO;
    for phase in &scenario.phases {
        if t >= now {
            break;
        }
        phases.push(Window {
            name: phase.name.clone(),
            start: t,
            end: (t + phase.duration).min(now),
        });
        t += phase.duration;
    }
    let faults = applied
        .iter()
        .filter(|(_, start)| **start < now)
        .map(|(i, start)| {
            let f = &plan[*i];
            FaultWindow {
                label: f.label.clone(),
                kind: f.kind.name().to_owned(),
                targets: f.targets.clone(),
                start: *start,
                end: healed_at.get(i).copied().unwrap_or(now).min(now),
            }
        })
        .collect();
    let mut hits: Vec<Hit> = backends
        .iter()
        .filter(|b| b.service == scenario.workload.service)
        .flat_map(|b| {
            b.hits_since(epoch).into_iter().map(|at| Hit {
                at,
                node: b.node.clone(),
            })
        })
        .filter(|h| h.at < now)
        .collect();
    hits.sort_by_key(|h| h.at);
    let seen = lock(seen);
    let mut events = seen.events.clone();
    events.sort_by_key(|e| e.at);
    RunRecord {
        scenario: scenario.name.clone(),
        purpose: scenario.purpose.clone(),
        seed,
        replay: format!(
            "plexus-chaos run {} --seed {seed}",
            scenario.source.display()
        ),
        nodes: scenario.topology.names(),
        services: vec![scenario.workload.service.clone()],
        phases,
        faults,
        events,
        samples: lock(samples)
            .iter()
            .filter(|s| s.at < now)
            .cloned()
            .collect(),
        observations: seen.observations.clone(),
        counters: seen.counters.clone(),
        hits,
        length: now,
    }
}

/// The first `abort = true` check that has failed by `now`, if any. A continuous check is
/// judged as the run goes; a windowed one once its window, as planned (`planned`: the
/// phases and fault windows of the schedule), has closed.
pub(super) fn abort_check(
    scenario: &Scenario,
    planned: &RunRecord,
    partial: &RunRecord,
    now: Duration,
) -> Option<String> {
    for check in scenario.checks.iter().filter(|c| c.abort) {
        let due = check.mode == Mode::Continuous
            || checks::window(check, planned).is_some_and(|w| w.end <= now);
        // Nothing settled yet (the first seconds): not judgeable, not a failure.
        if !due || checks::window(check, partial).is_none() {
            continue;
        }
        let result = checks::evaluate(check, partial, None);
        if result.status == CheckStatus::Fail {
            return Some(format!(
                "{} measured {:?} against {}",
                result.name, result.measured, result.threshold
            ));
        }
    }
    None
}

/// The run as scheduled: every phase and fault window, no traffic (for judging when a
/// check's window closes).
pub(super) fn planned(scenario: &Scenario, seed: u64, plan: &[PlannedFault]) -> RunRecord {
    let mut record = RunRecord {
        scenario: scenario.name.clone(),
        purpose: scenario.purpose.clone(),
        seed,
        replay: String::new(),
        nodes: scenario.topology.names(),
        services: Vec::new(),
        phases: Vec::new(),
        faults: plan
            .iter()
            .map(|f| FaultWindow {
                label: f.label.clone(),
                kind: f.kind.name().to_owned(),
                targets: f.targets.clone(),
                start: f.start,
                end: f.end,
            })
            .collect(),
        events: Vec::new(),
        samples: Vec::new(),
        observations: Vec::new(),
        counters: Vec::new(),
        hits: Vec::new(),
        length: scenario.length(),
    };
    let mut t = Duration::ZERO;
    for phase in &scenario.phases {
        record.phases.push(Window {
            name: phase.name.clone(),
            start: t,
            end: t + phase.duration,
        });
        t += phase.duration;
    }
    record
}

/// One line of progress: the last second's traffic and the mesh's latest reactions.
/// The last second of the run, read from the ends of the growing lists (no copy of the run so
/// far): samples are pushed when they complete, at most `timeout` after they were due.
#[allow(clippy::too_many_arguments)]
pub(super) fn last_second(
    scenario: &Scenario,
    samples: &Samples,
    seen: &Mutex<Seen>,
    backends: &[Backend],
    epoch: Instant,
    now: Duration,
) -> RunRecord {
    let from = now.saturating_sub(Duration::from_secs(1));
    let horizon = from.saturating_sub(scenario.workload.timeout + Duration::from_secs(1));
    let mut record = planned(scenario, 0, &[]);
    record.samples = lock(samples)
        .iter()
        .rev()
        .take_while(|s| s.at >= horizon)
        .filter(|s| s.at >= from && s.at < now)
        .cloned()
        .collect();
    record.hits = backends
        .iter()
        .filter(|b| b.service == scenario.workload.service)
        .flat_map(|b| {
            b.hits_after(epoch, from).into_iter().map(|at| Hit {
                at,
                node: b.node.clone(),
            })
        })
        .collect();
    record.events = lock(seen)
        .events
        .iter()
        .rev()
        .take_while(|e| e.at >= horizon)
        .filter(|e| e.at >= from)
        .cloned()
        .collect();
    record.events.reverse();
    record
}

/// One line of progress: the last second's traffic and the mesh's latest reactions.
pub(super) fn progress_line(record: &RunRecord, now: Duration, phase: &str) -> String {
    let from = now.saturating_sub(Duration::from_secs(1));
    let recent: Vec<_> = record.samples.iter().filter(|s| s.at >= from).collect();
    let ok = recent.iter().filter(|s| s.outcome.is_ok()).count();
    let mut lat: Vec<u64> = recent
        .iter()
        .map(|s| s.latency.as_micros() as u64)
        .collect();
    let p99 = crate::record::quantile(&mut lat, 0.99).unwrap_or(0) as f64 / 1e3;
    let mut share: BTreeMap<&str, usize> = BTreeMap::new();
    for h in record.hits.iter().filter(|h| h.at >= from) {
        *share.entry(h.node.as_str()).or_default() += 1;
    }
    let hits: usize = share.values().sum();
    let shares: Vec<String> = share
        .iter()
        .map(|(n, c)| format!("{n} {:.0}%", 100.0 * *c as f64 / hits.max(1) as f64))
        .collect();
    let reactions: Vec<&str> = record
        .events
        .iter()
        .filter(|e| e.at >= from && e.kind.is_reaction())
        .map(|e| e.detail.as_str())
        .collect();
    let rate = if recent.is_empty() {
        100.0
    } else {
        100.0 * ok as f64 / recent.len() as f64
    };
    let mut line = format!(
        "[{:>6.1}s] {phase:<10} {:>5} req  ok {rate:>6.2}%  p99 {p99:>7.1} ms  | {}",
        now.as_secs_f64(),
        recent.len(),
        shares.join(" ")
    );
    if !reactions.is_empty() {
        line.push_str(&format!("  | {}", reactions.join("; ")));
    }
    line
}
