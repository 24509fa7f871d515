//! What a run records, and what the checks conclude from it. Times are offsets from the start
//! of the run (the first phase), so a record is independent of the wall clock.
//!
//! - every request of the workload ([`Sample`]), scheduled on an open-loop timetable;
//! - the timeline: phases, fault windows and events (faults applied and healed, ejections and
//!   returns seen in the agents' routes, members seen dead or alive, decisions);
//! - periodic observations of each agent (RSS, whether it runs);
//! - the verdict: one [`CheckResult`] per check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One request of the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When it was due (open loop: latency runs from here, so stalls are not omitted).
    #[serde(serialize_with = "micros")]
    pub at: Duration,
    /// From `at` to the complete answer (or to the failure).
    #[serde(serialize_with = "micros")]
    pub latency: Duration,
    pub outcome: Outcome,
    /// The node whose backend answered, when known.
    pub served_by: Option<String>,
    /// The workload source it was sent through (that node's upstream listener).
    #[serde(serialize_with = "shared_str")]
    pub from: Option<Arc<str>>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// A complete 2xx answer (or, for TCP, the echo in full).
    Ok,
    /// A complete answer with another status.
    Status(u16),
    /// 403 with `plexus-error: policy_denied`: the serving agent's access policy refused it.
    Denied,
    /// No answer: `connect`, `timeout`, `reset`, `io`, `short` (an incomplete echo).
    Failed(&'static str),
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// A named stretch of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub name: String,
    #[serde(serialize_with = "millis")]
    pub start: Duration,
    #[serde(serialize_with = "millis")]
    pub end: Duration,
}

impl Window {
    pub fn contains(&self, at: Duration) -> bool {
        at >= self.start && at < self.end
    }

    pub fn length(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// One fault as it was applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultWindow {
    /// e.g. `kill node-3`, `loss 30% node-1 -> node-2`.
    pub label: String,
    /// The fault's kind as written in the scenario (`kill`, `partition`, ...).
    pub kind: String,
    /// The nodes it was aimed at (after resolving the role target with the seed).
    pub targets: Vec<String>,
    #[serde(serialize_with = "millis")]
    pub start: Duration,
    /// When it healed (the end of the run if it never did).
    #[serde(serialize_with = "millis")]
    pub end: Duration,
}

/// Something that happened, as the harness saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    pub kind: EventKind,
    /// The node it is about (the ejected endpoint, the member seen dead, the faulted node).
    pub subject: Option<String>,
    /// The agent that reported it, for the mesh's reactions.
    pub observer: Option<String>,
    /// For people: `node-1 ejected node-3 (echo)`.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PhaseStart,
    FaultApplied,
    FaultHealed,
    /// An agent's route shows an endpoint ejected.
    Ejection,
    /// An ejected endpoint is back in an agent's route.
    Return,
    /// An agent reports a member dead or left.
    MemberDown,
    /// An agent reports a member alive again.
    MemberUp,
    /// A committed decision (weights, quarantine, ...), once agents expose them.
    Decision,
    /// An agent process exited without the harness asking.
    AgentExited,
    /// A check with `abort = true` failed and ended the run early.
    Abort,
}

impl EventKind {
    /// Decisions and reactions of the mesh (marked on the timeline), as opposed to the
    /// harness's own actions.
    pub fn is_reaction(&self) -> bool {
        matches!(
            self,
            EventKind::Ejection
                | EventKind::Return
                | EventKind::MemberDown
                | EventKind::MemberUp
                | EventKind::Decision
        )
    }
}

/// One look at one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    pub node: String,
    /// Whether its process was running (not killed, not stopped).
    pub running: bool,
    /// Resident set size, when the process exists.
    pub rss_kib: Option<u64>,
}

/// A counter read from one agent's `/metrics` (summed over its label sets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterReading {
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    pub node: String,
    pub name: String,
    pub value: f64,
}

/// A request that reached a backend (health checks excluded): where the mesh really sent
/// traffic, retries and hedges included.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    pub node: String,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub scenario: String,
    pub purpose: String,
    pub seed: u64,
    /// The command that replays this run.
    pub replay: String,
    /// Every node of the topology, in order.
    pub nodes: Vec<String>,
    /// Which node each endpoint label (a node name) belongs to is the label itself; the
    /// services the workload called.
    pub services: Vec<String>,
    pub phases: Vec<Window>,
    pub faults: Vec<FaultWindow>,
    pub events: Vec<Event>,
    pub samples: Vec<Sample>,
    pub observations: Vec<Observation>,
    /// Counters from the agents' `/metrics`, about once a second.
    pub counters: Vec<CounterReading>,
    /// Requests as the backends received them.
    pub hits: Vec<Hit>,
    /// Total run length (the end of the last phase that ran).
    #[serde(serialize_with = "millis")]
    pub length: Duration,
}

