use std::net::{Ipv4Addr, SocketAddr};

use plexus_protocol::{
    AnomalySignal, AppProtocol, DependencyEdge, NodeSummary, ServiceName, ServiceSummary,
};

use super::*;

const S: Duration = Duration::from_secs(1);

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

/// A member hosting `hosts`, calling `calls`, and reporting `reports` (subjects with an error
/// rate of 1 against 0).
fn member(id: &str, hosts: &[&str], calls: &[&str], reports: &[&str]) -> Member {
    Member {
        node_id: id.to_owned(),
        generation: 1,
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000)),
        state: MemberState::Alive,
        local: false,
        heartbeat_age: Duration::ZERO,
        summary: Some(NodeSummary {
            zone: String::new(),
            agent_version: "0".into(),
            host_cpu_permille: 0,
            host_memory_permille: 0,
            agent_cpu_permille: 0,
            agent_rss_kib: 0,
            cert_serial: vec![0x0a, id.len() as u8],
            cert_not_after: 0,
            leaving: false,
            voter_eligible: false,
            services: hosts
                .iter()
                .map(|name| ServiceSummary {
                    name: svc(name),
                    version: String::new(),
                    ready: true,
                    requests_per_sec: 1.0,
                    errors_per_sec: 0.0,
                    p50_us: 1,
                    p99_us: 1,
                    in_flight: 0,
                    capacity: 0,
                    protocol: AppProtocol::Http,
                    concurrency_limit: 10,
                    shed_per_sec: 0.0,
                })
                .collect(),
        }),
        edges: calls
            .iter()
            .map(|callee| DependencyEdge {
                caller: id.to_owned(),
                callee: svc(callee),
                requests_per_sec: 10.0,
                errors_per_sec: 0.0,
            })
            .collect(),
        consensus: None,
        observations: reports.iter().map(|s| report(s)).collect(),
    }
}

fn report(subject: &str) -> PeerReport {
    PeerReport {
        subject: node(subject),
        signal: AnomalySignal::ErrorRate,
        value: 1.0,
        reference: 0.0,
        since_ms: 1,
    }
}

/// Callers `c1..=callers` of `api`, which `t` and `ok` host; `reporters` of them report `t`.
fn mesh(callers: usize, reporters: usize) -> MeshView {
    let mut members = vec![
        member("ok", &["api"], &[], &[]),
        member("t", &["api"], &[], &[]),
    ];
    for i in 1..=callers {
        let reports: &[&str] = if i <= reporters { &["t"] } else { &[] };
        members.push(member(&format!("c{i}"), &[], &["api"], reports));
    }
    MeshView { members }
}

fn proposer() -> Proposer {
    Proposer {
        node: node("leader"),
        now_ms: 1_700_000_000_000,
    }
}

#[derive(Default)]
struct Log {
    state: CommittedState,
}

impl Log {
    fn commit(&mut self, decisions: &[Decision]) {
        for decision in decisions {
            decision.validate().expect("a valid decision");
            let index = self.state.applied_index + 1;
            self.state.apply(index, 1, decision);
        }
    }
}

fn quarantines(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter_map(|d| match &d.kind {
            DecisionKind::Quarantine { node, .. } => Some(node.to_string()),
            _ => None,
        })
        .collect()
}

fn releases(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter_map(|d| match &d.kind {
            DecisionKind::Release { node } => Some(node.to_string()),
            _ => None,
        })
        .collect()
}

/// Runs `ticks` one-second ticks from `start` and returns every decision, committing each.
fn run(
    verdict: &mut QuarantineVerdict,
    view: &MeshView,
    log: &mut Log,
    start: Instant,
    ticks: u32,
) -> Vec<Decision> {
    let mut all = Vec::new();
    for i in 0..ticks {
        let out = verdict.decide(view, &log.state, &proposer(), start + S * i);
        log.commit(&out);
        all.extend(out);
    }
    all
}

