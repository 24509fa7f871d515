//! The balancer and ejection together, driven by a small open-loop simulation in virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 4433))
}

fn set(n: u8, now: Instant) -> EndpointSet {
    let mut s = EndpointSet::new(BalanceConfig::default(), OutlierConfig::default(), now);
    s.sync(&(1..=n).map(addr).collect::<Vec<_>>(), now);
    s
}

/// A request in the simulation: when it was sent, where, how it ended.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Duration,
    to: SocketAddr,
    outcome: Outcome,
}

/// What a simulation sent and which endpoints changed state when.
#[derive(Debug, Default)]
struct Run {
    sent: Vec<Sent>,
    transitions: Vec<(Duration, SocketAddr, Transition)>,
}

/// Sends `rate` requests per second for `span`, open loop; `answer(endpoint, elapsed)` says how
/// long the endpoint takes and how it answers. Completions are fed back in time order.
fn simulate(
    set: &mut EndpointSet,
    t0: Instant,
    rate: u32,
    span: Duration,
    answer: impl Fn(SocketAddr, Duration) -> (Duration, Outcome),
) -> Run {
    let mut transitions = Vec::new();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let gap = Duration::from_secs(1) / rate;
    let mut pending: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut sent = Vec::new();
    let mut now = Duration::ZERO;
    while now < span {
        while let Some(Reverse((done, k))) = pending.peek().copied() {
            if done > now {
                break;
            }
            pending.pop();
            let s: Sent = sent[k];
            if let Some(t) = set.finish(s.to, t0 + done, done - s.at, s.outcome) {
                transitions.push((done, s.to, t));
            }
        }
        for (to, t) in set.tick(t0 + now) {
            transitions.push((now, to, t));
        }
        if let Some(to) = set.pick(t0 + now, |n| rng.random_range(0..n), &[]) {
            let (latency, outcome) = answer(to, now);
            pending.push(Reverse((now + latency, sent.len())));
            sent.push(Sent {
                at: now,
                to,
                outcome,
            });
        }
        now += gap;
    }
    Run { sent, transitions }
}

fn share(sent: &[Sent], from: Duration, to: Duration, endpoint: SocketAddr) -> f64 {
    let window: Vec<_> = sent.iter().filter(|s| s.at >= from && s.at < to).collect();
    window.iter().filter(|s| s.to == endpoint).count() as f64 / window.len().max(1) as f64
}

#[test]
fn equal_endpoints_share_the_traffic() {
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let run = simulate(&mut s, t0, 500, Duration::from_secs(10), |_, _| {
        (5 * MS, Outcome::Success)
    });
    for i in 1..=3 {
        let share = share(&run.sent, Duration::ZERO, Duration::from_secs(10), addr(i));
        assert!((0.25..0.42).contains(&share), "endpoint {i}: {share}");
    }
}

#[test]
fn a_ten_times_slower_endpoint_loses_its_share_within_two_seconds() {
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let slow_from = Duration::from_secs(5);
    let run = simulate(&mut s, t0, 1000, Duration::from_secs(10), |to, now| {
        let slow = to == addr(2) && now >= slow_from;
        (if slow { 50 * MS } else { 5 * MS }, Outcome::Success)
    });
    let before = share(&run.sent, Duration::ZERO, slow_from, addr(2));
    assert!(before > 0.25, "before: {before}");
    let after = share(
        &run.sent,
        slow_from + Duration::from_secs(2),
        Duration::from_secs(10),
        addr(2),
    );
    assert!(after < 0.10, "share 2 s after slowing down: {after}");
}

/// The caller's host stalls for `stall` every `every`: an answer due during a stall is seen
/// when it ends, so every endpoint in use looks slow for a moment, the slow one left alone
/// does not.
fn seen_after_stalls(
    sent_at: Duration,
    latency: Duration,
    every: Duration,
    stall: Duration,
) -> Duration {
    let due = sent_at + latency;
    let into = Duration::from_nanos((due.as_nanos() % every.as_nanos()) as u64);
    if into < stall {
        latency + (stall - into)
    } else {
        latency
    }
}

