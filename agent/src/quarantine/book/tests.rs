use super::*;

const T0_MS: u64 = 1_700_000_000_000;

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

struct Clock {
    origin: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.origin + Duration::from_secs_f64(secs)
    }

    fn ms(&self, secs: f64) -> u64 {
        T0_MS + (secs * 1000.0) as u64
    }
}

fn record_n(book: &mut ObservationBook, at: Instant, peer: &str, event: PeerEvent, n: u32) {
    for _ in 0..n {
        book.record(&node(peer), event, at);
    }
}

fn reports_at(book: &mut ObservationBook, clock: &Clock, secs: f64) -> Vec<PeerReport> {
    book.reports(clock.at(secs), clock.ms(secs))
}

fn signals(reports: &[PeerReport]) -> Vec<(String, AnomalySignal)> {
    reports
        .iter()
        .map(|r| (r.subject.to_string(), r.signal))
        .collect()
}

#[test]
fn a_failing_peer_is_reported_against_the_healthy_ones() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    record_n(&mut book, clock.at(1.0), "bad", PeerEvent::RequestFailed, 5);
    record_n(&mut book, clock.at(1.0), "bad", PeerEvent::RequestOk, 1);
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 50);
    let reports = reports_at(&mut book, &clock, 2.0);
    assert_eq!(
        signals(&reports),
        [("bad".to_owned(), AnomalySignal::ErrorRate)]
    );
    let report = &reports[0];
    assert!((report.value - 5.0 / 6.0).abs() < 1e-6);
    assert_eq!(report.reference, 0.0);
    assert_eq!(report.since_ms, clock.ms(2.0));
}

#[test]
fn light_traffic_is_never_anomalous() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    // Four failures of four attempts: below both minimums.
    record_n(&mut book, clock.at(1.0), "bad", PeerEvent::RequestFailed, 4);
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 50);
    assert!(reports_at(&mut book, &clock, 2.0).is_empty());
    // Many attempts but only four failures: still nothing.
    record_n(&mut book, clock.at(2.0), "bad", PeerEvent::RequestOk, 2);
    assert!(reports_at(&mut book, &clock, 3.0).is_empty());
}

#[test]
fn a_share_is_only_anomalous_against_other_peers() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    // The only peer: nothing to compare with.
    record_n(
        &mut book,
        clock.at(1.0),
        "bad",
        PeerEvent::RequestFailed,
        20,
    );
    assert!(reports_at(&mut book, &clock, 2.0).is_empty());
    // Every peer fails alike: the trouble is probably here, not there.
    record_n(
        &mut book,
        clock.at(2.0),
        "other",
        PeerEvent::RequestFailed,
        20,
    );
    assert!(reports_at(&mut book, &clock, 3.0).is_empty());
    // A peer with too few attempts is no reference either.
    let mut book = ObservationBook::new(clock.origin);
    record_n(
        &mut book,
        clock.at(1.0),
        "bad",
        PeerEvent::RequestFailed,
        20,
    );
    record_n(&mut book, clock.at(1.0), "idle", PeerEvent::RequestOk, 4);
    assert!(reports_at(&mut book, &clock, 2.0).is_empty());
}

#[test]
fn a_share_must_be_far_above_the_median() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    // 60 % against a mesh at 20 %: three times, not four.
    record_n(
        &mut book,
        clock.at(1.0),
        "worse",
        PeerEvent::RequestFailed,
        6,
    );
    record_n(&mut book, clock.at(1.0), "worse", PeerEvent::RequestOk, 4);
    for peer in ["a", "b", "c"] {
        record_n(&mut book, clock.at(1.0), peer, PeerEvent::RequestFailed, 2);
        record_n(&mut book, clock.at(1.0), peer, PeerEvent::RequestOk, 8);
    }
    assert!(reports_at(&mut book, &clock, 2.0).is_empty());
}

#[test]
fn resets_are_their_own_signal() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    record_n(&mut book, clock.at(1.0), "flaky", PeerEvent::Reset, 8);
    record_n(&mut book, clock.at(1.0), "flaky", PeerEvent::RequestOk, 2);
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 10);
    assert_eq!(
        signals(&reports_at(&mut book, &clock, 2.0)),
        [("flaky".to_owned(), AnomalySignal::ResetRate)]
    );
}

