use super::*;
use crate::decide::testing::{endpoint, node, proposer, service, start, weight_of, Log};
use crate::decide::RESEND_AFTER;

const TICK: Duration = Duration::from_secs(5);

fn three() -> Vec<ServiceEndpoint> {
    vec![endpoint("node-a"), endpoint("node-b"), endpoint("node-c")]
}

fn slow(mut e: ServiceEndpoint, times: f64) -> ServiceEndpoint {
    e.p99_us = (f64::from(e.p99_us) * times) as u32;
    e.p50_us = (f64::from(e.p50_us) * times) as u32;
    e
}

/// Ticks the driver every 5 s, committing every proposal at once. `load(tick, committed)`
/// gives the endpoints. Returns each decision with its tick.
fn run(
    driver: &mut WeightDriver,
    log: &mut Log,
    ticks: usize,
    mut load: impl FnMut(usize, &ServiceDecisions) -> Vec<ServiceEndpoint>,
) -> Vec<(usize, Decision)> {
    let t0 = start();
    let mut out = Vec::new();
    for tick in 0..ticks {
        let committed = log.service();
        let endpoints = load(tick, &committed);
        let now = t0 + TICK * tick as u32;
        if let Some(d) = driver.decide(&service(), &endpoints, &committed, &proposer(), now) {
            log.commit(&d);
            out.push((tick, d));
        }
    }
    out
}

fn history(decisions: &[(usize, Decision)], name: &str) -> Vec<u32> {
    decisions.iter().map(|(_, d)| weight_of(d, name)).collect()
}

/// How often a weight's direction of travel turned around.
fn reversals(decisions: &[(usize, Decision)], name: &str) -> usize {
    let mut weights = vec![FULL_WEIGHT];
    weights.extend(history(decisions, name));
    let moves: Vec<bool> = weights
        .windows(2)
        .filter(|w| w[0] != w[1])
        .map(|w| w[1] > w[0])
        .collect();
    moves.windows(2).filter(|m| m[0] != m[1]).count()
}

/// A small deterministic pseudo-random sequence in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn healthy_endpoints_get_no_decision() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let mut noise = Lcg(7);
    let decisions = run(&mut driver, &mut Log::default(), 200, |_, _| {
        let mut e = three();
        for e in &mut e {
            e.p99_us = 1_800 + (noise.next() * 600.0) as u32;
        }
        e
    });
    assert!(decisions.is_empty(), "{decisions:?}");
}

#[test]
fn a_ten_times_slower_endpoint_loses_weight_step_by_step_while_the_others_stay_full() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let decisions = run(&mut driver, &mut Log::default(), 40, |_, _| {
        let mut e = three();
        e[1] = slow(e[1].clone(), 10.0);
        e
    });
    // Halfway to the target of 150 each step, the last step all the way.
    assert_eq!(history(&decisions, "node-b"), [575, 362, 256, 203, 150]);
    assert_eq!(history(&decisions, "node-a"), [FULL_WEIGHT; 5]);
    assert_eq!(history(&decisions, "node-c"), [FULL_WEIGHT; 5]);
    // The first needs a covered down window (10 s); each later one a fresh window.
    let ticks: Vec<usize> = decisions.iter().map(|(t, _)| *t).collect();
    assert_eq!(ticks, [2, 5, 8, 11, 14]);
    let (_, first) = &decisions[0];
    assert_eq!(
        first.reason,
        "node-b p99 20.0 ms is 10.0x its peers' median 2.0 ms: weight 1000 -> 575"
    );
    assert_eq!(first.evidence[0].subject, "node-b");
    assert_eq!(first.evidence[0].signal, "p99_us");
    assert_eq!(first.evidence[0].value, 20_000.0);
    assert_eq!(first.evidence[0].reference, Some(2_000.0));
    assert_eq!(first.proposer, node("leader"));
    let DecisionKind::Weights { weights, .. } = &first.kind else {
        panic!("{first:?}");
    };
    assert_eq!(weights.len(), 1, "full weights are not listed");
}

#[test]
fn a_recovered_endpoint_climbs_back_in_bounded_steps() {
    let mut log = Log::default();
    let mut driver = WeightDriver::new(WeightSettings::default());
    let slow_for = 9;
    let decisions = run(&mut driver, &mut log, 60, |tick, _| {
        let mut e = three();
        if tick < slow_for {
            e[1] = slow(e[1].clone(), 10.0);
        }
        e
    });
    let b = history(&decisions, "node-b");
    // Up by at most 250, halfway to full, the last step all the way.
    assert_eq!(b, [575, 362, 256, 506, 753, 877, 939, 1000]);
    let ups: Vec<usize> = decisions[3..].iter().map(|(t, _)| *t).collect();
    // Each climb waits for a covered 30 s window of healthy targets (six ticks).
    assert!(ups.windows(2).all(|w| w[1] - w[0] >= 6), "{ups:?}");
    assert!(decisions[3].1.reason.starts_with(
        "node-b p99 2.0 ms is in line with its peers' median 2.0 ms: weight 256 -> 506"
    ));
}