#[test]
fn a_slow_endpoint_stays_out_when_the_callers_host_stalls() {
    // 200 req/s over three endpoints, one of them 35 ms against 2 ms (the chaos harness's
    // `slow-endpoint`), and the caller's host stalls for 40 ms every 700 ms: the answers of the
    // endpoints in use arrive up to 40 ms late, as slow as the slow one.
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let slow_from = Duration::from_secs(5);
    let (every, stall) = (700 * MS, 40 * MS);
    let run = simulate(&mut s, t0, 200, Duration::from_secs(15), |to, now| {
        let base = if to == addr(3) && now >= slow_from {
            35 * MS
        } else {
            2 * MS
        };
        (seen_after_stalls(now, base, every, stall), Outcome::Success)
    });
    let before = share(&run.sent, Duration::ZERO, slow_from, addr(3));
    assert!(before > 0.15, "before: {before}");
    // Its share in every 250 ms slice from 2 s after it slowed down stays under 10 %.
    let mut from = slow_from + Duration::from_secs(2);
    let mut worst: (f64, Duration) = (0.0, from);
    while from + 250 * MS <= Duration::from_secs(15) {
        let share = share(&run.sent, from, from + 250 * MS, addr(3));
        if share > worst.0 {
            worst = (share, from);
        }
        from += 250 * MS;
    }
    assert!(
        worst.0 < 0.10,
        "the slow endpoint took {:.0} % of the slice at {:?}",
        worst.0 * 100.0,
        worst.1
    );
}

#[test]
fn a_fast_failing_endpoint_does_not_attract_traffic_and_is_ejected_within_a_handful() {
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let run = simulate(&mut s, t0, 1000, Duration::from_secs(5), |to, _| {
        if to == addr(3) {
            (MS / 2, Outcome::Failure)
        } else {
            (10 * MS, Outcome::Success)
        }
    });
    let to_bad = run.sent.iter().filter(|s| s.to == addr(3)).count();
    assert!(
        to_bad <= 10,
        "{to_bad} requests reached the failing endpoint"
    );
    assert!(matches!(
        s.readings(t0 + Duration::from_secs(5))[2].state,
        Ejection::Ejected { .. }
    ));
}

#[test]
fn an_ejected_endpoint_is_probed_and_returns_when_it_recovers() {
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let recovers = Duration::from_secs(30);
    let run = simulate(&mut s, t0, 200, Duration::from_secs(120), |to, now| {
        if to == addr(1) && now < recovers {
            (MS, Outcome::ConnectFailure)
        } else {
            (5 * MS, Outcome::Success)
        }
    });
    let states: Vec<_> = run
        .transitions
        .iter()
        .map(|(at, to, t)| (*to, *t, *at))
        .collect();
    let [(a1, Transition::Ejected(_), ejected), (a2, Transition::Probing, probing), (a3, Transition::Returned, _)] =
        states[..]
    else {
        panic!("{states:?}");
    };
    assert!(a1 == addr(1) && a2 == addr(1) && a3 == addr(1));
    let ejection = probing - ejected;
    assert!(
        ejection >= Duration::from_secs(30) && ejection < Duration::from_secs(30) + 5 * MS,
        "{ejection:?}"
    );
    assert_eq!(share(&run.sent, ejected + MS, probing, addr(1)), 0.0);
    let late = share(
        &run.sent,
        probing + Duration::from_secs(30),
        Duration::from_secs(120),
        addr(1),
    );
    assert!(late > 0.1, "share after return: {late}");
}

