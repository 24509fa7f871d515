use std::time::Duration;

use super::*;
use crate::record::{
    CheckResult, CheckStatus, Event, EventKind, FaultWindow, Hit, Observation, Outcome, RunRecord,
    Sample, Verdict, Window,
};

const REPLAY: &str = "plexus-chaos run scenarios/one-endpoint-fails-hard.toml --seed 7";

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn window(name: &str, start: u64, end: u64) -> Window {
    Window {
        name: name.to_owned(),
        start: ms(start),
        end: ms(end),
    }
}

fn event(at: u64, kind: EventKind, detail: &str) -> Event {
    Event {
        at: ms(at),
        kind,
        subject: None,
        observer: None,
        detail: detail.to_owned(),
    }
}

/// 20 s at 150 requests/s over three nodes; node-3's backend fails from 5 s to 12 s and is
/// ejected at 6.2 s, back at 13 s.
fn record() -> RunRecord {
    let nodes: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    let mut samples = Vec::new();
    for i in 0..3000u64 {
        let at = ms(i * 20 / 3);
        let ejected = at >= ms(6200) && at < ms(13_000);
        let node = if ejected { i % 2 } else { i % 3 };
        let failing = node == 2 && at >= ms(5000) && at < ms(12_000);
        samples.push(Sample {
            at,
            latency: Duration::from_micros(
                800 + (i * 7919) % 1500 + if failing { 40_000 } else { 0 },
            ),
            outcome: if failing {
                Outcome::Status(503)
            } else {
                Outcome::Ok
            },
            served_by: Some(nodes[node as usize].clone()),
            from: None,
        });
    }
    // What the backends received: node-3 keeps getting a few retries while failing.
    let hits = (samples.iter())
        .filter_map(|s| {
            Some(Hit {
                at: s.at,
                node: s.served_by.clone()?,
            })
        })
        .collect();
    let observations = (0..20u64)
        .flat_map(|s| {
            nodes.iter().map(move |n| Observation {
                at: ms(s * 1000),
                node: n.clone(),
                running: true,
                rss_kib: Some(20_000 + s * 100),
            })
        })
        .collect();
    RunRecord {
        scenario: "one-endpoint-fails-hard".to_owned(),
        purpose: "One backend answers 503; the mesh must route around it.".to_owned(),
        seed: 7,
        replay: REPLAY.to_owned(),
        nodes: nodes.clone(),
        services: vec!["echo".to_owned()],
        phases: vec![
            window("steady", 0, 5000),
            window("fault", 5000, 12_000),
            window("healed", 12_000, 20_000),
        ],
        faults: vec![FaultWindow {
            label: "backend-errors node-3 (echo)".to_owned(),
            kind: "backend-errors".to_owned(),
            targets: vec!["node-3".to_owned()],
            start: ms(5000),
            end: ms(12_000),
        }],
        events: vec![
            event(0, EventKind::PhaseStart, "steady"),
            event(5000, EventKind::FaultApplied, "backend-errors node-3"),
            event(6200, EventKind::Ejection, "node-1 ejected node-3 (echo)"),
            event(12_000, EventKind::FaultHealed, "backend-errors node-3"),
            event(
                13_000,
                EventKind::Return,
                "node-3 back in node-1's route (echo)",
            ),
        ],
        samples,
        observations,
        counters: Vec::new(),
        hits,
        length: ms(20_000),
    }
}

fn check(name: &str, status: CheckStatus, measured: Option<f64>) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        kind: name.split(' ').next().unwrap_or(name).to_owned(),
        mode: "continuous".to_owned(),
        status,
        measured,
        unit: String::new(),
        threshold: ">= 0.999".to_owned(),
        pass_percentage: 85.0,
        detail: "3 of 20 slices below".to_owned(),
    }
}

