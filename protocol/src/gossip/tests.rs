use proptest::prelude::*;

use super::*;
use crate::frame::{Frame, FrameMessage};

fn service(name: &str) -> ServiceSummary {
    ServiceSummary {
        name: ServiceName::new(name).unwrap(),
        version: "v1".into(),
        ready: true,
        requests_per_sec: 12.5,
        errors_per_sec: 0.25,
        p50_us: 800,
        p99_us: 12_000,
        in_flight: 3,
        capacity: 1024,
        protocol: crate::AppProtocol::Http,
        concurrency_limit: 40,
        shed_per_sec: 0.5,
    }
}

fn summary(services: usize) -> NodeSummary {
    NodeSummary {
        zone: "edge-a".into(),
        agent_version: "0.1.0".into(),
        host_cpu_permille: 250,
        host_memory_permille: 400,
        agent_cpu_permille: 12,
        agent_rss_kib: 9000,
        cert_serial: vec![0xab; 16],
        cert_not_after: 1_800_000_000,
        leaving: false,
        voter_eligible: false,
        services: (0..services)
            .map(|i| service(&format!("svc-{i}")))
            .collect(),
    }
}

#[test]
fn a_summary_round_trips_and_stays_small() {
    let one = summary(1);
    let bytes = one.encode().unwrap();
    assert!(
        bytes.len() < 120,
        "one-service summary is {} bytes",
        bytes.len()
    );
    assert_eq!(NodeSummary::decode(&bytes).unwrap(), one);
}

#[test]
fn the_most_services_a_summary_lists_fit_the_budget() {
    let full = summary(MAX_SERVICES_PER_NODE);
    let bytes = full.encode().unwrap();
    assert!(bytes.len() <= SUMMARY_BUDGET, "{} bytes", bytes.len());
    let over = summary(MAX_SERVICES_PER_NODE + 1);
    assert!(over.encode().unwrap_err().contains("services"));
}

#[test]
fn an_over_budget_summary_is_refused_both_ways() {
    let mut big = summary(MAX_SERVICES_PER_NODE);
    for service in &mut big.services {
        service.version = "v".repeat(MAX_LABEL_LEN);
    }
    assert!(big.encode().unwrap_err().contains("budget"));
    let bytes = bincode::serde::encode_to_vec(&big, bincode_config()).unwrap();
    assert!(NodeSummary::decode(&bytes).is_err());
}

#[test]
fn nonsense_rates_are_refused() {
    let mut bad = summary(1);
    bad.services[0].requests_per_sec = f32::NAN;
    assert!(bad.encode().is_err());
    bad.services[0].requests_per_sec = -1.0;
    assert!(bad.encode().is_err());
}

#[test]
fn edges_round_trip_and_are_bounded() {
    let edge = |i: usize| DependencyEdge {
        caller: format!("web-{i}"),
        callee: ServiceName::new("payments").unwrap(),
        requests_per_sec: 3.0,
        errors_per_sec: 0.0,
    };
    let edges = DependencyEdges {
        edges: (0..MAX_EDGES_PER_NODE).map(edge).collect(),
    };
    let bytes = edges.encode().unwrap();
    assert_eq!(DependencyEdges::decode(&bytes).unwrap(), edges);
    let too_many = DependencyEdges {
        edges: (0..=MAX_EDGES_PER_NODE).map(edge).collect(),
    };
    assert!(too_many.encode().is_err());
}

#[test]
fn the_sealed_message_binds_every_field() {
    let base = sealed_message("a", 1, "summary", 7, b"payload");
    assert_ne!(base, sealed_message("b", 1, "summary", 7, b"payload"));
    assert_ne!(base, sealed_message("a", 2, "summary", 7, b"payload"));
    assert_ne!(base, sealed_message("a", 1, "edges", 7, b"payload"));
    assert_ne!(base, sealed_message("a", 1, "summary", 8, b"payload"));
    assert_ne!(base, sealed_message("a", 1, "summary", 7, b"other"));
    // Length prefixes keep field boundaries unambiguous.
    assert_ne!(
        sealed_message("ab", 1, "c", 7, b""),
        sealed_message("a", 1, "bc", 7, b"")
    );
}

#[test]
fn gossip_frames_round_trip() {
    let message = GossipMessage {
        sender: NodeId::new("edge-a-1").unwrap(),
        generation: 42,
        chitchat: vec![1, 2, 3],
    };
    let bytes = message.to_frame_bytes();
    let (frame, _) = Frame::decode(&bytes).unwrap();
    assert_eq!(GossipMessage::from_frame(&frame).unwrap(), message);
    let leave = GossipLeave { generation: 42 };
    let (frame, _) = Frame::decode(&leave.to_frame_bytes()).unwrap();
    assert_eq!(GossipLeave::from_frame(&frame).unwrap(), leave);
}

proptest! {
    #[test]
    fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = NodeSummary::decode(&bytes);
        let _ = DependencyEdges::decode(&bytes);
        let _ = SealedValue::decode(&bytes);
        let _ = GossipMessage::from_payload(&bytes);
        let _ = GossipLeave::from_payload(&bytes);
    }
}