#[test]
fn one_lying_observer_never_quarantines() {
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let mut log = Log::default();
    let view = mesh(3, 1);
    let decisions = run(&mut verdict, &view, &mut log, Instant::now(), 300);
    assert!(decisions.is_empty(), "{decisions:?}");
    let suspicion = &verdict.suspicions()[0];
    assert_eq!(suspicion.node.as_str(), "t");
    assert_eq!(suspicion.observers, [node("c1")]);
    assert_eq!(suspicion.needed, 2);
    // Even a configured minimum of 1 is raised to 2.
    let settings = QuarantineSettings {
        min_observers: Some(1),
        ..QuarantineSettings::default()
    };
    let mut verdict = QuarantineVerdict::new(settings);
    assert!(run(&mut verdict, &view, &mut log, Instant::now(), 10).is_empty());
}

#[test]
fn distinct_observers_from_a_majority_of_its_peers_quarantine_it() {
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let mut log = Log::default();
    let view = mesh(3, 2);
    let decisions = run(&mut verdict, &view, &mut log, Instant::now(), 3);
    assert_eq!(quarantines(&decisions), ["t"], "proposed once");
    let decision = &decisions[0];
    let DecisionKind::Quarantine {
        serials, observers, ..
    } = &decision.kind
    else {
        unreachable!()
    };
    assert_eq!(observers, &[node("c1"), node("c2")]);
    assert_eq!(serials, &["0a01"]);
    assert_eq!(decision.evidence.len(), 2, "one report per observer");
    assert!(decision
        .evidence
        .iter()
        .all(|e| e.subject == "t" && e.signal == "error_rate" && e.value == 1.0));
    assert!(
        decision.reason.contains("2 distinct observers"),
        "{}",
        decision.reason
    );
    let record = &log.state.trust.quarantined[&node("t")];
    assert_eq!(record.observers, [node("c1"), node("c2")]);
    assert!(log.state.trust.denies(&node("t"), "0a01"));
}

#[test]
fn the_majority_is_of_the_peers_that_talk_to_it() {
    let mut log = Log::default();
    // Five callers: two reports are not a majority, three are.
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    assert!(run(&mut verdict, &mesh(5, 2), &mut log, Instant::now(), 5).is_empty());
    assert_eq!(verdict.suspicions()[0].needed, 3);
    assert_eq!(verdict.suspicions()[0].talking, 5);
    let decisions = run(&mut verdict, &mesh(5, 3), &mut log, Instant::now(), 1);
    assert_eq!(quarantines(&decisions), ["t"]);
    // Peers that do not talk to it do not raise the bar: `ok` calls nothing of `t`'s.
    // A configured minimum replaces the majority.
    let settings = QuarantineSettings {
        min_observers: Some(4),
        ..QuarantineSettings::default()
    };
    let mut verdict = QuarantineVerdict::new(settings);
    let mut log = Log::default();
    assert!(run(&mut verdict, &mesh(5, 3), &mut log, Instant::now(), 5).is_empty());
    assert_eq!(verdict.suspicions()[0].needed, 4);
}

#[test]
fn a_node_it_calls_counts_as_talking_to_it() {
    let view = MeshView {
        members: vec![
            member("t", &[], &["db"], &[]),
            member("db1", &["db"], &[], &["t"]),
            member("db2", &["db"], &[], &["t"]),
            member("db3", &["db"], &[], &[]),
            member("db4", &["db"], &[], &[]),
            member("x", &[], &[], &[]),
            member("y", &[], &[], &[]),
        ],
    };
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let mut log = Log::default();
    assert!(run(&mut verdict, &view, &mut log, Instant::now(), 2).is_empty());
    assert_eq!(verdict.suspicions()[0].talking, 4);
    assert_eq!(verdict.suspicions()[0].needed, 3);
}

#[test]
fn observers_count_only_within_the_window() {
    let settings = QuarantineSettings::default();
    let window = settings.window;
    let start = Instant::now();
    let mut log = Log::default();
    let first = mesh(3, 1);
    let mut second = mesh(3, 0);
    second.members[3].observations = vec![report("t")]; // c2
    let mut verdict = QuarantineVerdict::new(settings);
    assert!(verdict
        .decide(&first, &log.state, &proposer(), start)
        .is_empty());
    // c1 has stopped reporting; c2 reports after the window: one observer at a time.
    let late = start + window + S;
    assert!(verdict
        .decide(&second, &log.state, &proposer(), late)
        .is_empty());
    assert_eq!(verdict.suspicions()[0].observers, [node("c2")]);
    // Within the window, observers need not report at the same moment.
    let mut verdict = QuarantineVerdict::new(settings);
    assert!(verdict
        .decide(&first, &log.state, &proposer(), start)
        .is_empty());
    let out = verdict.decide(&second, &log.state, &proposer(), start + window - S);
    assert_eq!(quarantines(&out), ["t"]);
    log.commit(&out);
}

