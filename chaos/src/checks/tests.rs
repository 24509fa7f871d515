use std::time::Duration;

use super::*;
use crate::record::{Event, FaultWindow, Hit, Outcome, Sample};

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// 30 s at 100 req/s; node-3 fails 10..20 s and gets no traffic from 11.5 s on; the others
/// share the rest. node-1 sees node-3 dead at 12.5 s, node-2 at 13 s.
pub(super) fn record() -> RunRecord {
    let mut samples = Vec::new();
    let mut hits = Vec::new();
    for i in 0..3000u64 {
        let at = ms(i * 10);
        let failing = (10_000..11_500).contains(&(i * 10));
        let node = match i % 3 {
            0 if !(11_500..20_000).contains(&(i * 10)) => "node-3",
            0 | 1 => "node-1",
            _ => "node-2",
        };
        let bad = failing && node == "node-3";
        samples.push(Sample {
            at,
            latency: if bad { ms(40) } else { ms(2) },
            outcome: if bad && i % 2 == 0 {
                Outcome::Status(503)
            } else {
                Outcome::Ok
            },
            served_by: Some(node.into()),
            from: None,
        });
        hits.push(Hit {
            at,
            node: node.into(),
        });
        if bad {
            hits.push(Hit {
                at,
                node: "node-1".into(),
            });
        }
    }
    let event = |at, kind, subject: &str, observer: &str| Event {
        at: ms(at),
        kind,
        subject: Some(subject.into()),
        observer: Some(observer.into()),
        detail: String::new(),
    };
    RunRecord {
        scenario: "t".into(),
        purpose: "test".into(),
        seed: 3,
        replay: "plexus-chaos run t.toml --seed 3".into(),
        nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
        services: vec!["echo".into()],
        phases: vec![
            Window {
                name: "steady".into(),
                start: ms(0),
                end: ms(10_000),
            },
            Window {
                name: "fault".into(),
                start: ms(10_000),
                end: ms(20_000),
            },
            Window {
                name: "healed".into(),
                start: ms(20_000),
                end: ms(30_000),
            },
        ],
        faults: vec![FaultWindow {
            label: "kill -9 node-3".into(),
            kind: "kill".into(),
            targets: vec!["node-3".into()],
            start: ms(10_000),
            end: ms(20_000),
        }],
        events: vec![
            event(11_200, EventKind::Ejection, "node-3", "node-1"),
            event(12_500, EventKind::MemberDown, "node-3", "node-1"),
            event(13_000, EventKind::MemberDown, "node-3", "node-2"),
        ],
        samples,
        observations: Vec::new(),
        counters: Vec::new(),
        hits,
        length: ms(30_000),
    }
}

pub(super) fn check(kind: CheckKind, mode: Mode) -> Check {
    Check {
        kind,
        mode,
        phase: None,
        after: Duration::ZERO,
        abort: false,
        pass_percent: 100.0,
    }
}

#[test]
fn windows_follow_the_mode_and_grace() {
    let r = record();
    let w = |mode, after: u64| {
        let mut c = check(
            CheckKind::SuccessRate {
                min: 0.9,
                from: Vec::new(),
            },
            mode,
        );
        c.after = ms(after);
        window(&c, &r).map(|w| (w.start.as_millis(), w.end.as_millis()))
    };
    assert_eq!(w(Mode::Before, 0), Some((0, 10_000)));
    assert_eq!(w(Mode::During, 3000), Some((13_000, 20_000)));
    assert_eq!(w(Mode::After, 0), Some((20_000, 30_000)));
    assert_eq!(w(Mode::Continuous, 0), Some((0, 30_000)));
}

#[test]
fn a_success_rate_that_dips_fails_continuous_but_passes_over_the_whole_run() {
    let r = record();
    let strict = evaluate(
        &check(
            CheckKind::SuccessRate {
                min: 0.99,
                from: Vec::new(),
            },
            Mode::Continuous,
        ),
        &r,
        None,
    );
    assert_eq!(strict.status, CheckStatus::Fail, "{strict:?}");
    assert!(strict.pass_percentage < 100.0 && strict.pass_percentage > 90.0);
    let lenient = evaluate(
        &check(
            CheckKind::SuccessRate {
                min: 0.99,
                from: Vec::new(),
            },
            Mode::Before,
        ),
        &r,
        None,
    );
    assert_eq!(lenient.status, CheckStatus::Pass);
    assert_eq!(lenient.measured, Some(1.0));
}