#[test]
fn overload_answers_send_traffic_elsewhere_without_ejecting() {
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let run = simulate(&mut s, t0, 500, Duration::from_secs(5), |to, _| {
        if to == addr(1) {
            (MS, Outcome::Overloaded)
        } else {
            (5 * MS, Outcome::Success)
        }
    });
    assert!(
        share(
            &run.sent,
            Duration::from_secs(1),
            Duration::from_secs(5),
            addr(1)
        ) < 0.05
    );
    assert_eq!(s.readings(t0)[0].state, Ejection::Healthy);
}

#[test]
fn exclusion_and_weights_are_respected() {
    let t0 = Instant::now();
    let mut s = set(2, t0);
    for _ in 0..100 {
        let picked = s.pick(t0, |n| n - 1, &[addr(2)]).unwrap();
        assert_eq!(picked, addr(1));
        s.finish(picked, t0, MS, Outcome::Success);
    }
    assert_eq!(s.pick(t0, |_| 0, &[addr(1), addr(2)]), None);
    s.set_weight(addr(1), 0.0);
    assert_eq!(s.pick(t0, |_| 0, &[]), Some(addr(2)));
}

#[test]
fn sync_keeps_the_state_of_endpoints_that_stay() {
    let t0 = Instant::now();
    let mut s = set(2, t0);
    for _ in 0..5 {
        let a = addr(2);
        s.finish(a, t0, MS, Outcome::Failure);
    }
    s.sync(&[addr(2), addr(3)], t0);
    let r = s.readings(t0);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].addr, addr(2));
    assert!(matches!(r[0].state, Ejection::Ejected { .. }));
    assert_eq!(r[1].state, Ejection::Healthy);
}

#[test]
fn an_endpoint_that_joins_gets_its_share_at_once_at_light_load() {
    let t0 = Instant::now();
    let mut s = set(2, t0);
    // Two endpoints measured at 1 ms for a minute (their estimates have come down from the
    // default); a third joins.
    let minute = Duration::from_secs(60);
    simulate(&mut s, t0, 100, minute, |_, _| (MS, Outcome::Success));
    let t1 = t0 + minute;
    s.sync(&[addr(1), addr(2), addr(3)], t1);
    let run = simulate(&mut s, t1, 100, Duration::from_secs(5), |_, _| {
        (MS, Outcome::Success)
    });
    let joined = share(&run.sent, Duration::ZERO, Duration::from_secs(5), addr(3));
    assert!(
        joined > 0.15,
        "the newcomer's share in its first 5 s: {joined}"
    );
}

#[test]
fn endpoints_that_have_not_answered_yet_are_not_starved_by_those_that_have() {
    // A new upstream at light load (one request at a time, 20 per second): the endpoint that
    // answers first shows its true 1 ms at once, and the others start again from that, not
    // from the 30 ms default guess, so they get their share from the first second.
    let t0 = Instant::now();
    let mut s = set(3, t0);
    let run = simulate(&mut s, t0, 20, Duration::from_secs(1), |_, _| {
        (MS, Outcome::Success)
    });
    for i in 1..=3 {
        let served = run.sent.iter().filter(|s| s.to == addr(i)).count();
        assert!(served >= 3, "endpoint {i} served {served} of 20");
    }
    assert!(s
        .readings(t0 + Duration::from_secs(1))
        .iter()
        .all(|r| r.cost < 2 * MS));
}

#[test]
fn an_endpoint_never_tried_is_tried_before_the_measured_ones() {
    // A new upstream's first answer came slowly (a cold start: 80 ms), the next ones in 1 ms:
    // the endpoint not yet tried is still tried at once, not left at its guess.
    let t0 = Instant::now();
    let mut s = set(2, t0);
    let first = s.pick(t0, |_| 0, &[]).unwrap();
    s.finish(first, t0 + 80 * MS, 80 * MS, Outcome::Success);
    let other = if first == addr(1) { addr(2) } else { addr(1) };
    assert_eq!(s.pick(t0 + 81 * MS, |_| 0, &[]), Some(other));
}