#[test]
fn an_unready_endpoint_goes_to_min_weight_at_once() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let decisions = run(&mut driver, &mut Log::default(), 10, |_, _| {
        let mut e = three();
        e[2].ready = false;
        e[2].routable = false;
        e[2].requests_per_sec = 0.0;
        e
    });
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let (tick, d) = &decisions[0];
    assert_eq!(*tick, 0);
    assert_eq!(weight_of(d, "node-c"), MIN_WEIGHT);
    assert_eq!(d.reason, "node-c is not ready: weight 1000 -> 10");
}

#[test]
fn too_little_traffic_keeps_the_weight_but_a_small_share_needs_little() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let idle = run(&mut driver, &mut Log::default(), 30, |_, _| {
        let mut e = three();
        e[1] = slow(e[1].clone(), 10.0);
        e[1].requests_per_sec = 0.1;
        e
    });
    assert!(idle.is_empty(), "{idle:?}");

    // At weight 100 an endpoint gets about a tenth of the traffic: 0.5 req/s is evidence.
    let mut log = Log::default();
    log.commit(&proposer().decision(
        DecisionKind::Weights {
            service: service(),
            weights: vec![EndpointWeight {
                node: node("node-b"),
                weight: 100,
            }],
        },
        "setup".into(),
        vec![],
    ));
    let mut driver = WeightDriver::new(WeightSettings::default());
    let climbs = run(&mut driver, &mut log, 10, |_, _| {
        let mut e = three();
        e[1].requests_per_sec = 0.5;
        e
    });
    assert_eq!(history(&climbs, "node-b"), [350]);
}

#[test]
fn noise_around_the_tolerance_does_not_oscillate() {
    // The slow endpoint's p99 alternates just under and just over 1.5x the median.
    let mut driver = WeightDriver::new(WeightSettings::default());
    let decisions = run(&mut driver, &mut Log::default(), 200, |tick, _| {
        let mut e = three();
        e[1].p99_us = if tick % 2 == 0 { 2_800 } else { 3_400 };
        e
    });
    assert!(reversals(&decisions, "node-b") <= 2);
    assert!(decisions.is_empty(), "{decisions:?}");
}

#[test]
fn random_noise_does_not_oscillate() {
    // p99 between 1.2x and 2.4x the median, at random, whatever the seed.
    for seed in 1..=30 {
        let mut driver = WeightDriver::new(WeightSettings::default());
        let mut noise = Lcg(seed);
        let decisions = run(&mut driver, &mut Log::default(), 200, |_, _| {
            let mut e = three();
            e[1].p99_us = (2_000.0 * (1.2 + 1.2 * noise.next())) as u32;
            e
        });
        for name in ["node-a", "node-b", "node-c"] {
            let r = reversals(&decisions, name);
            assert!(
                r <= 2,
                "seed {seed}: {name} reversed {r} times: {decisions:?}"
            );
        }
    }
}

#[test]
fn a_weight_that_moves_its_own_latency_settles() {
    // The slow endpoint queues: its latency grows with its share (10x at full weight, 1x
    // with no traffic), with ±20 % noise on every reading.
    for seed in 1..=30 {
        let mut driver = WeightDriver::new(WeightSettings::default());
        let mut noise = Lcg(seed);
        let decisions = run(&mut driver, &mut Log::default(), 200, |_, committed| {
            let mut e = three();
            let share = f64::from(committed.weight(&node("node-b"))) / f64::from(FULL_WEIGHT);
            let jitter = 0.8 + 0.4 * noise.next();
            e[1] = slow(e[1].clone(), (1.0 + 9.0 * share) * jitter);
            e
        });
        let r = reversals(&decisions, "node-b");
        assert!(
            r <= 2,
            "seed {seed}: node-b reversed {r} times: {decisions:?}"
        );
        let last = history(&decisions, "node-b").last().copied().unwrap();
        // The fixed point of 1000 x 1.5 / (1 + 9w/1000) is w = 356.
        assert!(
            (150..=600).contains(&last),
            "seed {seed}: settled at {last}"
        );
        assert_eq!(reversals(&decisions, "node-a"), 0);
    }
}

/// node-b at `(p50, p99)`, the others at (1 ms, 2 ms).
fn b_at(p50_us: u32, p99_us: u32) -> Vec<ServiceEndpoint> {
    let mut e = three();
    (e[1].p50_us, e[1].p99_us) = (p50_us, p99_us);
    e
}

fn set_b(log: &mut Log, weight: u32) {
    log.commit(&proposer().decision(
        DecisionKind::Weights {
            service: service(),
            weights: vec![EndpointWeight {
                node: node("node-b"),
                weight,
            }],
        },
        "set by another leader".into(),
        vec![],
    ));
}

