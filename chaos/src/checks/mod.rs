//! Steady-state checks: pure functions from a [`RunRecord`] (and, for the consensus checks,
//! the evidence the agents expose) to a [`CheckResult`].
//!
//! Each check has a window: its phase if it names one, else what its mode implies (`before`
//! the first fault, `during` the faults, `after` the last heal, `continuous`: the whole run),
//! minus the `after` grace at its start. `continuous` checks must hold in every 1 s slice of
//! the window (or in `pass_percent` of them); the others are judged on the whole window, and
//! their slices are reported as the pass percentage.

mod consensus;
mod measure;

use std::time::Duration;

pub use consensus::{
    roles, rotation, AgentConsensus, CertsLook, ConsensusEvidence, ConsensusLook, LogEntry,
    Rotation, SuspicionLook, VoterLog,
};
use measure::detected;
pub use measure::{
    amplification, denied_share, handshake_failures, latency_quantile, share_of, share_where,
    success_rate,
};

use crate::record::{CheckResult, CheckStatus, EventKind, RunRecord, Verdict, Window};
use crate::scenario::{Check, CheckKind, Mode, Scenario, Target};

const SLICE: Duration = Duration::from_secs(1);
/// Resolution of `time-to-shift`.
const SHIFT_SLICE: Duration = Duration::from_millis(250);

/// The window `check` is judged on; `None` when the run has none (say, `during` without faults).
pub fn window(check: &Check, record: &RunRecord) -> Option<Window> {
    let run_end = record.length;
    let (start, end) = if let Some(name) = &check.phase {
        let phase = record.phases.iter().find(|p| &p.name == name)?;
        (phase.start, phase.end)
    } else {
        let first = record.faults.iter().map(|f| f.start).min();
        let last = record.faults.iter().map(|f| f.end).max();
        match check.mode {
            Mode::Continuous => (Duration::ZERO, run_end),
            Mode::Before => (Duration::ZERO, first.unwrap_or(run_end)),
            Mode::During => (first?, last?.max(first? + SLICE).min(run_end)),
            Mode::After => (last?, run_end),
        }
    };
    let start = start + check.after;
    (start < end).then(|| Window {
        name: check
            .phase
            .clone()
            .unwrap_or_else(|| check.mode.as_str().to_owned()),
        start,
        end,
    })
}

/// The nodes a check's target means; `faulted`: every node a fault overlapping the window
/// aimed at or, when none overlaps it (a check on the phase after a fault), the targets of
/// the last fault that ended before it.
fn targets(target: &Target, record: &RunRecord, w: &Window) -> Vec<String> {
    match target {
        Target::Node(n) => vec![n.clone()],
        Target::All => record.nodes.clone(),
        _ => {
            let overlapping: Vec<_> = record
                .faults
                .iter()
                .filter(|f| f.start < w.end && f.end.max(f.start + SLICE) > w.start)
                .collect();
            let chosen = if overlapping.is_empty() {
                let last_end = record
                    .faults
                    .iter()
                    .filter(|f| f.end <= w.start)
                    .map(|f| f.end)
                    .max();
                record
                    .faults
                    .iter()
                    .filter(|f| Some(f.end) == last_end)
                    .collect()
            } else {
                overlapping
            };
            let mut out: Vec<String> = chosen
                .iter()
                .flat_map(|f| f.targets.iter().cloned())
                .collect();
            out.sort();
            out.dedup();
            out
        }
    }
}