fn verdict(passed: bool) -> Verdict {
    let status = if passed {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    Verdict {
        scenario: "one-endpoint-fails-hard".to_owned(),
        seed: 7,
        passed,
        aborted: false,
        replay: REPLAY.to_owned(),
        checks: vec![
            check("success-rate (continuous)", status, Some(0.9725)),
            check("consensus-log (after)", CheckStatus::NotEvaluated, None),
        ],
    }
}

fn empty_record() -> RunRecord {
    RunRecord {
        scenario: "empty".to_owned(),
        purpose: String::new(),
        seed: 1,
        replay: "plexus-chaos run empty.toml --seed 1".to_owned(),
        nodes: Vec::new(),
        services: Vec::new(),
        phases: Vec::new(),
        faults: Vec::new(),
        events: Vec::new(),
        samples: Vec::new(),
        observations: Vec::new(),
        counters: Vec::new(),
        hits: Vec::new(),
        length: Duration::ZERO,
    }
}

/// A crude well-formedness check: every tag closes in order, every `&` starts an entity.
fn assert_xmlish(svg: &str) {
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        let name = tag
            .trim_start_matches('/')
            .split([' ', '/'])
            .next()
            .unwrap_or("");
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(closing.trim()), "mismatched </{closing}>");
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    for (i, _) in svg.match_indices('&') {
        let entity = &svg[i..svg.len().min(i + 7)];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "raw & at {i}"
        );
    }
}

#[test]
fn svg_shows_panels_nodes_fault_and_phases() {
    let svg = timeline_svg(&record()).expect("draws");
    assert_xmlish(&svg);
    for text in [
        "node-1",
        "node-2",
        "node-3",
        "backend-errors node-3 (echo)",
        "success rate per 0.5 s slice",
        "p99 latency",
        "share of requests the backends received",
        "steady",
        "healed",
        "one-endpoint-fails-hard",
    ] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    assert!(svg.contains("width=\"1200\" height=\"900\""));
}

#[test]
fn svg_of_empty_records_says_no_traffic() {
    let svg = timeline_svg(&empty_record()).expect("draws");
    assert_xmlish(&svg);
    assert!(svg.contains("no traffic"));
    let mut quiet = empty_record();
    quiet.length = Duration::from_secs(10);
    quiet.phases = vec![window("steady", 0, 10_000)];
    let svg = timeline_svg(&quiet).expect("draws");
    assert_xmlish(&svg);
    assert!(svg.contains("no traffic") && svg.contains("steady"));
}

#[test]
fn svg_of_a_long_soak_uses_wider_slices() {
    let mut r = record();
    r.length = Duration::from_secs(3 * 3600);
    let svg = timeline_svg(&r).expect("draws");
    assert_xmlish(&svg);
    assert!(
        svg.contains("success rate per 6 s slice"),
        "10800 s / 2000 slices"
    );
}

#[test]
fn svg_escapes_labels() {
    let mut r = record();
    r.faults[0].label = "loss 30% node-1 -> node-2 & <back>".to_owned();
    let svg = timeline_svg(&r).expect("draws");
    assert_xmlish(&svg);
    assert!(svg.contains("node-1 -&gt; node-2 &amp; &lt;back&gt;"));
}

#[test]
fn markdown_leads_with_the_verdict_and_replay_on_failure() {
    let md = markdown(&record(), &verdict(false));
    let head: Vec<&str> = md.lines().take(8).collect();
    assert_eq!(head[0], "# Chaos run: one-endpoint-fails-hard");
    assert!(
        head.iter()
            .any(|l| l.starts_with("**Verdict: FAIL**: 1 of 2 checks failed, 1 not evaluated")),
        "{head:#?}"
    );
    assert!(md.contains("Seed: `7`"));
    assert!(md.contains(&format!("```sh\n{REPLAY}\n```")));
    let row = "| **FAIL** | success-rate (continuous) | 0.9725 | >= 0.999 | 85.0 | 3 of 20 slices below |";
    assert!(md.contains(row), "{md}");
    assert!(md.contains("| not-evaluated | consensus-log (after) | — |"));
}

#[test]
fn markdown_on_pass_keeps_the_seed_but_no_replay_block() {
    let md = markdown(&record(), &verdict(true));
    assert!(md.contains("**Verdict: PASS**"));
    assert!(md.contains("Seed `7`"));
    assert!(!md.contains("```sh"));
}

