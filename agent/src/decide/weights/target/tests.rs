use super::*;
use crate::decide::testing::{endpoint, node};

fn three() -> Vec<ServiceEndpoint> {
    vec![endpoint("node-a"), endpoint("node-b"), endpoint("node-c")]
}

fn weights(e: &[ServiceEndpoint]) -> Vec<Option<u32>> {
    targets(e, &ServiceDecisions::default(), &WeightSettings::default())
        .into_iter()
        .map(|t| t.weight)
        .collect()
}

#[test]
fn errors_sheds_and_saturation_against_the_peers_lower_the_target() {
    let mut e = three();
    e[0].errors_per_sec = 10.0;
    e[1].shed_per_sec = 25.0;
    e[2].in_flight = 95;
    e.push(endpoint("node-d"));
    let t = targets(&e, &ServiceDecisions::default(), &WeightSettings::default());
    // 10 % errors against 0 %: 0.02 / 0.10.
    assert_eq!(t[0].weight, Some(200));
    assert_eq!(
        t[0].describe(),
        "node-a error rate 10.0% vs its peers' median 0.0%"
    );
    assert_eq!(t[0].evidence()[0].signal, "error_rate");
    // 20 % shed against 0 %: 0.05 / 0.20.
    assert_eq!(t[1].weight, Some(250));
    // 5 % spare against the peers' 96 %: 0.05 / (0.96 x 0.5).
    assert_eq!(t[2].weight, Some(104));
    assert_eq!(
        t[2].describe(),
        "node-c is 95% busy vs its peers' median 4%"
    );
    assert_eq!(t[3].weight, Some(FULL_WEIGHT));
}

#[test]
fn latency_counts_against_the_other_endpoints_and_above_a_floor() {
    let mut e = three();
    e[1].p99_us = 8_000;
    // 4x the others' 2 ms: 1.5 / 4.
    assert_eq!(
        weights(&e),
        [Some(FULL_WEIGHT), Some(375), Some(FULL_WEIGHT)]
    );
    // Two endpoints: each against the other, not against a median that includes itself.
    assert_eq!(weights(&e[..2]), [Some(FULL_WEIGHT), Some(375)]);
    // 3x, but only 0.6 ms more: scheduling jitter of a fast service.
    for e in &mut e {
        (e.p50_us, e.p99_us) = (100, 300);
    }
    e[1].p99_us = 900;
    assert_eq!(weights(&e), [Some(FULL_WEIGHT); 3]);
}

#[test]
fn a_fault_shared_by_every_endpoint_is_no_signal() {
    let mut e = three();
    for e in &mut e {
        (e.p99_us, e.errors_per_sec, e.in_flight) = (50_000, 30.0, 99);
    }
    assert_eq!(weights(&e), [Some(FULL_WEIGHT); 3]);
}

#[test]
fn readiness_and_evidence() {
    let mut e = three();
    e[0].ready = false;
    e[1].requests_per_sec = 0.1;
    e[1].p99_us = 50_000;
    e[2].routable = false;
    let t = targets(&e, &ServiceDecisions::default(), &WeightSettings::default());
    assert_eq!(
        (t[0].weight, t[0].cause),
        (Some(MIN_WEIGHT), Cause::NotReady)
    );
    assert_eq!(t[1].weight, None, "0.1 req/s at full weight is no evidence");
    assert_eq!(t[2].weight, None, "leaving: no evidence");
    // At weight 100 the floor is a tenth.
    let committed = ServiceDecisions {
        weights: [(node("node-b"), 100)].into(),
        ..ServiceDecisions::default()
    };
    let t = targets(
        &three_with_b_rps(0.5),
        &committed,
        &WeightSettings::default(),
    );
    assert_eq!(t[1].weight, Some(FULL_WEIGHT));
}

fn three_with_b_rps(rps: f32) -> Vec<ServiceEndpoint> {
    let mut e = three();
    e[1].requests_per_sec = rps;
    e
}
