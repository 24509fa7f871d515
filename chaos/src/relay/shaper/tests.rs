use std::time::Duration;

use tokio::time::Instant;

use super::*;

const N: usize = 10_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Admits `N` datagrams of 100 bytes, all arriving at `now`.
fn run(seed: u64, faults: &LinkFaults, now: Instant) -> Vec<Admission> {
    let mut shaper = LinkShaper::new(seed);
    (0..N).map(|_| shaper.admit(faults, now, 100)).collect()
}

fn share(admissions: &[Admission], pick: impl Fn(&Admission) -> bool) -> f64 {
    admissions.iter().filter(|a| pick(a)).count() as f64 / admissions.len() as f64
}

fn delivered(a: &Admission) -> Option<Delivery> {
    match a {
        Admission::Deliver(d) => Some(*d),
        Admission::Drop(_) => None,
    }
}

#[test]
fn clean_link_delivers_at_once_exactly_once() {
    let now = Instant::now();
    for a in run(1, &LinkFaults::default(), now) {
        let d = delivered(&a).expect("a clean link drops nothing");
        assert_eq!((d.at, d.copy, d.held), (now, None, false));
    }
}

#[test]
fn loss_drops_its_share() {
    let faults = LinkFaults {
        loss: 0.3,
        ..LinkFaults::default()
    };
    for seed in [1, 2, 3] {
        let out = run(seed, &faults, Instant::now());
        let lost = share(&out, |a| *a == Admission::Drop(DropReason::Loss));
        assert!((lost - 0.3).abs() < 0.02, "seed {seed}: lost {lost}");
    }
}

#[test]
fn duplicate_copies_its_share() {
    let faults = LinkFaults {
        duplicate: 0.2,
        ..LinkFaults::default()
    };
    let out = run(7, &faults, Instant::now());
    let copied = share(&out, |a| delivered(a).is_some_and(|d| d.copy.is_some()));
    assert!((copied - 0.2).abs() < 0.02, "copied {copied}");
}

#[test]
fn partition_drops_everything_whatever_else_is_set() {
    let faults = LinkFaults {
        partitioned: true,
        duplicate: 1.0,
        delay: ms(5),
        bandwidth: Some(1_000_000),
        ..LinkFaults::default()
    };
    let out = run(3, &faults, Instant::now());
    assert!(out
        .iter()
        .all(|a| *a == Admission::Drop(DropReason::Partition)));
}

#[test]
fn out_of_range_shares_are_tolerated() {
    let now = Instant::now();
    let all = LinkFaults {
        loss: 1.5,
        ..LinkFaults::default()
    };
    assert_eq!(share(&run(1, &all, now), |a| delivered(a).is_none()), 1.0);
    let none = LinkFaults {
        loss: f64::NAN,
        duplicate: -1.0,
        reorder: f64::NAN,
        ..LinkFaults::default()
    };
    assert!(run(1, &none, now).iter().all(|a| *a
        == Admission::Deliver(Delivery {
            at: now,
            copy: None,
            held: false
        })));
}

#[test]
fn delay_and_jitter_stay_in_their_window_and_fill_it() {
    let now = Instant::now();
    let faults = LinkFaults {
        delay: ms(50),
        jitter: ms(20),
        duplicate: 0.5,
        ..LinkFaults::default()
    };
    let times: Vec<Duration> = run(5, &faults, now)
        .iter()
        .filter_map(delivered)
        .flat_map(|d| d.times().collect::<Vec<_>>())
        .map(|t| t - now)
        .collect();
    assert!(times.len() > N);
    assert!(times.iter().all(|t| (ms(30)..=ms(70)).contains(t)));
    assert!(times.iter().any(|t| *t < ms(32)) && times.iter().any(|t| *t > ms(68)));
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    assert!((ms(49)..=ms(51)).contains(&mean), "mean {mean:?}");
}

#[test]
fn jitter_wider_than_delay_is_clamped_at_zero() {
    let now = Instant::now();
    let faults = LinkFaults {
        delay: ms(5),
        jitter: ms(20),
        ..LinkFaults::default()
    };
    let out: Vec<Delivery> = run(9, &faults, now).iter().filter_map(delivered).collect();
    assert_eq!(out.len(), N);
    assert!(out.iter().all(|d| d.at - now <= ms(25)));
    // Clamping puts the whole lower part of the window (−15..0 ms) at zero: about 15/40.
    let at_once = out.iter().filter(|d| d.at == now).count() as f64 / N as f64;
    assert!((at_once - 0.375).abs() < 0.03, "at once {at_once}");
}