#[test]
fn traffic_share_and_time_to_shift_use_backend_hits() {
    let r = record();
    let mut share = check(
        CheckKind::TrafficShare {
            target: Target::Faulted,
            min: None,
            max: Some(0.02),
        },
        Mode::During,
    );
    share.after = ms(2000);
    assert_eq!(evaluate(&share, &r, None).status, CheckStatus::Pass);
    share.after = Duration::ZERO;
    assert_eq!(
        evaluate(&share, &r, None).status,
        CheckStatus::Fail,
        "the first 1.5 s still hit node-3"
    );
    let shift = evaluate(
        &check(
            CheckKind::TimeToShift {
                target: Target::Faulted,
                below: 0.05,
                max: ms(2000),
            },
            Mode::During,
        ),
        &r,
        None,
    );
    assert_eq!(shift.status, CheckStatus::Pass, "{shift:?}");
    assert_eq!(shift.measured, Some(1500.0));
    let too_strict = evaluate(
        &check(
            CheckKind::TimeToShift {
                target: Target::Faulted,
                below: 0.05,
                max: ms(1000),
            },
            Mode::During,
        ),
        &r,
        None,
    );
    assert_eq!(too_strict.status, CheckStatus::Fail);
}

#[test]
fn time_to_eject_and_to_detect_read_the_agents_events() {
    let r = record();
    let eject = evaluate(
        &check(
            CheckKind::TimeToEject {
                target: Target::Faulted,
                max: ms(2000),
            },
            Mode::During,
        ),
        &r,
        None,
    );
    assert_eq!(
        (eject.status, eject.measured),
        (CheckStatus::Pass, Some(1200.0))
    );
    let detect = evaluate(
        &check(
            CheckKind::TimeToDetect {
                target: Target::Faulted,
                max: ms(2000),
            },
            Mode::During,
        ),
        &r,
        None,
    );
    assert_eq!(
        (detect.status, detect.measured),
        (CheckStatus::Fail, Some(3000.0)),
        "{detect:?}"
    );
}

#[test]
fn amplification_counts_backend_attempts_per_request() {
    let r = record();
    let amp = evaluate(
        &check(CheckKind::RetryAmplification { max: 1.1 }, Mode::During),
        &r,
        None,
    );
    assert_eq!(amp.status, CheckStatus::Pass);
    assert!(amp.measured.unwrap() > 1.0);
    let tight = evaluate(
        &check(CheckKind::RetryAmplification { max: 1.01 }, Mode::During),
        &r,
        None,
    );
    assert_eq!(tight.status, CheckStatus::Fail);
}

#[test]
fn failed_handshakes_count_increases_on_agents_no_fault_aimed_at() {
    let mut r = record();
    let reading = |at, node: &str, value| crate::record::CounterReading {
        at: ms(at),
        node: node.into(),
        name: "plexus_handshake_failures_total".into(),
        value,
    };
    r.counters = vec![
        reading(9_000, "node-1", 1.0),
        reading(12_000, "node-1", 3.0),
        // node-1 restarted: its counter starts again from zero.
        reading(14_000, "node-1", 0.0),
        reading(16_000, "node-1", 2.0),
        // node-3 is the faulted node: not counted.
        reading(9_000, "node-3", 0.0),
        reading(12_000, "node-3", 50.0),
    ];
    assert_eq!(handshake_failures(&r, ms(10_000), ms(20_000)), 4.0);
    let c = check(CheckKind::FailedHandshakes { max: 0.0 }, Mode::During);
    assert_eq!(evaluate(&c, &r, None).status, CheckStatus::Fail);
    let c = check(CheckKind::FailedHandshakes { max: 4.0 }, Mode::During);
    assert_eq!(evaluate(&c, &r, None).status, CheckStatus::Pass);
}

#[test]
fn success_rate_and_policy_refusals_per_workload_source() {
    // Two sources in turn; from 10 s on, node-b's requests are refused by the policy.
    let mut r = record();
    for (i, s) in r.samples.iter_mut().enumerate() {
        let source = if i % 2 == 0 { "node-a" } else { "node-b" };
        s.from = Some(source.into());
        s.outcome = if source == "node-b" && s.at >= ms(10_000) {
            Outcome::Denied
        } else {
            Outcome::Ok
        };
    }
    let rate = |from: &[&str], mode| {
        let kind = CheckKind::SuccessRate {
            min: 0.999,
            from: from.iter().map(|s| (*s).to_owned()).collect(),
        };
        evaluate(&check(kind, mode), &r, None)
    };
    assert_eq!(
        rate(&["node-a"], Mode::Continuous).status,
        CheckStatus::Pass
    );
    assert_eq!(rate(&["node-b"], Mode::Before).status, CheckStatus::Pass);
    assert_eq!(
        rate(&["node-b"], Mode::Continuous).status,
        CheckStatus::Fail
    );
    assert_eq!(rate(&[], Mode::Continuous).status, CheckStatus::Fail);
    let denied = |from: &str, min: f64| {
        let kind = CheckKind::PolicyDenied {
            min,
            from: vec![from.to_owned()],
        };
        evaluate(&check(kind, Mode::After), &r, None)
    };
    let result = denied("node-b", 0.999);
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(1.0));
    assert!(
        result.detail.contains("first refusal due at 10.0 s"),
        "{}",
        result.detail
    );
    assert_eq!(denied("node-a", 0.5).measured, Some(0.0));
    assert_eq!(denied("node-a", 0.5).status, CheckStatus::Fail);
    // A source that sent nothing in the window: nothing measured is a failure.
    assert_eq!(denied("node-c", 0.5).status, CheckStatus::Fail);
}