/// Judges one check.
pub fn evaluate(
    check: &Check,
    record: &RunRecord,
    consensus: Option<&ConsensusEvidence>,
) -> CheckResult {
    let mut result = CheckResult {
        name: match &check.phase {
            Some(p) => format!("{} ({}, phase {p})", check.kind.name(), check.mode.as_str()),
            None => format!("{} ({})", check.kind.name(), check.mode.as_str()),
        },
        kind: check.kind.name().to_owned(),
        mode: check.mode.as_str().to_owned(),
        status: CheckStatus::NotEvaluated,
        measured: None,
        unit: String::new(),
        threshold: String::new(),
        pass_percentage: 0.0,
        detail: String::new(),
    };
    if let Some(evaluated) = consensus::evaluate(check, record, consensus, &mut result) {
        result.pass_percentage = if evaluated { 100.0 } else { 0.0 };
        return result;
    }
    let Some(w) = window(check, record) else {
        // Nothing to judge is a failure: a promise that was never tested did not hold.
        result.status = CheckStatus::Fail;
        result.detail = format!("no `{}` window in this run", check.mode.as_str());
        return result;
    };
    let slices = cut(&w, SLICE);
    match &check.kind {
        CheckKind::SuccessRate { min, from } => {
            let rate = |a, b| share_where(record, from, a, b, |s| s.outcome.is_ok());
            result.unit = "ratio".into();
            result.threshold = match from.is_empty() {
                true => format!(">= {min}"),
                false => format!(">= {min} (through {})", from.join(", ")),
            };
            judge_rate(
                check,
                &mut result,
                &slices,
                rate(w.start, w.end),
                rate,
                |v| v >= *min,
            );
        }
        CheckKind::Latency { quantile: q, max } => {
            let lat =
                |from, to| latency_quantile(record, from, to, *q).map(|d| d.as_secs_f64() * 1e3);
            let max_ms = max.as_secs_f64() * 1e3;
            result.unit = "ms".into();
            result.threshold = format!("p{} <= {max_ms} ms", q * 100.0);
            judge_rate(check, &mut result, &slices, lat(w.start, w.end), lat, |v| {
                v <= max_ms
            });
        }
        CheckKind::TrafficShare { target, min, max } => {
            let nodes = targets(target, record, &w);
            let share = |from, to| share_of(record, &nodes, from, to);
            let ok = |v: f64| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
            result.unit = "share".into();
            result.threshold = match (min, max) {
                (Some(a), Some(b)) => format!("{a} ..= {b} for {}", nodes.join(", ")),
                (Some(a), None) => format!(">= {a} for {}", nodes.join(", ")),
                (_, Some(b)) => format!("<= {b} for {}", nodes.join(", ")),
                _ => String::new(),
            };
            judge_rate(
                check,
                &mut result,
                &slices,
                share(w.start, w.end),
                share,
                ok,
            );
        }
        CheckKind::TimeToShift { target, below, max } => {
            let nodes = targets(target, record, &w);
            result.threshold = format!(
                "<= {} ms to fall to <= {below} share ({})",
                max.as_millis(),
                nodes.join(", ")
            );
            let any_hits = share_of(record, &nodes, w.start, w.end).is_some();
            let shifted = cut(&w, SHIFT_SLICE)
                .iter()
                .rposition(|(from, to)| {
                    share_of(record, &nodes, *from, *to).is_some_and(|s| s > *below)
                })
                .map_or(Some(w.start), |last_bad| {
                    cut(&w, SHIFT_SLICE).get(last_bad + 1).map(|s| s.0)
                });
            judge_time(
                &mut result,
                &w,
                shifted.filter(|_| any_hits && !nodes.is_empty()),
                *max,
                "the share never fell and stayed under the bound",
            );
        }
        CheckKind::TimeToEject { target, max } => {
            let nodes = targets(target, record, &w);
            result.threshold = format!("<= {} ms ({})", max.as_millis(), nodes.join(", "));
            let first = record
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Ejection && e.at >= w.start && e.at < w.end)
                .find(|e| e.subject.as_ref().is_some_and(|s| nodes.contains(s)))
                .map(|e| e.at);
            judge_time(&mut result, &w, first, *max, "no agent ejected it");
        }
        CheckKind::TimeToDetect { target, max } => {
            let nodes = targets(target, record, &w);
            result.threshold = format!("<= {} ms ({})", max.as_millis(), nodes.join(", "));
            judge_time(
                &mut result,
                &w,
                detected(record, &nodes, &w),
                *max,
                "not every running agent saw it dead",
            );
        }
        CheckKind::PolicyDenied { min, from } => {
            let denied = |a, b| denied_share(record, from, a, b);
            result.unit = "share".into();
            result.threshold = format!(">= {min} refused (through {})", from.join(", "));
            judge_rate(
                check,
                &mut result,
                &slices,
                denied(w.start, w.end),
                denied,
                |v| v >= *min,
            );
            if let Some(first) = record
                .samples
                .iter()
                .filter(|s| s.outcome == crate::record::Outcome::Denied)
                .filter(|s| {
                    s.from
                        .as_deref()
                        .is_some_and(|f| from.iter().any(|n| n == f))
                })
                .map(|s| s.at)
                .min()
            {
                let note = format!("first refusal due at {:.1} s", first.as_secs_f64());
                result.detail = match result.detail.is_empty() {
                    true => note,
                    false => format!("{}; {note}", result.detail),
                };
            }
        }
        CheckKind::RetryAmplification { max } => {
            let amp = |from, to| amplification(record, from, to);
            result.unit = "attempts/request".into();
            result.threshold = format!("<= {max}");
            judge_rate(check, &mut result, &slices, amp(w.start, w.end), amp, |v| {
                v <= *max
            });
        }
        CheckKind::AgentRss { max_mib } => {
            let peak = |from: Duration, to: Duration| {
                record
                    .observations
                    .iter()
                    .filter(|o| o.at >= from && o.at < to)
                    .filter_map(|o| o.rss_kib)
                    .max()
                    .map(|k| k as f64 / 1024.0)
            };
            result.unit = "MiB".into();
            result.threshold = format!("<= {max_mib} MiB");
            judge_rate(
                check,
                &mut result,
                &slices,
                peak(w.start, w.end),
                peak,
                |v| v <= *max_mib,
            );
        }
        CheckKind::FailedHandshakes { max } => {
            let count = |from, to| Some(handshake_failures(record, from, to));
            result.unit = "handshakes".into();
            result.threshold = format!("<= {max} (agents no fault aimed at)");
            judge_rate(
                check,
                &mut result,
                &slices,
                count(w.start, w.end),
                count,
                |v| v <= *max,
            );
        }
        _ => {}
    }
    result
}