#[test]
fn reorder_holds_its_share_past_the_jitter_window() {
    let now = Instant::now();
    let faults = LinkFaults {
        delay: ms(20),
        jitter: ms(5),
        reorder: 0.25,
        ..LinkFaults::default()
    };
    let out: Vec<Delivery> = run(11, &faults, now).iter().filter_map(delivered).collect();
    let held: Vec<&Delivery> = out.iter().filter(|d| d.held).collect();
    let held_share = held.len() as f64 / N as f64;
    assert!((held_share - 0.25).abs() < 0.02, "held {held_share}");
    // Held ones arrive after every datagram that was not held, even one that came 10 ms later.
    let latest_unheld = out.iter().filter(|d| !d.held).map(|d| d.at).max();
    let earliest_held = held.iter().map(|d| d.at).min();
    assert!(earliest_held >= latest_unheld.map(|t| t + REORDER_HOLD));
}

#[test]
fn bandwidth_spaces_departures_at_the_rate_and_bounds_the_queue() {
    let now = Instant::now();
    let faults = LinkFaults {
        bandwidth: Some(100_000),
        ..LinkFaults::default()
    };
    let mut shaper = LinkShaper::new(1);
    // A burst of 1000-byte datagrams at one instant: one leaves every 10 ms, and the queue takes
    // one second's worth (100 000 bytes), so datagram 101 onward is dropped.
    let burst: Vec<Admission> = (0..150).map(|_| shaper.admit(&faults, now, 1000)).collect();
    for (i, a) in burst.iter().enumerate() {
        match (i, a) {
            (0..=99, Admission::Deliver(d)) => assert_eq!(d.at - now, ms(10) * (i as u32 + 1)),
            (100.., Admission::Drop(DropReason::Bandwidth)) => {}
            _ => panic!("datagram {i}: {a:?}"),
        }
    }
    // Once the queue has drained, a datagram only waits for its own bytes.
    let later = now + Duration::from_secs(5);
    let d = delivered(&shaper.admit(&faults, later, 500));
    assert_eq!(d.map(|d| d.at - later), Some(ms(5)));
}

#[test]
fn bandwidth_lets_a_slower_stream_through_unharmed() {
    let start = Instant::now();
    let faults = LinkFaults {
        bandwidth: Some(100_000),
        ..LinkFaults::default()
    };
    let mut shaper = LinkShaper::new(1);
    // 1000 bytes every 20 ms is half the rate: nothing queues, nothing drops.
    for i in 0..500u32 {
        let now = start + ms(20) * i;
        let d = delivered(&shaper.admit(&faults, now, 1000)).expect("under the cap");
        assert_eq!(d.at - now, ms(10));
    }
}

#[test]
fn bandwidth_queue_is_capped_at_one_mebibyte_and_zero_rate_drops_all() {
    let now = Instant::now();
    let fast = LinkFaults {
        bandwidth: Some(100_000_000),
        ..LinkFaults::default()
    };
    let mut shaper = LinkShaper::new(1);
    let taken = (0..2000)
        .map(|_| shaper.admit(&fast, now, 1000))
        .filter(|a| delivered(a).is_some())
        .count();
    assert_eq!(taken, (MAX_BACKLOG_BYTES / 1000) as usize);
    let zero = LinkFaults {
        bandwidth: Some(0),
        ..LinkFaults::default()
    };
    assert_eq!(
        shaper.admit(&zero, now, 1),
        Admission::Drop(DropReason::Bandwidth)
    );
}

#[test]
fn same_seed_same_decisions_other_seed_others() {
    let now = Instant::now();
    let faults = LinkFaults {
        loss: 0.2,
        delay: ms(10),
        jitter: ms(10),
        reorder: 0.1,
        duplicate: 0.1,
        ..LinkFaults::default()
    };
    assert_eq!(run(42, &faults, now), run(42, &faults, now));
    assert_ne!(run(42, &faults, now), run(43, &faults, now));
}

#[test]
fn loss_decisions_do_not_depend_on_other_faults() {
    let now = Instant::now();
    let lossy = LinkFaults {
        loss: 0.3,
        ..LinkFaults::default()
    };
    let busy = LinkFaults {
        jitter: ms(3),
        duplicate: 0.5,
        reorder: 0.5,
        ..lossy
    };
    let lost =
        |out: Vec<Admission>| -> Vec<bool> { out.iter().map(|a| delivered(a).is_none()).collect() };
    assert_eq!(lost(run(8, &lossy, now)), lost(run(8, &busy, now)));
}
