use super::*;

const MS: Duration = Duration::from_millis(1);

/// A service with `workers` parallel workers and `base` service time; `demand` callers keep a
/// request outstanding each. One round: admit what the limit allows, then all of them finish
/// after the queueing latency. Returns the limit after each round.
fn simulate(
    limit: &mut ConcurrencyLimit,
    t0: Instant,
    rounds: u32,
    demand: u32,
    workers: u32,
) -> Vec<u32> {
    let base = 10 * MS;
    let mut now = t0;
    let mut limits = Vec::new();
    for _ in 0..rounds {
        let permits: Vec<Permit> = (0..demand).filter_map(|_| limit.try_acquire()).collect();
        let admitted = permits.len() as u32;
        let queueing = f64::from(admitted.max(1)) / f64::from(workers);
        let rtt = base.mul_f64(queueing.max(1.0));
        now += rtt.max(limit.config.window_time);
        for permit in permits {
            limit.release(permit, now, rtt, true);
        }
        limits.push(limit.limit());
    }
    limits
}

#[test]
fn the_limit_settles_near_what_the_service_can_run_in_parallel() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    let limits = simulate(&mut limit, t0, 400, 200, 16);
    let settled = &limits[300..];
    let (lo, hi) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
    assert!(
        *lo >= 8 && *hi <= 48,
        "limit wandered in {lo}..={hi}: {limits:?}"
    );
    assert!(limit.reading().shed > 0, "excess demand was shed");
}

#[test]
fn the_limit_grows_when_latency_stays_flat() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    let limits = simulate(&mut limit, t0, 200, 500, 1000);
    assert!(*limits.last().unwrap() > 200, "{limits:?}");
}

#[test]
fn an_unused_limit_does_not_grow() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    let limits = simulate(&mut limit, t0, 200, 3, 1000);
    assert_eq!(*limits.last().unwrap(), 20);
    assert_eq!(limit.reading().shed, 0);
}

#[test]
fn the_limit_shrinks_when_the_service_slows_down() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    let before = *simulate(&mut limit, t0, 300, 200, 64).last().unwrap();
    let after = *simulate(&mut limit, t0 + Duration::from_secs(300), 300, 200, 8)
        .last()
        .unwrap();
    assert!(after * 2 < before, "before {before}, after {after}");
}

#[test]
fn over_the_limit_requests_are_shed_and_counted() {
    let t0 = Instant::now();
    let config = LimitConfig {
        initial: 2,
        min: 2,
        max: 2,
        ..LimitConfig::default()
    };
    let mut limit = ConcurrencyLimit::new(config, t0);
    let first = limit.try_acquire().unwrap();
    let _second = limit.try_acquire().unwrap();
    assert!(limit.try_acquire().is_none());
    assert_eq!(limit.reading().shed, 1);
    limit.release(first, t0, MS, false);
    let _third = limit.try_acquire().unwrap();
    assert_eq!(limit.reading().in_flight, 2);
}

#[test]
fn bounds_are_kept_even_when_configured_backwards() {
    let t0 = Instant::now();
    let config = LimitConfig {
        initial: 5000,
        min: 50,
        max: 10,
        ..LimitConfig::default()
    };
    let mut limit = ConcurrencyLimit::new(config, t0);
    simulate(&mut limit, t0, 5, 100, 1000);
    assert_eq!(limit.limit(), 10);
}

#[test]
fn the_baseline_is_measured_again_at_low_concurrency() {
    let t0 = Instant::now();
    let config = LimitConfig {
        baseline_interval: Duration::from_secs(10),
        ..LimitConfig::default()
    };
    let mut limit = ConcurrencyLimit::new(config, t0);
    let limits = simulate(&mut limit, t0, 300, 200, 16);
    let dips = limits
        .windows(2)
        .filter(|w| w[1] <= w[0] / 4 + 1 && w[0] > 8)
        .count();
    assert!(dips >= 2, "{limits:?}");
    assert_eq!(limit.reading().baseline, Some(10 * MS));
}