/// Judges a value measured over the window and per slice.
fn judge_rate(
    check: &Check,
    result: &mut CheckResult,
    slices: &[(Duration, Duration)],
    overall: Option<f64>,
    per: impl Fn(Duration, Duration) -> Option<f64>,
    ok: impl Fn(f64) -> bool,
) {
    let judged: Vec<bool> = slices
        .iter()
        .filter_map(|(a, b)| per(*a, *b))
        .map(&ok)
        .collect();
    let passed = judged.iter().filter(|p| **p).count();
    result.pass_percentage = if judged.is_empty() {
        0.0
    } else {
        100.0 * passed as f64 / judged.len() as f64
    };
    result.measured = overall;
    let Some(value) = overall else {
        result.status = CheckStatus::Fail;
        result.detail = "nothing measured in the window".into();
        return;
    };
    let pass = if check.mode == Mode::Continuous {
        !judged.is_empty() && result.pass_percentage >= check.pass_percent
    } else {
        ok(value)
    };
    result.status = if pass {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    if check.mode == Mode::Continuous {
        result.detail = format!(
            "{passed} of {} 1 s slices met it (needs {}%)",
            judged.len(),
            check.pass_percent
        );
    }
}

fn judge_time(
    result: &mut CheckResult,
    w: &Window,
    when: Option<Duration>,
    max: Duration,
    never: &str,
) {
    result.unit = "ms".into();
    match when {
        Some(t) => {
            let took = t.saturating_sub(w.start);
            result.measured = Some(took.as_secs_f64() * 1e3);
            let pass = took <= max;
            result.status = if pass {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            };
            result.pass_percentage = if pass { 100.0 } else { 0.0 };
        }
        None => {
            result.status = CheckStatus::Fail;
            result.detail = never.to_owned();
        }
    }
}

/// `[from, to)` cut into slices of `width` (the last one may be shorter).
fn cut(w: &Window, width: Duration) -> Vec<(Duration, Duration)> {
    let mut out = Vec::new();
    let mut t = w.start;
    while t < w.end {
        out.push((t, (t + width).min(w.end)));
        t += width;
    }
    out
}

/// The harness's own promise, judged on every run: every fault was applied and healed, and no
/// agent exited unasked (except one restarted with an expired or not-yet-valid certificate,
/// which must refuse to start). A broken harness must not pass a scenario.
pub fn harness_integrity(record: &RunRecord, fault_errors: &[String]) -> CheckResult {
    let excused = |e: &crate::record::Event| {
        record.faults.iter().any(|f| {
            f.kind.starts_with("cert-")
                && e.subject.as_ref().is_some_and(|s| f.targets.contains(s))
                && e.at >= f.start
                && e.at <= f.end + SLICE
        })
    };
    let mut problems: Vec<String> = fault_errors.to_vec();
    problems.extend(
        record
            .events
            .iter()
            .filter(|e| e.kind == EventKind::AgentExited && !excused(e))
            .map(|e| format!("{:.1} s: {}", e.at.as_secs_f64(), e.detail)),
    );
    CheckResult {
        name: "harness (faults applied and healed, no agent exited unasked)".into(),
        kind: "harness".into(),
        mode: "continuous".into(),
        status: if problems.is_empty() {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        measured: Some(problems.len() as f64),
        unit: "problems".into(),
        threshold: "0".into(),
        pass_percentage: if problems.is_empty() { 100.0 } else { 0.0 },
        detail: problems.join("; "),
    }
}

/// The verdict: passed when no check failed.
pub fn verdict(
    scenario: &Scenario,
    record: &RunRecord,
    checks: Vec<CheckResult>,
    aborted: bool,
) -> Verdict {
    Verdict {
        scenario: scenario.name.clone(),
        seed: record.seed,
        passed: !aborted && checks.iter().all(|c| c.status != CheckStatus::Fail),
        aborted,
        replay: record.replay.clone(),
        checks,
    }
}

#[cfg(test)]
mod tests;