#[test]
fn never_more_than_a_share_of_the_mesh() {
    // Seven members: at most two quarantined at once (one third).
    let mut view = mesh(4, 4);
    for m in &mut view.members[2..] {
        m.observations = vec![report("t"), report("ok"), report("u")];
    }
    view.members.push(member("u", &["api"], &[], &[]));
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let mut log = Log::default();
    let decisions = run(&mut verdict, &view, &mut log, Instant::now(), 5);
    assert_eq!(quarantines(&decisions).len(), 2, "{decisions:?}");
    assert_eq!(log.state.trust.quarantined.len(), 2);
    let held = verdict
        .suspicions()
        .iter()
        .find(|s| !log.state.trust.quarantined.contains_key(&s.node))
        .unwrap();
    assert!(
        held.held.as_deref().unwrap().contains("at most 2 of 7"),
        "{held:?}"
    );
}

#[test]
fn never_a_voter_majority_nor_the_leader() {
    let view = MeshView {
        members: vec![
            member("leader", &["api"], &[], &[]),
            member("v1", &["api"], &[], &[]),
            member("v2", &["api"], &[], &[]),
            member("c1", &[], &["api"], &["v1", "v2", "leader"]),
            member("c2", &[], &["api"], &["v1", "v2", "leader"]),
            member("c3", &[], &["api"], &["v1", "v2", "leader"]),
        ],
    };
    let mut log = Log::default();
    log.state.voters = vec![node("leader"), node("v1"), node("v2")];
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let decisions = run(&mut verdict, &view, &mut log, Instant::now(), 5);
    assert_eq!(
        quarantines(&decisions),
        ["v1"],
        "one voter of three at most"
    );
    let held: BTreeMap<String, String> = verdict
        .suspicions()
        .iter()
        .filter_map(|s| Some((s.node.to_string(), s.held.clone()?)))
        .collect();
    assert!(held["leader"].contains("leader"), "{held:?}");
    assert!(held["v2"].contains("voters"), "{held:?}");
}

#[test]
fn a_quarantined_observer_is_not_heard_and_a_dead_node_is_not_quarantined() {
    let mut view = mesh(3, 2);
    let mut log = Log::default();
    log.commit(&[release_free_quarantine("c1")]);
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    assert!(run(&mut verdict, &view, &mut log, Instant::now(), 3).is_empty());
    assert_eq!(verdict.suspicions()[0].observers, [node("c2")]);

    let mut log = Log::default();
    view.members[1].state = MemberState::Dead;
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    assert!(run(&mut verdict, &view, &mut log, Instant::now(), 3).is_empty());
    assert_eq!(
        verdict.suspicions()[0].held.as_deref(),
        Some("dead in gossip")
    );
}

fn release_free_quarantine(name: &str) -> Decision {
    proposer().decision(
        DecisionKind::Quarantine {
            node: node(name),
            serials: vec![],
            observers: vec![node("x"), node("y")],
        },
        "test".into(),
        vec![],
    )
}

#[test]
fn a_restarted_node_starts_clean() {
    let mut view = mesh(3, 1);
    let start = Instant::now();
    let mut log = Log::default();
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    assert!(run(&mut verdict, &view, &mut log, start, 2).is_empty());
    // `t` restarts; c2 reports it at once (about the old process): ignored for a while.
    view.members[1].generation = 2;
    view.members[3].observations = vec![report("t")];
    let quiet = run(&mut verdict, &view, &mut log, start + S * 2, 4);
    assert!(quiet.is_empty(), "{quiet:?}");
    let later = run(
        &mut verdict,
        &view,
        &mut log,
        start + S * 2 + QUIET_AFTER_CHANGE,
        1,
    );
    assert_eq!(quarantines(&later), ["t"]);
}