/// The verdict on one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// e.g. `success-rate (continuous)`.
    pub name: String,
    pub kind: String,
    pub mode: String,
    /// `pass`, `fail`, or `not-evaluated` (the check needs something this run could not
    /// observe, say a consensus log; `detail` says what).
    pub status: CheckStatus,
    /// The measured value, in `unit`.
    pub measured: Option<f64>,
    pub unit: String,
    /// e.g. `>= 0.999`, `<= 2000 ms`.
    pub threshold: String,
    /// The share of the check's time slices (1 s) that met the threshold, in percent.
    pub pass_percentage: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Pass,
    Fail,
    NotEvaluated,
}

/// The whole verdict: pass only if no check failed (checks that could not be evaluated are
/// listed and do not pass silently: they are counted apart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub aborted: bool,
    pub replay: String,
    pub checks: Vec<CheckResult>,
}

/// Per time slice of the run: what the workload saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slice {
    #[serde(serialize_with = "millis")]
    pub start: Duration,
    pub requests: u64,
    pub ok: u64,
    /// p99 latency in microseconds (None without requests).
    pub p99_us: Option<u64>,
    /// Share of the answered requests served by each node (0..=1).
    pub share: BTreeMap<String, f64>,
}

impl Slice {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ok as f64 / self.requests as f64)
    }
}

/// Cuts the run into slices of `width` over `[0, length)`: success rate and p99 of the
/// workload's requests (by scheduled time), and each node's share of the requests its backend
/// received (`hits`: where the mesh really sent traffic, retries included). Without hits, the
/// share is of answered requests by the node that answered.
pub fn slices(samples: &[Sample], hits: &[Hit], length: Duration, width: Duration) -> Vec<Slice> {
    let width_us = width.as_micros().max(1);
    let count = length.as_micros().div_ceil(width_us) as usize;
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); count];
    let mut out: Vec<Slice> = (0..count)
        .map(|i| Slice {
            start: width * i as u32,
            requests: 0,
            ok: 0,
            p99_us: None,
            share: BTreeMap::new(),
        })
        .collect();
    for sample in samples {
        let i = (sample.at.as_micros() / width_us) as usize;
        let Some(slice) = out.get_mut(i) else {
            continue;
        };
        slice.requests += 1;
        if sample.outcome.is_ok() {
            slice.ok += 1;
        }
        latencies[i].push(sample.latency.as_micros() as u64);
        if let (Some(node), true) = (&sample.served_by, hits.is_empty()) {
            *slice.share.entry(node.clone()).or_default() += 1.0;
        }
    }
    for hit in hits {
        if let Some(slice) = out.get_mut((hit.at.as_micros() / width_us) as usize) {
            *slice.share.entry(hit.node.clone()).or_default() += 1.0;
        }
    }
    for (slice, mut lat) in out.iter_mut().zip(latencies) {
        slice.p99_us = quantile(&mut lat, 0.99);
        let total: f64 = slice.share.values().sum();
        if total > 0.0 {
            for v in slice.share.values_mut() {
                *v /= total;
            }
        }
    }
    out
}

/// The `q` quantile (nearest rank) of `values`, sorting them; None when empty.
pub fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize).max(1);
    Some(values[rank - 1])
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn shared_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(text) => s.serialize_some(&**text),
        None => s.serialize_none(),
    }
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, ok: bool, node: &str) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            latency: Duration::from_millis(1),
            outcome: if ok {
                Outcome::Ok
            } else {
                Outcome::Status(503)
            },
            served_by: ok.then(|| node.to_owned()),
            from: None,
        }
    }

    #[test]
    fn slices_count_success_and_share() {
        let samples = vec![
            sample(10, true, "a"),
            sample(20, true, "b"),
            sample(30, false, "b"),
            sample(1500, true, "a"),
        ];
        let s = slices(
            &samples,
            &[],
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].requests, s[0].ok), (3, 2));
        assert_eq!(s[0].share["a"], 0.5);
        assert_eq!(s[1].share["a"], 1.0);
        assert_eq!(s[1].success_rate(), Some(1.0));
        let hits = [Hit {
            at: Duration::from_millis(5),
            node: "c".into(),
        }];
        let s = slices(
            &samples,
            &hits,
            Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert_eq!(s[0].share["c"], 1.0, "backend hits win over answers");
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&mut v, 0.99), Some(99));
        assert_eq!(quantile(&mut v, 0.5), Some(50));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