#[test]
fn reports_end_when_the_window_passes_and_since_holds_until_then() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    record_n(&mut book, clock.at(1.0), "bad", PeerEvent::RequestFailed, 5);
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 10);
    let first = reports_at(&mut book, &clock, 2.0);
    assert_eq!(first.len(), 1);
    // Still reported later in the window, since the first sight.
    record_n(&mut book, clock.at(30.0), "good", PeerEvent::RequestOk, 10);
    let later = reports_at(&mut book, &clock, 40.0);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].since_ms, first[0].since_ms);
    // A minute after the failures, they are gone.
    assert!(reports_at(&mut book, &clock, 66.0).is_empty());
    // A new anomaly starts a new `since`.
    record_n(
        &mut book,
        clock.at(70.0),
        "bad",
        PeerEvent::RequestFailed,
        5,
    );
    record_n(&mut book, clock.at(70.0), "good", PeerEvent::RequestOk, 10);
    let again = reports_at(&mut book, &clock, 71.0);
    assert_eq!(again[0].since_ms, clock.ms(71.0));
}

#[test]
fn violations_and_refusals_need_their_minimum() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    record_n(
        &mut book,
        clock.at(1.0),
        "liar",
        PeerEvent::ProtocolViolation,
        2,
    );
    record_n(
        &mut book,
        clock.at(1.0),
        "forger",
        PeerEvent::HandshakeViolation,
        2,
    );
    record_n(
        &mut book,
        clock.at(1.0),
        "caller",
        PeerEvent::PolicyRefusal,
        9,
    );
    assert!(reports_at(&mut book, &clock, 2.0).is_empty());
    record_n(
        &mut book,
        clock.at(2.0),
        "liar",
        PeerEvent::ProtocolViolation,
        1,
    );
    record_n(
        &mut book,
        clock.at(2.0),
        "forger",
        PeerEvent::HandshakeViolation,
        1,
    );
    record_n(
        &mut book,
        clock.at(2.0),
        "caller",
        PeerEvent::PolicyRefusal,
        1,
    );
    assert_eq!(
        signals(&reports_at(&mut book, &clock, 3.0)),
        [
            ("caller".to_owned(), AnomalySignal::PolicyRefusals),
            ("forger".to_owned(), AnomalySignal::HandshakeViolation),
            ("liar".to_owned(), AnomalySignal::ProtocolViolation),
        ]
    );
}

/// `rate` requests per second from `peer` for every second in `from..to`.
fn traffic(book: &mut ObservationBook, clock: &Clock, peer: &str, rate: u32, from: u32, to: u32) {
    for s in from..to {
        record_n(book, clock.at(f64::from(s)), peer, PeerEvent::Served, rate);
        if s % 5 == 0 {
            // The reporter runs every second; every five is enough to fold the history.
            book.reports(clock.at(f64::from(s)), clock.ms(f64::from(s)));
        }
    }
}

#[test]
fn traffic_far_above_its_own_history_is_a_surge() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    traffic(&mut book, &clock, "steady", 10, 0, 180);
    assert!(reports_at(&mut book, &clock, 180.0).is_empty());
    traffic(&mut book, &clock, "steady", 150, 180, 190);
    let reports = reports_at(&mut book, &clock, 189.5);
    assert_eq!(
        signals(&reports),
        [("steady".to_owned(), AnomalySignal::TrafficSurge)]
    );
    assert!(reports[0].value >= 100.0);
    assert!((reports[0].reference - 10.0).abs() < 2.0, "{reports:?}");
}

#[test]
fn a_new_caller_or_a_modest_rise_is_no_surge() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    // A caller that starts calling has no history to surge above.
    traffic(&mut book, &clock, "new", 300, 0, 20);
    assert!(reports_at(&mut book, &clock, 20.0).is_empty());
    // Steady, then three times as much.
    traffic(&mut book, &clock, "steady", 50, 20, 200);
    traffic(&mut book, &clock, "steady", 150, 200, 210);
    assert!(reports_at(&mut book, &clock, 209.0).is_empty());
    // A trickle that jumps is below the history floor.
    let mut book = ObservationBook::new(clock.origin);
    traffic(&mut book, &clock, "trickle", 1, 0, 180);
    traffic(&mut book, &clock, "trickle", 200, 180, 190);
    assert!(reports_at(&mut book, &clock, 189.0).is_empty());
}

#[test]
fn a_restarted_or_forgotten_peer_starts_clean() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    book.record(&node("bad"), PeerEvent::RequestOk, clock.at(0.0));
    book.follow_generation(&node("bad"), 1);
    record_n(&mut book, clock.at(1.0), "bad", PeerEvent::RequestFailed, 5);
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 10);
    assert_eq!(reports_at(&mut book, &clock, 2.0).len(), 1);
    book.follow_generation(&node("bad"), 1);
    assert_eq!(reports_at(&mut book, &clock, 2.0).len(), 1);
    book.follow_generation(&node("bad"), 2);
    assert!(reports_at(&mut book, &clock, 3.0).is_empty());
    record_n(&mut book, clock.at(4.0), "bad", PeerEvent::RequestFailed, 5);
    assert_eq!(reports_at(&mut book, &clock, 5.0).len(), 1);
    book.forget(&node("bad"));
    assert!(reports_at(&mut book, &clock, 5.0).is_empty());
}

