use super::*;
use crate::decide::testing::{endpoint, proposer, service, start, Log, S};
use crate::decide::RESEND_AFTER;

const TICK: Duration = Duration::from_secs(5);

fn policy() -> CanaryPolicy {
    CanaryPolicy {
        baseline: "v1".into(),
        canary: "v2".into(),
        step_percent: 25,
        interval_ms: 30_000,
        max_error_rate_increase: 0.01,
        max_latency_ratio: 1.5,
    }
}

/// Two baseline endpoints and one canary endpoint, traffic split by the committed share.
fn endpoints(committed: &ServiceDecisions) -> Vec<ServiceEndpoint> {
    let share = committed.canary.as_ref().map_or(0, |c| c.share_percent);
    let mut out = vec![endpoint("node-a"), endpoint("node-b"), endpoint("node-c")];
    out[2].version = "v2".into();
    out[2].requests_per_sec = 3.0 * f32::from(share);
    for e in &mut out[..2] {
        e.requests_per_sec = 1.5 * f32::from(100 - share);
    }
    out
}

/// Ticks the driver every 5 s, committing every proposal at once.
fn run(
    driver: &mut CanaryDriver,
    log: &mut Log,
    ticks: usize,
    mut load: impl FnMut(usize, &ServiceDecisions) -> Vec<ServiceEndpoint>,
) -> Vec<(usize, Decision)> {
    let t0 = start();
    let mut out = Vec::new();
    let policy = policy();
    for tick in 0..ticks {
        let committed = log.service();
        let e = load(tick, &committed);
        let now = t0 + TICK * tick as u32;
        if let Some(d) = driver.decide(&service(), Some(&policy), &committed, &e, &proposer(), now)
        {
            log.commit(&d);
            out.push((tick, d));
        }
    }
    out
}

