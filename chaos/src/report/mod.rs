//! The evidence of a run: `verdict.json` (for CI), `report.md` (for people) and
//! `timeline.svg` (success rate, p99 latency and traffic share over time, with fault windows
//! shaded and the mesh's reactions marked).
//!
//! Everything here is a pure function of a [`RunRecord`] and its [`Verdict`]; only [`write`]
//! touches the file system.

mod markdown;
mod svg;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::record::{quantile, CheckStatus, Outcome, RunRecord, Sample, Verdict};

/// The files [`write`] produces, in the order it writes them.
pub const FILES: [&str; 3] = ["verdict.json", "report.md", "timeline.svg"];

/// Writes verdict.json, report.md and timeline.svg into `dir` (created if missing); returns
/// the paths written.
///
/// The three files are always written: should the timeline fail to draw, timeline.svg holds a
/// short SVG that says why, so the verdict and the report are never lost to a drawing error.
pub fn write(dir: &Path, record: &RunRecord, verdict: &Verdict) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut json = serde_json::to_string_pretty(&VerdictDoc::new(record, verdict))
        .map_err(io::Error::other)?;
    json.push('\n');
    let svg = timeline_svg(record).unwrap_or_else(|e| svg::fallback(record, &e));
    let contents = [json, markdown(record, verdict), svg];
    let mut written = Vec::with_capacity(FILES.len());
    for (name, content) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        fs::write(&path, content)?;
        written.push(path);
    }
    Ok(written)
}

/// The Markdown report as a string (what report.md holds).
pub fn markdown(record: &RunRecord, verdict: &Verdict) -> String {
    markdown::render(record, verdict)
}

/// The timeline as an SVG document string (1200x900): success rate, p99 latency and
/// per-node traffic share per slice, sharing one time axis in seconds.
pub fn timeline_svg(record: &RunRecord) -> Result<String, String> {
    svg::render(record)
}

/// verdict.json's content: the verdict (every check with its status, measured value, unit,
/// threshold, pass percentage and detail) plus the run's facts: scenario, seed, replay
/// command, length in ms, requests and the overall success rate. Non-finite numbers are null.
pub fn verdict_json(record: &RunRecord, verdict: &Verdict) -> Value {
    // Only strings, numbers, booleans and nulls: serializing cannot fail.
    serde_json::to_value(VerdictDoc::new(record, verdict)).unwrap_or_default()
}

/// verdict.json, its fields in the order a person reads them.
#[derive(Serialize)]
struct VerdictDoc<'a> {
    scenario: &'a str,
    seed: u64,
    passed: bool,
    aborted: bool,
    replay: &'a str,
    length_ms: u64,
    requests: u64,
    ok: u64,
    success_rate: Option<f64>,
    latency_ms: LatencyDoc,
    counts: CountsDoc,
    checks: Vec<CheckDoc<'a>>,
}

#[derive(Serialize)]
struct LatencyDoc {
    p50: Option<f64>,
    p99: Option<f64>,
    p99_9: Option<f64>,
}

#[derive(Serialize)]
struct CountsDoc {
    pass: usize,
    fail: usize,
    not_evaluated: usize,
}

#[derive(Serialize)]
struct CheckDoc<'a> {
    name: &'a str,
    kind: &'a str,
    mode: &'a str,
    status: &'static str,
    measured: Option<f64>,
    unit: &'a str,
    threshold: &'a str,
    pass_percentage: Option<f64>,
    detail: &'a str,
}

impl<'a> VerdictDoc<'a> {
    fn new(record: &RunRecord, verdict: &'a Verdict) -> VerdictDoc<'a> {
        let totals = Totals::of(&record.samples);
        let count = |status| verdict.checks.iter().filter(|c| c.status == status).count();
        let checks = (verdict.checks.iter())
            .map(|c| CheckDoc {
                name: &c.name,
                kind: &c.kind,
                mode: &c.mode,
                status: status_str(c.status),
                measured: c.measured.filter(|v| v.is_finite()),
                unit: &c.unit,
                threshold: &c.threshold,
                pass_percentage: Some(c.pass_percentage).filter(|v| v.is_finite()),
                detail: &c.detail,
            })
            .collect();
        VerdictDoc {
            scenario: &verdict.scenario,
            seed: verdict.seed,
            passed: verdict.passed,
            aborted: verdict.aborted,
            replay: &verdict.replay,
            length_ms: millis(record.length),
            requests: totals.requests,
            ok: totals.ok,
            success_rate: totals.success_rate(),
            latency_ms: LatencyDoc {
                p50: totals.p50_us.map(us_to_ms),
                p99: totals.p99_us.map(us_to_ms),
                p99_9: totals.p999_us.map(us_to_ms),
            },
            counts: CountsDoc {
                pass: count(CheckStatus::Pass),
                fail: count(CheckStatus::Fail),
                not_evaluated: count(CheckStatus::NotEvaluated),
            },
            checks,
        }
    }
}

/// `pass`, `fail` or `not-evaluated`, as in verdict.json.
pub(crate) fn status_str(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Pass => "pass",
        CheckStatus::Fail => "fail",
        CheckStatus::NotEvaluated => "not-evaluated",
    }
}

/// What the workload saw over some samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Totals {
    pub requests: u64,
    pub ok: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
}

impl Totals {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Totals {
        let mut totals = Totals::default();
        let mut latencies = Vec::new();
        for s in samples {
            totals.requests += 1;
            totals.ok += u64::from(s.outcome.is_ok());
            latencies.push(u64::try_from(s.latency.as_micros()).unwrap_or(u64::MAX));
        }
        totals.p50_us = quantile(&mut latencies, 0.5);
        totals.p99_us = quantile(&mut latencies, 0.99);
        totals.p999_us = quantile(&mut latencies, 0.999);
        totals
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ok as f64 / self.requests as f64)
    }
}

/// A short name for a failed outcome: `status 503`, `timeout`.
pub(crate) fn outcome_label(outcome: Outcome) -> String {
    match outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Status(code) => format!("status {code}"),
        Outcome::Denied => "policy_denied".to_owned(),
        Outcome::Failed(why) => why.to_owned(),
    }
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The end of everything the record mentions: its length, samples, phases, faults, events.
pub(crate) fn span(record: &RunRecord) -> Duration {
    let samples = record.samples.iter().map(|s| s.at);
    let phases = record.phases.iter().map(|p| p.end);
    let faults = record.faults.iter().map(|f| f.end);
    let events = record.events.iter().map(|e| e.at);
    samples
        .chain(phases)
        .chain(faults)
        .chain(events)
        .fold(record.length, Duration::max)
}