#[test]
fn reports_stay_within_the_count_and_byte_budget() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    let long = "n".repeat(100);
    for i in 0..60 {
        let peer = format!("{long}{i}");
        record_n(
            &mut book,
            clock.at(1.0),
            &peer,
            PeerEvent::ProtocolViolation,
            3 + i,
        );
    }
    // Most of the mesh behaves: the median violation rate stays zero.
    for i in 0..100 {
        record_n(
            &mut book,
            clock.at(1.0),
            &format!("good{i}"),
            PeerEvent::RequestOk,
            10,
        );
    }
    let reports = reports_at(&mut book, &clock, 2.0);
    assert!(!reports.is_empty());
    assert!(reports.len() <= MAX_REPORTS_PER_NODE);
    let encoded = PeerObservations {
        reports: reports.clone(),
    }
    .encode()
    .unwrap();
    assert!(encoded.len() <= OBSERVATIONS_BUDGET);
    // The most severe were kept.
    assert!(
        reports
            .iter()
            .any(|r| r.subject.as_str() == format!("{long}59")),
        "{reports:?}"
    );
}

#[test]
fn memory_is_bounded_by_the_window() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    for s in 0..600 {
        book.record(&node("busy"), PeerEvent::RequestOk, clock.at(f64::from(s)));
    }
    let record = &book.peers[&node("busy")];
    assert!(record.buckets.len() <= WINDOW_BUCKETS as usize);
    book.reports(clock.at(700.0), clock.ms(700.0));
    assert_eq!(book.peers(), 0, "an idle peer is forgotten");
}

#[test]
fn a_peer_that_turns_bad_after_serving_well_is_reported_once_ejected_again() {
    let clock = Clock::new();
    let mut book = ObservationBook::new(clock.origin);
    // It served 200 requests well, then failed 5 and was ejected: its error share in the
    // window stays far below the threshold, so the share alone never reports it.
    record_n(
        &mut book,
        clock.at(1.0),
        "turned",
        PeerEvent::RequestOk,
        200,
    );
    record_n(&mut book, clock.at(1.0), "good", PeerEvent::RequestOk, 200);
    record_n(
        &mut book,
        clock.at(20.0),
        "turned",
        PeerEvent::RequestFailed,
        5,
    );
    record_n(&mut book, clock.at(20.0), "turned", PeerEvent::Ejected, 1);
    record_n(&mut book, clock.at(20.0), "good", PeerEvent::RequestOk, 50);
    assert!(
        reports_at(&mut book, &clock, 21.0).is_empty(),
        "one ejection is no anomaly"
    );
    // Its half-open probe fails: ejected again.
    record_n(
        &mut book,
        clock.at(50.0),
        "turned",
        PeerEvent::RequestFailed,
        1,
    );
    record_n(&mut book, clock.at(50.0), "turned", PeerEvent::Ejected, 1);
    record_n(&mut book, clock.at(50.0), "good", PeerEvent::RequestOk, 50);
    let reports = reports_at(&mut book, &clock, 51.0);
    assert_eq!(
        signals(&reports),
        [("turned".to_owned(), AnomalySignal::RepeatedEjection)]
    );
    assert_eq!(reports[0].value, 2.0);
    assert_eq!(reports[0].reference, 0.0);
    // A minute after the last ejection, the evidence has aged out.
    assert!(reports_at(&mut book, &clock, 115.0).is_empty());
}

#[test]
fn ejections_are_no_anomaly_when_every_peer_is_ejected_or_none_is_compared() {
    let clock = Clock::new();
    // Alone: nothing to compare with.
    let mut book = ObservationBook::new(clock.origin);
    record_n(
        &mut book,
        clock.at(1.0),
        "only",
        PeerEvent::RequestFailed,
        10,
    );
    record_n(&mut book, clock.at(1.0), "only", PeerEvent::Ejected, 3);
    assert!(reports_at(&mut book, &clock, 2.0)
        .iter()
        .all(|r| r.signal != AnomalySignal::RepeatedEjection));
    // Every peer ejected as often: this agent is more likely the one in trouble.
    let mut book = ObservationBook::new(clock.origin);
    for peer in ["a", "b", "c"] {
        record_n(&mut book, clock.at(1.0), peer, PeerEvent::RequestOk, 20);
        record_n(&mut book, clock.at(1.0), peer, PeerEvent::RequestFailed, 5);
        record_n(&mut book, clock.at(1.0), peer, PeerEvent::Ejected, 2);
    }
    assert!(reports_at(&mut book, &clock, 2.0)
        .iter()
        .all(|r| r.signal != AnomalySignal::RepeatedEjection));
}