#[test]
fn markdown_holds_the_evidence() {
    let md = markdown(&record(), &verdict(false));
    for text in [
        "_One backend answers 503; the mesh must route around it._",
        "| fault | 5.00 s | 12.00 s | 7.00 s |",
        "| backend-errors node-3 (echo) | backend-errors | node-3 | 5.00 s → 12.00 s |",
        "| 6.20 s | fault | +1.20 s (backend-errors node-3 (echo)) | ejection | node-1 ejected node-3 (echo) |",
        "| 13.00 s | healed |",
        "| **all** | 3000 |",
        "Failed requests: status 503 × ",
        "| phase | answered | node-1 | node-2 | node-3 |",
        "| steady | 750 | 33.3% | 33.3% | 33.3% |",
        "| phase | received | node-1 | node-2 | node-3 |",
        "| node-1 | 21.4 MiB | 21.4 MiB | 20 | 0 |",
        "[timeline.svg](timeline.svg)",
    ] {
        assert!(md.contains(text), "missing {text:?} in\n{md}");
    }
    assert!(
        !md.contains("fault applied"),
        "harness actions are not reactions"
    );
}

#[test]
fn markdown_never_rounds_a_failure_up_and_escapes_cells() {
    let mut r = record();
    r.samples.truncate(1);
    r.samples.extend((0..100_000u64).map(|i| Sample {
        at: ms(i / 10),
        latency: ms(1),
        outcome: Outcome::Ok,
        served_by: None,
        from: None,
    }));
    r.samples[0].outcome = Outcome::Failed("timeout");
    let mut v = verdict(false);
    v.checks[0].detail = "a | b\nc".to_owned();
    let md = markdown(&r, &v);
    assert!(md.contains("success rate 99.99%"), "{md}");
    assert!(md.contains("| a \\| b c |"));
    assert!(md.contains("Failed requests: timeout × 1."));
}

#[test]
fn verdict_json_round_trips_with_its_fields() {
    let value = verdict_json(&record(), &verdict(false));
    let text = serde_json::to_string_pretty(&value).expect("serializes");
    let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, value);
    assert_eq!(back["scenario"], "one-endpoint-fails-hard");
    assert_eq!(back["seed"], 7);
    assert_eq!(back["passed"], false);
    assert_eq!(back["aborted"], false);
    assert_eq!(back["replay"], REPLAY);
    assert_eq!(back["length_ms"], 20_000);
    assert_eq!(back["requests"], 3000);
    let rate = back["success_rate"].as_f64().expect("a rate");
    assert!(rate > 0.9 && rate < 1.0, "{rate}");
    assert_eq!(back["counts"]["fail"], 1);
    assert_eq!(back["counts"]["not_evaluated"], 1);
    let c = &back["checks"][0];
    for key in [
        "name",
        "kind",
        "mode",
        "status",
        "measured",
        "unit",
        "threshold",
        "pass_percentage",
        "detail",
    ] {
        assert!(c.get(key).is_some(), "check lacks {key}");
    }
    assert_eq!(c["status"], "fail");
    assert_eq!(c["measured"], 0.9725);
    assert_eq!(c["pass_percentage"], 85.0);
    assert_eq!(back["checks"][1]["status"], "not-evaluated");
    assert!(back["checks"][1]["measured"].is_null());
}

#[test]
fn write_creates_the_three_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("reports/run-7");
    let paths = write(&out, &record(), &verdict(false)).expect("writes");
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["verdict.json", "report.md", "timeline.svg"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths[0]).unwrap()).expect("json");
    assert_eq!(json["seed"], 7);
    assert!(std::fs::read_to_string(&paths[1])
        .unwrap()
        .contains("**Verdict: FAIL**"));
    assert!(std::fs::read_to_string(&paths[2])
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn empty_record_does_not_panic() {
    let r = empty_record();
    let v = Verdict {
        scenario: "empty".to_owned(),
        seed: 1,
        passed: true,
        aborted: false,
        replay: r.replay.clone(),
        checks: Vec::new(),
    };
    let md = markdown(&r, &v);
    assert!(md.contains("No request was sent.") && md.contains("No checks were declared."));
    let json = verdict_json(&r, &v);
    assert!(json["success_rate"].is_null());
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(write(dir.path(), &r, &v).expect("writes").len(), 3);
}