/// Ticks every 5 s from `from` while the result is `None`; the tick of the first decision.
fn first_decision(
    driver: &mut WeightDriver,
    log: &Log,
    e: &[ServiceEndpoint],
    from: u32,
) -> Option<(u32, u32)> {
    let t0 = start();
    (from..from + 40).find_map(|tick| {
        let committed = log.service();
        driver
            .decide(&service(), e, &committed, &proposer(), t0 + TICK * tick)
            .map(|d| (tick, weight_of(&d, "node-b")))
    })
}

#[test]
fn a_reversal_needs_the_wider_threshold() {
    let mut log = Log::default();
    let mut driver = WeightDriver::new(WeightSettings::default());
    assert_eq!(first_decision(&mut driver, &log, &three(), 0), None);
    set_b(&mut log, 500);
    // The weight went down; a target 60 above (560) does not bring it back up...
    assert_eq!(
        first_decision(&mut driver, &log, &b_at(2_680, 5_360), 40),
        None
    );
    // ...120 above (620) does, halfway, after the up window.
    let mut driver2 = WeightDriver::new(WeightSettings::default());
    first_decision(&mut driver2, &Log::default(), &three(), 0);
    assert_eq!(
        first_decision(&mut driver2, &log, &b_at(2_419, 4_839), 40),
        Some((46, 560))
    );
    // A target 60 below (440), the same direction as the last move, is enough.
    assert_eq!(
        first_decision(&mut driver, &log, &b_at(3_409, 6_818), 80),
        Some((82, 440))
    );
}

/// One tick with every endpoint healthy, for the driver to see the committed weights.
fn see(driver: &mut WeightDriver, log: &Log, tick: u32) {
    let now = start() + TICK * tick;
    let d = driver.decide(&service(), &three(), &log.service(), &proposer(), now);
    assert_eq!(d, None);
}

#[test]
fn each_reversal_doubles_the_window_of_the_next() {
    // Down (1000 -> 500), up (-> 700), and now a target of 400: a second reversal, which needs
    // 2 x 10 s of targets.
    let mut log = Log::default();
    let mut driver = WeightDriver::new(WeightSettings::default());
    see(&mut driver, &log, 0);
    set_b(&mut log, 500);
    see(&mut driver, &log, 1);
    set_b(&mut log, 700);
    see(&mut driver, &log, 2);
    let e = b_at(3_750, 7_500);
    assert_eq!(first_decision(&mut driver, &log, &e, 3), Some((7, 550)));
    // After two reversals, going up again needs 4 x 30 s of targets.
    set_b(&mut log, 550);
    see(&mut driver, &log, 8);
    assert_eq!(
        first_decision(&mut driver, &log, &three(), 9),
        Some((32, 775))
    );
    // The same move as a first reversal needs 10 s.
    let mut log = Log::default();
    let mut driver = WeightDriver::new(WeightSettings::default());
    see(&mut driver, &log, 0);
    set_b(&mut log, 700);
    see(&mut driver, &log, 1);
    assert_eq!(first_decision(&mut driver, &log, &e, 2), Some((4, 550)));
}

#[test]
fn a_proposal_is_not_repeated_before_it_commits() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let committed = ServiceDecisions::default();
    let mut e = three();
    e[1] = slow(e[1].clone(), 10.0);
    let t0 = start();
    let mut proposed = Vec::new();
    for tick in 0..20u32 {
        let now = t0 + TICK * tick;
        if driver
            .decide(&service(), &e, &committed, &proposer(), now)
            .is_some()
        {
            proposed.push(tick);
        }
    }
    let resend = (RESEND_AFTER.as_secs() / TICK.as_secs()) as u32;
    let expected: Vec<u32> = (2..20).step_by(resend as usize).collect();
    assert_eq!(proposed, expected);
}

#[test]
fn two_endpoints_are_compared_with_each_other() {
    let mut driver = WeightDriver::new(WeightSettings::default());
    let decisions = run(&mut driver, &mut Log::default(), 7, |_, _| {
        vec![endpoint("node-a"), slow(endpoint("node-b"), 10.0)]
    });
    assert_eq!(history(&decisions, "node-b"), [575, 362]);
    assert_eq!(history(&decisions, "node-a"), [FULL_WEIGHT; 2]);
}

#[test]
fn departed_endpoints_are_dropped_from_the_next_decision() {
    let mut log = Log::default();
    log.commit(&proposer().decision(
        DecisionKind::Weights {
            service: service(),
            weights: vec![EndpointWeight {
                node: node("node-gone"),
                weight: 300,
            }],
        },
        "setup".into(),
        vec![],
    ));
    let mut driver = WeightDriver::new(WeightSettings::default());
    let decisions = run(&mut driver, &mut log, 4, |_, _| {
        let mut e = three();
        e[1] = slow(e[1].clone(), 10.0);
        e
    });
    let DecisionKind::Weights { weights, .. } = &decisions[0].1.kind else {
        panic!()
    };
    assert_eq!(weights.len(), 1);
    assert_eq!(weights[0].node, node("node-b"));
}