fn steps(decisions: &[(usize, Decision)]) -> Vec<(u8, CanaryPhase)> {
    decisions
        .iter()
        .filter_map(|(_, d)| match d.kind {
            DecisionKind::CanaryStep {
                share_percent,
                phase,
                ..
            } => Some((share_percent, phase)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_good_canary_is_promoted_in_the_expected_steps_with_intervals_respected() {
    let mut log = Log::default();
    let decisions = run(&mut CanaryDriver::new(), &mut log, 100, |_, c| endpoints(c));
    assert!(matches!(
        decisions[0],
        (
            0,
            Decision {
                kind: DecisionKind::CanaryStart { .. },
                ..
            }
        )
    ));
    assert_eq!(
        decisions[0].1.reason,
        "canary v2 of payments starts against baseline v1 at 0%, +25% every 30s"
    );
    use CanaryPhase::{Progressing, Promoted};
    assert_eq!(
        steps(&decisions),
        [
            (25, Progressing),
            (50, Progressing),
            (75, Progressing),
            (100, Promoted)
        ]
    );
    // A step is first seen the tick after it commits; the next waits 30 s (6 ticks) from there.
    let ticks: Vec<usize> = decisions.iter().map(|(t, _)| *t).collect();
    assert_eq!(ticks, [0, 7, 14, 21, 28]);
    assert_eq!(
        decisions[2].1.reason,
        "canary v2 error rate 0.0%, p99 2.0 ms within bounds of baseline v1 (0.0%, 2.0 ms): \
         share 25% -> 50%"
    );
    assert!(decisions[4]
        .1
        .reason
        .ends_with("share 75% -> 100%, promoted"));
    let evidence = &decisions[2].1.evidence;
    assert!(evidence.iter().all(|e| e.subject == "payments/v2"));
    assert!(evidence.iter().any(|e| e.signal == "error_rate"));
    let state = log.service().canary.unwrap();
    assert_eq!(
        (state.share_percent, state.phase, state.steps),
        (100, Promoted, 4)
    );
}

#[test]
fn a_canary_with_more_errors_is_rolled_back_after_three_checks() {
    let mut log = Log::default();
    let decisions = run(&mut CanaryDriver::new(), &mut log, 100, |tick, c| {
        let mut e = endpoints(c);
        if tick >= 10 {
            e[2].errors_per_sec = e[2].requests_per_sec * 0.05;
        }
        e
    });
    use CanaryPhase::{Progressing, RolledBack};
    assert_eq!(steps(&decisions), [(25, Progressing), (0, RolledBack)]);
    // At 25 % since tick 7; errors from tick 10: three breached checks, no wait for the
    // interval.
    assert_eq!(decisions.last().unwrap().0, 12);
    assert_eq!(
        decisions.last().unwrap().1.reason,
        "canary v2 error rate 5.0% is more than 1.0 points above baseline v1 0.0%: \
         rolled back from 25% to 0%"
    );
    assert_eq!(log.service().canary.unwrap().share_percent, 0);
}

#[test]
fn a_slow_canary_is_rolled_back() {
    let decisions = run(
        &mut CanaryDriver::new(),
        &mut Log::default(),
        100,
        |tick, c| {
            let mut e = endpoints(c);
            if tick >= 16 {
                e[2].p99_us = 4_000;
            }
            e
        },
    );
    use CanaryPhase::{Progressing, RolledBack};
    assert_eq!(
        steps(&decisions),
        [(25, Progressing), (50, Progressing), (0, RolledBack)]
    );
    assert_eq!(
        decisions.last().unwrap().1.reason,
        "canary v2 p99 4.0 ms is 2.0x baseline v1 2.0 ms (max 1.5x): rolled back from 50% to 0%"
    );
}

#[test]
fn no_step_before_the_interval() {
    let mut log = Log::default();
    let mut driver = CanaryDriver::new();
    let t0 = start();
    let p = policy();
    let decide = |driver: &mut CanaryDriver, log: &Log, now: Instant| {
        let committed = log.service();
        driver.decide(
            &service(),
            Some(&p),
            &committed,
            &endpoints(&committed),
            &proposer(),
            now,
        )
    };
    let started = decide(&mut driver, &log, t0).unwrap();
    log.commit(&started);
    assert_eq!(
        decide(&mut driver, &log, t0 + S),
        None,
        "first sight of the start"
    );
    assert_eq!(decide(&mut driver, &log, t0 + 30 * S), None);
    let step = decide(&mut driver, &log, t0 + 31 * S).unwrap();
    assert!(matches!(
        step.kind,
        DecisionKind::CanaryStep {
            share_percent: 25,
            ..
        }
    ));
}

#[test]
fn no_step_without_evidence() {
    // No ready canary endpoint: the share stays at 0.
    let decisions = run(&mut CanaryDriver::new(), &mut Log::default(), 50, |_, c| {
        let mut e = endpoints(c);
        e[2].ready = false;
        e[2].routable = false;
        e
    });
    assert_eq!(decisions.len(), 1, "the start only: {decisions:?}");
    // At 25 % the canary gets almost no requests (callers route around it): no further step,
    // and after STARVED_INTERVALS intervals without evidence, a rollback.
    let decisions = run(&mut CanaryDriver::new(), &mut Log::default(), 50, |_, c| {
        let mut e = endpoints(c);
        e[2].requests_per_sec = 0.5;
        e[2].errors_per_sec = 0.5;
        e
    });
    assert_eq!(
        steps(&decisions),
        [(25, CanaryPhase::Progressing), (0, CanaryPhase::RolledBack)]
    );
    let stepped = decisions[1].0;
    let rolled = decisions[2].0;
    let waited = TICK * (rolled - stepped) as u32;
    assert!(
        waited >= Duration::from_millis(policy().interval_ms) * STARVED_INTERVALS,
        "rolled back after {waited:?}"
    );
    assert!(
        decisions[2].1.reason.contains("route around"),
        "{}",
        decisions[2].1.reason
    );
}

#[test]
fn a_proposal_is_not_repeated_before_it_commits() {
    let mut driver = CanaryDriver::new();
    let committed = ServiceDecisions::default();
    let e = endpoints(&committed);
    let t0 = start();
    let p = policy();
    let mut proposed = Vec::new();
    for tick in 0..6u32 {
        let now = t0 + TICK * tick;
        if driver
            .decide(&service(), Some(&p), &committed, &e, &proposer(), now)
            .is_some()
        {
            proposed.push(TICK * tick);
        }
    }
    assert_eq!(proposed, [Duration::ZERO, RESEND_AFTER, RESEND_AFTER * 2]);
}

#[test]
fn a_finished_release_stays_finished_and_a_new_pair_starts_over() {
    let mut log = Log::default();
    run(&mut CanaryDriver::new(), &mut log, 40, |_, c| endpoints(c));
    let committed = log.service();
    assert_eq!(
        committed.canary.as_ref().unwrap().phase,
        CanaryPhase::Promoted
    );
    let mut driver = CanaryDriver::new();
    let e = endpoints(&committed);
    let now = start();
    for _ in 0..3 {
        let same = driver.decide(
            &service(),
            Some(&policy()),
            &committed,
            &e,
            &proposer(),
            now,
        );
        assert_eq!(same, None);
    }
    let next = CanaryPolicy {
        baseline: "v2".into(),
        canary: "v3".into(),
        ..policy()
    };
    let started = driver.decide(&service(), Some(&next), &committed, &e, &proposer(), now);
    assert!(matches!(
        started,
        Some(Decision { kind: DecisionKind::CanaryStart { policy, .. }, .. }) if policy == next
    ));
    assert_eq!(
        CanaryDriver::new().decide(&service(), None, &committed, &e, &proposer(), now),
        None,
        "nothing configured, nothing to do"
    );
}

#[test]
fn version_load_sums_routable_endpoints_and_weights_p99_by_requests() {
    let mut e = vec![endpoint("node-a"), endpoint("node-b"), endpoint("node-c")];
    e[0].p99_us = 1_000;
    (e[1].p99_us, e[1].requests_per_sec, e[1].errors_per_sec) = (4_000, 300.0, 4.0);
    e[2].routable = false;
    let load = VersionLoad::of(&e, "v1");
    assert_eq!(load.ready, 3);
    assert_eq!(load.requests_per_sec, 400.0);
    assert_eq!(load.p99_us, 3_250.0);
    assert_eq!(load.error_rate(), 0.01);
}

#[test]
fn sub_millisecond_jitter_is_no_latency_regression() {
    let decisions = run(
        &mut CanaryDriver::new(),
        &mut Log::default(),
        100,
        |_, c| {
            let mut e = endpoints(c);
            for b in &mut e[..2] {
                b.p99_us = 300;
            }
            e[2].p99_us = 700;
            e
        },
    );
    let last = steps(&decisions).last().copied();
    assert_eq!(last, Some((100, CanaryPhase::Promoted)), "{decisions:?}");
}

#[test]
fn one_unlucky_check_is_no_rollback() {
    let decisions = run(
        &mut CanaryDriver::new(),
        &mut Log::default(),
        100,
        |tick, c| {
            let mut e = endpoints(c);
            if tick % 3 == 0 {
                e[2].p99_us = 9_000;
            }
            e
        },
    );
    let last = steps(&decisions).last().copied();
    assert_eq!(last, Some((100, CanaryPhase::Promoted)), "{decisions:?}");
}
