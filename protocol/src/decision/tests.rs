use super::*;

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn decision(kind: DecisionKind) -> Decision {
    Decision {
        kind,
        reason: "test".into(),
        evidence: vec![Evidence {
            subject: "node-b".into(),
            signal: "p99_us".into(),
            value: 40_000.0,
            reference: Some(4_000.0),
        }],
        proposer: node("node-a"),
        proposed_at_ms: 1,
    }
}

fn policy() -> CanaryPolicy {
    CanaryPolicy {
        baseline: "v1".into(),
        canary: "v2".into(),
        step_percent: 20,
        interval_ms: 5_000,
        max_error_rate_increase: 0.01,
        max_latency_ratio: 1.5,
    }
}

#[test]
fn weights_replace_the_previous_ones_and_bump_the_epoch() {
    let mut state = CommittedState::default();
    let weights = |w: u32| DecisionKind::Weights {
        service: service("payments"),
        weights: vec![EndpointWeight {
            node: node("node-b"),
            weight: w,
        }],
    };
    state.apply(5, 2, &decision(weights(300)));
    state.apply(6, 2, &decision(weights(FULL_WEIGHT)));
    let payments = &state.services[&service("payments")];
    assert_eq!(payments.weights_epoch, 2);
    assert_eq!(payments.weight(&node("node-b")), FULL_WEIGHT);
    assert!(payments.weights.is_empty(), "full weights are not stored");
    assert_eq!((state.applied_index, state.applied_term), (6, 2));
}

#[test]
fn a_canary_step_without_a_canary_changes_nothing_but_the_index() {
    let mut state = CommittedState::default();
    let step = DecisionKind::CanaryStep {
        service: service("payments"),
        share_percent: 20,
        phase: CanaryPhase::Progressing,
    };
    state.apply(3, 1, &decision(step.clone()));
    assert!(state.services.is_empty());
    state.apply(
        4,
        1,
        &decision(DecisionKind::CanaryStart {
            service: service("payments"),
            policy: policy(),
        }),
    );
    state.apply(5, 1, &decision(step));
    let canary = state.services[&service("payments")].canary.clone().unwrap();
    assert_eq!((canary.share_percent, canary.steps), (20, 1));
    assert_eq!(canary.last_step_index, 5);
}

#[test]
fn the_same_entries_give_the_same_state_and_round_trip() {
    let entries = [
        DecisionKind::CanaryStart {
            service: service("web"),
            policy: policy(),
        },
        DecisionKind::ScalingHint {
            service: service("web"),
            current: 3,
            desired: 5,
        },
        DecisionKind::Voters {
            voters: vec![node("a"), node("b"), node("c")],
        },
    ];
    let build = || {
        let mut state = CommittedState::default();
        for (i, kind) in entries.iter().enumerate() {
            state.apply(i as u64 + 1, 1, &decision(kind.clone()));
        }
        state
    };
    let state = build();
    assert_eq!(state, build());
    let bytes = state.encode();
    assert_eq!(CommittedState::decode(&bytes, bytes.len()).unwrap(), state);
    assert!(CommittedState::decode(&bytes, bytes.len() - 1).is_err());
}

#[test]
fn decisions_out_of_bounds_do_not_encode_or_decode() {
    let bad_weight = decision(DecisionKind::Weights {
        service: service("web"),
        weights: vec![EndpointWeight {
            node: node("b"),
            weight: FULL_WEIGHT + 1,
        }],
    });
    assert!(bad_weight.encode().is_err());
    // Well formed and in this format, but out of bounds: the decoder checks the bounds too.
    let mut bytes = vec![crate::frame::LOG_FORMAT];
    bytes.extend(
        bincode::serde::encode_to_vec(&bad_weight, crate::frame::bincode_config()).unwrap(),
    );
    let error = Decision::decode(&bytes).unwrap_err();
    assert!(error.contains("weight"), "{error}");
    let good = decision(DecisionKind::ScalingHint {
        service: service("web"),
        current: 1,
        desired: 2,
    });
    let bytes = good.encode().unwrap();
    assert_eq!(Decision::decode(&bytes).unwrap(), good);
    for cut in 0..bytes.len() {
        assert!(Decision::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn another_log_format_is_named_not_misread() {
    let good = decision(DecisionKind::ScalingHint {
        service: service("web"),
        current: 1,
        desired: 2,
    });
    let state = CommittedState::default();
    let mut encodings: Vec<(&str, Vec<u8>)> = vec![
        ("decision", good.encode().unwrap()),
        ("committed state", state.encode()),
    ];
    for (what, bytes) in &mut encodings {
        assert_eq!(bytes[0], crate::frame::LOG_FORMAT, "{what}");
        bytes[0] = crate::frame::LOG_FORMAT + 1;
    }
    let error = Decision::decode(&encodings[0].1).unwrap_err();
    assert!(
        error.contains("decision is in decision-log format 2"),
        "{error}"
    );
    let error = CommittedState::decode(&encodings[1].1, usize::MAX).unwrap_err();
    assert!(
        error.contains("committed state is in decision-log format 2"),
        "{error}"
    );
    assert!(Decision::decode(&[]).unwrap_err().contains("empty"));
}
