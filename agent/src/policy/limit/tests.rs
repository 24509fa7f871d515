use super::*;

const MS: Duration = Duration::from_millis(1);

/// A service with `workers` parallel workers, `base` service time and a FIFO queue; `demand`
/// callers keep a request outstanding each. One round: admit what the limit allows; the k-th
/// admitted request finishes after `base × ⌈k ÷ workers⌉`. Returns the limit after each round.
fn simulate(
    limit: &mut ConcurrencyLimit,
    t0: Instant,
    rounds: u32,
    demand: u32,
    workers: u32,
) -> Vec<u32> {
    simulate_with(limit, t0, 10 * MS, rounds, demand, workers)
}

fn simulate_with(
    limit: &mut ConcurrencyLimit,
    t0: Instant,
    base: Duration,
    rounds: u32,
    demand: u32,
    workers: u32,
) -> Vec<u32> {
    let mut now = t0;
    let mut limits = Vec::new();
    for _ in 0..rounds {
        let permits: Vec<Permit> = (0..demand).filter_map(|_| limit.try_acquire()).collect();
        let admitted = permits.len() as u32;
        let last = base * admitted.max(1).div_ceil(workers);
        now += last.max(limit.config.window_time);
        for (k, permit) in permits.into_iter().enumerate() {
            let rtt = base * (k as u32 + 1).div_ceil(workers);
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
    assert_eq!(*limits.last().unwrap(), LimitConfig::default().initial);
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
fn the_baseline_comes_from_quiet_requests_without_shedding_any() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    // 24 callers, 4 workers: most requests queue, none is shed for the measurement.
    simulate(&mut limit, t0, 3, 24, 4);
    assert_eq!(limit.reading().baseline, Some(10 * MS));
    assert_eq!(limit.reading().shed, 0);
}

#[test]
fn the_baseline_is_measured_again_and_follows_a_slower_service() {
    let t0 = Instant::now();
    let config = LimitConfig {
        baseline_interval: Duration::from_secs(10),
        ..LimitConfig::default()
    };
    let mut limit = ConcurrencyLimit::new(config, t0);
    simulate_with(&mut limit, t0, 10 * MS, 100, 8, 1000);
    assert_eq!(limit.reading().baseline, Some(10 * MS));
    // The service now needs 30 ms per request (a new version, a slower disk).
    simulate_with(
        &mut limit,
        t0 + Duration::from_secs(100),
        30 * MS,
        400,
        8,
        1000,
    );
    assert_eq!(limit.reading().baseline, Some(30 * MS));
    assert_eq!(limit.reading().shed, 0);
}

#[test]
fn scheduling_jitter_of_a_fast_service_is_not_queueing() {
    let t0 = Instant::now();
    let mut limit = ConcurrencyLimit::new(LimitConfig::default(), t0);
    // 100 µs service; windows of 1.5 ms average (15 × baseline, under baseline + 2 ms).
    for k in 0..200u32 {
        let permits: Vec<Permit> = (0..40).filter_map(|_| limit.try_acquire()).collect();
        let now = t0 + Duration::from_millis(100) * (k + 1);
        for (i, permit) in permits.into_iter().enumerate() {
            let rtt = if i < 8 {
                Duration::from_micros(100)
            } else {
                Duration::from_micros(1500)
            };
            limit.release(permit, now, rtt, true);
        }
    }
    assert!(limit.limit() >= 40, "limit {}", limit.limit());
}
