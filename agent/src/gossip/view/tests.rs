use plexus_protocol::ServiceSummary;

use super::*;

fn summary(service: &str, ready: bool, leaving: bool) -> NodeSummary {
    NodeSummary {
        zone: "z1".into(),
        agent_version: "0.1.0".into(),
        host_cpu_permille: 0,
        host_memory_permille: 0,
        agent_cpu_permille: 0,
        agent_rss_kib: 0,
        cert_serial: vec![1],
        cert_not_after: 0,
        leaving,
        voter_eligible: false,
        services: vec![ServiceSummary {
            name: ServiceName::new(service).unwrap(),
            version: "v1".into(),
            ready,
            requests_per_sec: 1.0,
            errors_per_sec: 0.0,
            p50_us: 1,
            p99_us: 2,
            in_flight: 0,
            capacity: 10,
            protocol: plexus_protocol::AppProtocol::Http,
            concurrency_limit: 10,
            shed_per_sec: 0.0,
        }],
    }
}

fn node(
    id: &str,
    port: u16,
    heartbeat: u64,
    live: bool,
    summary: Option<NodeSummary>,
) -> NodeObservation {
    NodeObservation {
        node_id: id.into(),
        generation: 1,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        heartbeat,
        live,
        summary,
        edges: vec![],
        consensus: None,
        observations: vec![],
    }
}

fn api() -> ServiceName {
    ServiceName::new("api").unwrap()
}

#[test]
fn only_live_ready_verified_members_are_endpoints() {
    let mut membership = Membership::new("me", Duration::from_secs(2));
    let t0 = Instant::now();
    let (view, _) = membership.observe(
        t0,
        vec![
            node("me", 1, 1, true, None),
            node("a", 2, 1, true, Some(summary("api", true, false))),
            node("b", 3, 1, true, Some(summary("api", false, false))),
            node("c", 4, 1, false, Some(summary("api", true, false))),
            node("d", 5, 1, true, None),
            node("e", 6, 1, true, Some(summary("api", true, true))),
        ],
    );
    assert_eq!(
        view.endpoints(&api()),
        vec![SocketAddr::from(([127, 0, 0, 1], 2))]
    );
    assert_eq!(
        view.service_endpoints(&api()).len(),
        2,
        "unready b is listed, not routed"
    );
    assert_eq!(
        view.live_peers(),
        3,
        "a, b and d are live; c is dead, e left"
    );
    let states: Vec<_> = view
        .members
        .iter()
        .map(|m| (m.node_id.as_str(), m.state))
        .collect();
    assert!(states.contains(&("c", MemberState::Dead)));
    assert!(states.contains(&("e", MemberState::Left)));
}

#[test]
fn silence_is_suspected_then_death_and_leave_are_transitions() {
    let mut membership = Membership::new("me", Duration::from_secs(2));
    let t0 = Instant::now();
    let up = |hb, live| vec![node("a", 2, hb, live, Some(summary("api", true, false)))];
    let (_, transitions) = membership.observe(t0, up(1, true));
    assert!(transitions.is_empty());
    let (view, transitions) = membership.observe(t0 + Duration::from_secs(3), up(1, true));
    assert_eq!(transitions, vec![("a".to_owned(), MemberState::Suspected)]);
    assert_eq!(
        view.endpoints(&api()).len(),
        1,
        "suspected members are still routed"
    );
    let (_, transitions) = membership.observe(t0 + Duration::from_secs(4), up(2, true));
    assert_eq!(transitions, vec![("a".to_owned(), MemberState::Alive)]);
    let (view, transitions) = membership.observe(t0 + Duration::from_secs(9), up(2, false));
    assert_eq!(transitions, vec![("a".to_owned(), MemberState::Dead)]);
    assert!(view.endpoints(&api()).is_empty());
    membership.left("a", 1);
    let (view, transitions) = membership.observe(t0 + Duration::from_secs(10), up(3, true));
    assert_eq!(transitions, vec![("a".to_owned(), MemberState::Left)]);
    assert!(view.endpoints(&api()).is_empty());
}

#[test]
fn a_restart_is_a_new_generation_and_the_old_leave_no_longer_applies() {
    let mut membership = Membership::new("me", Duration::from_secs(2));
    let t0 = Instant::now();
    membership.observe(
        t0,
        vec![node("a", 2, 1, true, Some(summary("api", true, false)))],
    );
    membership.left("a", 1);
    let mut old = node("a", 2, 1, false, None);
    old.generation = 1;
    let mut new = node("a", 2, 1, true, Some(summary("api", true, false)));
    new.generation = 2;
    let (view, _) = membership.observe(t0 + Duration::from_secs(1), vec![old, new]);
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].generation, 2);
    assert_eq!(view.members[0].state, MemberState::Alive);
}

#[test]
fn the_graph_sums_edges_of_live_members() {
    let mut membership = Membership::new("me", Duration::from_secs(2));
    let edge = |caller: &str, rate| DependencyEdge {
        caller: caller.into(),
        callee: api(),
        requests_per_sec: rate,
        errors_per_sec: rate / 2.0,
    };
    let mut a = node("a", 2, 1, true, None);
    a.edges = vec![edge("web", 2.0)];
    let mut b = node("b", 3, 1, true, None);
    b.edges = vec![edge("web", 4.0), edge("batch", 1.0)];
    let mut dead = node("c", 4, 1, false, None);
    dead.edges = vec![edge("web", 100.0)];
    let (view, _) = membership.observe(Instant::now(), vec![a, b, dead]);
    let graph = view.graph();
    assert_eq!(graph.len(), 2);
    let web = graph.iter().find(|e| e.caller == "web").unwrap();
    assert_eq!(
        (web.requests_per_sec, web.errors_per_sec, web.reporters),
        (6.0, 3.0, 2)
    );
}