#[test]
fn release_after_a_clean_probation_and_longer_the_next_time() {
    let settings = QuarantineSettings::default();
    let probation = settings.probation;
    let start = Instant::now();
    let mut log = Log::default();
    let mut verdict = QuarantineVerdict::new(settings);
    let reporting = mesh(3, 2);
    let silent = mesh(3, 0);
    assert_eq!(
        quarantines(&run(&mut verdict, &reporting, &mut log, start, 1)),
        ["t"]
    );
    // Reports in flight right after the verdict do not hold the release back.
    run(&mut verdict, &reporting, &mut log, start + S, 2);
    assert!(run(&mut verdict, &silent, &mut log, start + S * 3, 50).is_empty());
    let released_at = start + S + probation;
    let out = run(&mut verdict, &silent, &mut log, released_at, 1);
    assert_eq!(releases(&out), ["t"]);
    assert!(log.state.trust.quarantined.is_empty());
    run(&mut verdict, &silent, &mut log, released_at + S, 1);

    // Quarantined again: the probation doubles, and fresh reports hold the release back.
    let again = released_at + S * 10;
    assert_eq!(
        quarantines(&run(&mut verdict, &reporting, &mut log, again, 1)),
        ["t"]
    );
    let t1 = again + S;
    assert!(run(&mut verdict, &silent, &mut log, t1, 1).is_empty());
    assert!(run(&mut verdict, &silent, &mut log, t1 + probation + S, 1).is_empty());
    run(
        &mut verdict,
        &reporting,
        &mut log,
        t1 + probation * 2 - S,
        1,
    );
    let held = run(&mut verdict, &silent, &mut log, t1 + probation * 2 + S, 1);
    assert!(releases(&held).is_empty(), "a fresh report keeps it");
    // Once that report has left the window: released.
    let window = QuarantineSettings::default().window;
    let out = run(
        &mut verdict,
        &silent,
        &mut log,
        t1 + probation * 2 + window,
        1,
    );
    assert_eq!(releases(&out), ["t"]);
}

#[test]
fn a_quarantine_released_before_the_next_tick_still_spends_its_evidence() {
    let start = Instant::now();
    let mut log = Log::default();
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let reporting = mesh(3, 2);
    let silent = mesh(3, 0);
    assert_eq!(
        quarantines(&run(&mut verdict, &reporting, &mut log, start, 1)),
        ["t"]
    );
    // The operator releases it before this leader ticks again: it never sees the quarantine.
    let release = release_decision(&log.state, &node("t"), node("leader"), 5).unwrap();
    log.commit(&[release]);
    assert!(log.state.trust.quarantined.is_empty());
    // The reports that led to the verdict are spent, though still within the window (and the
    // proposal is no longer awaited after RESEND_AFTER): no second verdict on them.
    let after = run(&mut verdict, &silent, &mut log, start + S, 25);
    assert!(after.is_empty(), "{after:?}");
    // New reports, after the quiet time, count again.
    let again = run(&mut verdict, &reporting, &mut log, start + S * 26, 1);
    assert_eq!(quarantines(&again), ["t"]);
}

#[test]
fn a_proposal_is_not_repeated_while_it_commits() {
    let mut verdict = QuarantineVerdict::new(QuarantineSettings::default());
    let state = CommittedState::default();
    let view = mesh(3, 3);
    let start = Instant::now();
    assert_eq!(
        quarantines(&verdict.decide(&view, &state, &proposer(), start)),
        ["t"]
    );
    assert!(verdict
        .decide(&view, &state, &proposer(), start + S)
        .is_empty());
    assert_eq!(
        quarantines(&verdict.decide(&view, &state, &proposer(), start + RESEND_AFTER + S)),
        ["t"],
        "proposed again once presumed lost"
    );
}

#[test]
fn the_operator_releases_only_a_quarantined_node() {
    let mut log = Log::default();
    let refused = release_decision(&log.state, &node("t"), node("leader"), 5);
    assert!(refused.unwrap_err().contains("not quarantined"));
    log.commit(&[release_free_quarantine("t")]);
    let release = release_decision(&log.state, &node("t"), node("leader"), 5).unwrap();
    assert_eq!(release.kind, DecisionKind::Release { node: node("t") });
    assert_eq!(release.proposer, node("leader"));
    assert!(release.reason.contains("operator"));
    log.commit(&[release]);
    assert!(log.state.trust.quarantined.is_empty());
}
