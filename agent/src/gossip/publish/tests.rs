use std::time::Duration;

use plexus_protocol::ServiceName;

use super::*;

fn base() -> NodeSummary {
    NodeSummary {
        zone: "z".into(),
        agent_version: "0.1.0".into(),
        host_cpu_permille: 100,
        host_memory_permille: 300,
        agent_cpu_permille: 5,
        agent_rss_kib: 10_000,
        cert_serial: vec![1, 2],
        cert_not_after: 100,
        leaving: false,
        voter_eligible: false,
        services: vec![ServiceSummary {
            name: ServiceName::new("api").unwrap(),
            version: "v1".into(),
            ready: true,
            requests_per_sec: 100.0,
            errors_per_sec: 0.0,
            p50_us: 1000,
            p99_us: 9000,
            in_flight: 4,
            capacity: 100,
            protocol: plexus_protocol::AppProtocol::Http,
            concurrency_limit: 20,
            shed_per_sec: 0.0,
        }],
    }
}

#[test]
fn noise_is_not_published_but_meaningful_changes_are() {
    let old = base();
    let mut noise = base();
    noise.services[0].requests_per_sec = 110.0;
    noise.services[0].p99_us = 9500;
    noise.host_cpu_permille = 130;
    noise.services[0].in_flight = 6;
    assert!(!summary_changed(&old, &noise));

    let mut cases: Vec<NodeSummary> = Vec::new();
    let mut unready = base();
    unready.services[0].ready = false;
    cases.push(unready);
    let mut busy = base();
    busy.services[0].requests_per_sec = 150.0;
    cases.push(busy);
    let mut slow = base();
    slow.services[0].p99_us = 20_000;
    cases.push(slow);
    let mut erroring = base();
    erroring.services[0].errors_per_sec = 5.0;
    cases.push(erroring);
    let mut leaving = base();
    leaving.leaving = true;
    cases.push(leaving);
    let mut renewed = base();
    renewed.cert_serial = vec![3];
    cases.push(renewed);
    let mut hot = base();
    hot.host_cpu_permille = 400;
    cases.push(hot);
    for case in cases {
        assert!(summary_changed(&old, &case), "{case:?}");
    }
}

#[test]
fn the_gate_publishes_at_most_once_per_interval() {
    let mut gate = PublishGate::default();
    let t0 = Instant::now();
    let gap = Duration::from_millis(500);
    let mut changed = base();
    changed.services[0].ready = false;
    assert!(gate.offer(t0, gap, &base(), summary_changed));
    assert!(!gate.offer(
        t0 + Duration::from_millis(100),
        gap,
        &changed,
        summary_changed
    ));
    assert!(!gate.offer(
        t0 + Duration::from_millis(600),
        gap,
        &base(),
        summary_changed
    ));
    assert!(gate.offer(
        t0 + Duration::from_millis(700),
        gap,
        &changed,
        summary_changed
    ));
}

#[test]
fn a_summary_lists_configured_services_with_their_readings() {
    let facts = NodeFacts {
        zone: "edge-a".into(),
        voter_eligible: true,
        cert_serial: vec![9; 30],
        cert_not_after: 5,
        services: vec![crate::config::LocalService {
            name: ServiceName::new("api").unwrap(),
            address: "127.0.0.1:1".parse().unwrap(),
            protocol: crate::config::Protocol::Tcp,
            version: Some("v2".into()),
            capacity: 64,
            health: None,
            limit: None,
        }],
    };
    let summary = build_summary(&facts, HostUsage::default(), &[], false);
    assert_eq!(summary.services.len(), 1);
    assert!(!summary.services[0].ready, "no reading yet: not ready");
    assert_eq!(summary.services[0].capacity, 64);
    assert_eq!(summary.cert_serial.len(), 20);
    assert!(
        summary.voter_eligible,
        "[consensus] configured: the node may vote"
    );
    assert!(summary.encode().is_ok());
}
