use super::*;
use crate::decide::testing::{endpoint, proposer, service, start, Log};
use crate::decide::RESEND_AFTER;

const TICK: Duration = Duration::from_secs(5);

/// `n` ready endpoints with `in_flight` of a limit of 100 each.
fn busy(n: usize, in_flight: u32) -> Vec<ServiceEndpoint> {
    (0..n)
        .map(|i| {
            let mut e = endpoint(&format!("node-{i}"));
            e.in_flight = in_flight;
            e
        })
        .collect()
}

/// Ticks the driver every 5 s, committing every hint at once.
fn run(
    settings: ScalingSettings,
    log: &mut Log,
    ticks: usize,
    mut load: impl FnMut(usize) -> Vec<ServiceEndpoint>,
) -> Vec<(usize, u32)> {
    let mut driver = ScalingDriver::new(settings);
    let t0 = start();
    let mut out = Vec::new();
    for tick in 0..ticks {
        let committed = log.service();
        let now = t0 + TICK * tick as u32;
        if let Some(d) = driver.decide(&service(), &load(tick), &committed, &proposer(), now) {
            log.commit(&d);
            let DecisionKind::ScalingHint { desired, .. } = d.kind else {
                panic!("{d:?}");
            };
            out.push((tick, desired));
        }
    }
    out
}

fn hint(current: u32, desired: u32) -> Decision {
    proposer().decision(
        DecisionKind::ScalingHint {
            service: service(),
            current,
            desired,
        },
        "setup".into(),
        vec![],
    )
}

#[test]
fn a_busy_service_scales_up_at_once() {
    let mut driver = ScalingDriver::new(ScalingSettings::default());
    let d = driver
        .decide(
            &service(),
            &busy(3, 90),
            &ServiceDecisions::default(),
            &proposer(),
            start(),
        )
        .unwrap();
    assert_eq!(
        d.kind,
        DecisionKind::ScalingHint {
            service: service(),
            current: 3,
            desired: 5,
        }
    );
    assert_eq!(
        d.reason,
        "payments: 3 ready endpoints at 90% utilization vs target 60%: desired replicas 3 -> 5"
    );
    assert_eq!(d.evidence[0].signal, "utilization");
    assert!((d.evidence[0].value - 0.9).abs() < 1e-9);
    assert_eq!(d.evidence[0].reference, Some(0.6));
}

#[test]
fn within_the_tolerance_nothing_changes() {
    let settings = ScalingSettings::default();
    // 65 % against 60 % is 8 % off: within 10 %.
    assert!(run(settings, &mut Log::default(), 100, |_| busy(3, 65)).is_empty());
    // 70 % is 17 % off: ceil(3 x 0.7 / 0.6) = 4.
    assert_eq!(
        run(settings, &mut Log::default(), 5, |_| busy(3, 70)),
        [(0, 4)]
    );
}

#[test]
fn a_quiet_service_scales_down_only_after_the_window() {
    let settings = ScalingSettings::default();
    let mut log = Log::default();
    log.commit(&hint(5, 5));
    // ceil(5 x 0.3 / 0.6) = 3, once the 300 s window holds only that.
    let hints = run(settings, &mut log, 100, |_| busy(5, 30));
    assert_eq!(hints, [(61, 3)]);
    assert!(log.state.services[&service()]
        .scaling
        .is_some_and(|s| s.desired == 3));

    // A busy moment inside the window starts it over.
    let mut log = Log::default();
    log.commit(&hint(5, 5));
    let hints = run(settings, &mut log, 120, |t| {
        busy(5, if t == 30 { 60 } else { 30 })
    });
    assert_eq!(hints, [(91, 3)]);
}

#[test]
fn the_hint_is_clamped_to_the_replica_bounds() {
    let settings = ScalingSettings {
        min_replicas: 2,
        max_replicas: 4,
        ..ScalingSettings::default()
    };
    let up = recommend(&busy(3, 100), &settings).unwrap();
    assert_eq!((up.current, up.desired), (3, 4));
    let down = recommend(&busy(1, 0), &settings).unwrap();
    assert_eq!((down.current, down.desired), (1, 2));
    // Below the minimum, a hint is proposed even when utilization is on target.
    assert_eq!(
        run(settings, &mut Log::default(), 3, |_| busy(1, 60)),
        [(0, 2)]
    );
}

#[test]
fn the_limit_or_else_the_capacity_makes_utilization() {
    let mut e = busy(2, 50);
    e[0].concurrency_limit = 0;
    e[0].capacity = 200;
    e[1].ready = false;
    let mut unknown = endpoint("node-x");
    (unknown.concurrency_limit, unknown.capacity) = (0, 0);
    e.push(unknown);
    let rec = recommend(&e, &ScalingSettings::default()).unwrap();
    // Two ready endpoints; only node-0 tells its utilization (50 of 200).
    assert_eq!((rec.current, rec.utilization), (2, 0.25));
    assert_eq!(recommend(&busy(0, 0), &ScalingSettings::default()), None);
    let mut unready = busy(2, 90);
    unready.iter_mut().for_each(|e| e.ready = false);
    assert_eq!(recommend(&unready, &ScalingSettings::default()), None);
}

#[test]
fn a_hint_is_not_repeated_before_it_commits() {
    let mut driver = ScalingDriver::new(ScalingSettings::default());
    let t0 = start();
    let committed = ServiceDecisions::default();
    let proposed: Vec<Duration> = (0..6u32)
        .map(|tick| TICK * tick)
        .filter(|at| {
            driver
                .decide(&service(), &busy(3, 90), &committed, &proposer(), t0 + *at)
                .is_some()
        })
        .collect();
    assert_eq!(proposed, [Duration::ZERO, RESEND_AFTER, RESEND_AFTER * 2]);
}
