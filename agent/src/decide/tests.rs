use plexus_protocol::{CanaryPolicy, DecisionKind, FULL_WEIGHT};

use super::testing::{endpoint, proposer, service, start, Log, S};
use super::*;

fn canary() -> CanaryPolicy {
    CanaryPolicy {
        baseline: "v1".into(),
        canary: "v2".into(),
        step_percent: 50,
        interval_ms: 10_000,
        max_error_rate_increase: 0.01,
        max_latency_ratio: 1.5,
    }
}

fn mesh() -> BTreeMap<ServiceName, Vec<ServiceEndpoint>> {
    let mut slow = endpoint("node-b");
    slow.p99_us = 20_000;
    let mut canary = endpoint("node-c");
    canary.version = "v2".into();
    let mut busy: Vec<ServiceEndpoint> = ["node-a", "node-b"].map(endpoint).into();
    busy.iter_mut().for_each(|e| e.in_flight = 90);
    BTreeMap::from([
        (service(), vec![endpoint("node-a"), slow, canary]),
        (ServiceName::new("search").unwrap(), busy),
    ])
}

fn settings() -> DeciderSettings {
    DeciderSettings {
        weights: WeightSettings::default(),
        services: BTreeMap::from([
            (
                service(),
                ServicePolicy {
                    canary: Some(canary()),
                    ..ServicePolicy::default()
                },
            ),
            (
                ServiceName::new("search").unwrap(),
                ServicePolicy {
                    scaling: Some(ScalingSettings::default()),
                    ..ServicePolicy::default()
                },
            ),
        ]),
        ..DeciderSettings::default()
    }
}

fn labels(decisions: &[Decision]) -> Vec<(String, &'static str)> {
    decisions
        .iter()
        .map(|d| (d.kind.service().unwrap().to_string(), d.kind.label()))
        .collect()
}

#[test]
fn every_policy_of_every_service_in_one_tick() {
    let mut decider = Decider::new(settings());
    let mut log = Log::default();
    let t0 = start();
    let first = decider.decide(&mesh(), &log.state, &proposer(), t0);
    assert_eq!(
        labels(&first),
        [
            ("payments".into(), "canary_start"),
            ("search".into(), "scaling_hint")
        ]
    );
    first.iter().for_each(|d| log.commit(d));
    let mut all = Vec::new();
    for tick in 1..=4u32 {
        let decisions = decider.decide(&mesh(), &log.state, &proposer(), t0 + 5 * S * tick);
        decisions.iter().for_each(|d| log.commit(d));
        all.extend(labels(&decisions).into_iter().map(|(s, l)| (tick, s, l)));
    }
    assert_eq!(
        all,
        [
            (2, "payments".into(), "weights"),
            (3, "payments".into(), "canary_step"),
        ]
    );
    let payments = &log.state.services[&service()];
    assert_eq!(payments.weight(&testing::node("node-b")), 575);
    assert_eq!(payments.weight(&testing::node("node-a")), FULL_WEIGHT);
}

#[test]
fn changed_settings_restart_only_their_drivers() {
    let mut decider = Decider::new(settings());
    let log = Log::default();
    let t0 = start();
    assert_eq!(
        decider.decide(&mesh(), &log.state, &proposer(), t0).len(),
        2
    );
    // Not committed yet: both wait for their proposals.
    assert!(decider
        .decide(&mesh(), &log.state, &proposer(), t0 + S)
        .is_empty());
    let mut changed = settings();
    changed
        .services
        .get_mut(&service())
        .unwrap()
        .canary
        .as_mut()
        .unwrap()
        .canary = "v3".into();
    decider.set_settings(changed);
    let again = decider.decide(&mesh(), &log.state, &proposer(), t0 + 2 * S);
    assert_eq!(labels(&again), [("payments".into(), "canary_start")]);
    let DecisionKind::CanaryStart { policy, .. } = &again[0].kind else {
        panic!("{again:?}");
    };
    assert_eq!(policy.canary, "v3");
}

#[test]
fn decisions_stay_within_the_protocol_bounds() {
    let long = "é".repeat(200);
    let d = proposer().decision(
        DecisionKind::Voters { voters: vec![] },
        long,
        (0..100)
            .map(|i| evidence(format!("node-{i}"), "p99_us", 1.0, None))
            .collect(),
    );
    assert!(d.reason.len() <= plexus_protocol::decision::MAX_TEXT);
    assert_eq!(d.evidence.len(), plexus_protocol::decision::MAX_EVIDENCE);
    d.validate().unwrap();
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median([f64::NAN]), None);
    assert_eq!(median(Vec::new()), None);
}
