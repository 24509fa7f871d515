use super::*;

const S: Duration = Duration::from_secs(1);

fn setup(n: usize) -> (OutlierDetector, Vec<OutlierTracker>, Instant) {
    let t0 = Instant::now();
    (
        OutlierDetector::new(OutlierConfig::default(), t0),
        vec![OutlierTracker::default(); n],
        t0,
    )
}

#[test]
fn five_consecutive_failures_eject_and_a_success_resets_the_count() {
    let (mut d, mut t, t0) = setup(3);
    for _ in 0..4 {
        assert_eq!(d.record(&mut t, 0, t0, true), None);
    }
    assert_eq!(d.record(&mut t, 0, t0, false), None);
    for _ in 0..4 {
        assert_eq!(d.record(&mut t, 0, t0, true), None);
    }
    assert_eq!(
        d.record(&mut t, 0, t0, true),
        Some(Transition::Ejected(EjectReason::ConsecutiveFailures))
    );
    assert!(!t[0].admits());
    assert_eq!(t[0].state(), Ejection::Ejected { until: t0 + 30 * S });
}

#[test]
fn ejection_ends_in_half_open_probing_one_request_at_a_time() {
    let (mut d, mut t, t0) = setup(3);
    for _ in 0..5 {
        d.record(&mut t, 1, t0, true);
    }
    assert!(d.tick(&mut t, t0 + 29 * S).is_empty());
    assert_eq!(d.tick(&mut t, t0 + 30 * S), vec![(1, Transition::Probing)]);
    assert!(t[1].admits());
    t[1].started();
    assert!(!t[1].admits(), "one probe at a time");
    assert_eq!(
        d.record(&mut t, 1, t0 + 31 * S, false),
        Some(Transition::Returned)
    );
    assert_eq!(t[1].state(), Ejection::Healthy);
}

#[test]
fn a_failed_probe_ejects_again_for_longer_up_to_the_cap() {
    let (mut d, mut t, t0) = setup(3);
    for _ in 0..5 {
        d.record(&mut t, 0, t0, true);
    }
    let mut now = t0;
    let mut expected = 30 * S;
    for _ in 0..12 {
        let Ejection::Ejected { until } = t[0].state() else {
            panic!("not ejected: {:?}", t[0].state());
        };
        assert_eq!(until - now, expected);
        now = until;
        d.tick(&mut t, now);
        t[0].started();
        assert_eq!(
            d.record(&mut t, 0, now, true),
            Some(Transition::Ejected(EjectReason::ProbeFailed))
        );
        expected = (expected + 30 * S).min(300 * S);
    }
}

#[test]
fn never_more_than_the_cap_and_never_the_last_endpoint() {
    // 50 % of 3 is 1: a second failing endpoint stays in.
    let (mut d, mut t, t0) = setup(3);
    for _ in 0..5 {
        d.record(&mut t, 0, t0, true);
    }
    for _ in 0..20 {
        assert_eq!(d.record(&mut t, 1, t0, true), None);
    }
    assert!(t[1].admits());

    // One endpoint alone is never ejected.
    let (mut d, mut t, t0) = setup(1);
    for _ in 0..20 {
        assert_eq!(d.record(&mut t, 0, t0, true), None);
    }
    assert!(t[0].admits());

    // Two endpoints: one may go, not both.
    let (mut d, mut t, t0) = setup(2);
    for _ in 0..5 {
        d.record(&mut t, 0, t0, true);
    }
    for _ in 0..20 {
        d.record(&mut t, 1, t0, true);
    }
    assert!(!t[0].admits());
    assert!(t[1].admits());
}

#[test]
fn success_rate_outlier_is_ejected_at_the_interval() {
    let (mut d, mut t, t0) = setup(6);
    // Endpoint 5 fails every third request: never 5 in a row, but far below the others.
    for k in 0..150 {
        for i in 0..5 {
            d.record(&mut t, i, t0, k % 100 == 0);
        }
        d.record(&mut t, 5, t0, k % 3 == 0);
    }
    assert!(t[5].admits(), "no consecutive-failure ejection");
    assert!(d.tick(&mut t, t0 + 9 * S).is_empty());
    assert_eq!(
        d.tick(&mut t, t0 + 10 * S),
        vec![(5, Transition::Ejected(EjectReason::SuccessRate))]
    );
}

#[test]
fn success_rate_needs_enough_hosts_and_volume() {
    // Too little volume: no verdict.
    let (mut d, mut t, t0) = setup(6);
    for k in 0..50 {
        for i in 0..6 {
            d.record(&mut t, i, t0, i == 5 && k % 2 == 0);
        }
    }
    assert!(d.tick(&mut t, t0 + 10 * S).is_empty());
}

#[test]
fn the_multiplier_decays_while_healthy() {
    let (mut d, mut t, t0) = setup(3);
    for _ in 0..5 {
        d.record(&mut t, 0, t0, true);
    }
    d.tick(&mut t, t0 + 30 * S);
    t[0].started();
    d.record(&mut t, 0, t0 + 30 * S, false);
    assert_eq!(t[0].ejections(), 1);
    d.tick(&mut t, t0 + 40 * S);
    assert_eq!(t[0].ejections(), 0);
}
