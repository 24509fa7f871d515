use super::*;
use crate::decision::{CommittedState, ConsensusSummary};

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn rule(from: Option<&str>, to: Option<&str>, action: PolicyAction) -> PolicyRule {
    PolicyRule {
        from: from.map(service),
        to: to.map(service),
        action,
    }
}

fn decision(kind: DecisionKind) -> Decision {
    Decision {
        kind,
        reason: "test".into(),
        evidence: vec![],
        proposer: node("leader"),
        proposed_at_ms: 1_000,
    }
}

fn root(serial: &str) -> TrustedRoot {
    TrustedRoot {
        der: vec![1, 2, 3],
        serial: serial.into(),
        not_after_ms: 10_000,
        retire_at_ms: None,
    }
}

#[test]
fn the_most_specific_rule_wins_and_deny_wins_ties() {
    let policy = AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![
            rule(None, Some("payments"), PolicyAction::Deny),
            rule(Some("web"), Some("payments"), PolicyAction::Allow),
            rule(Some("web"), None, PolicyAction::Allow),
            rule(Some("batch"), Some("payments"), PolicyAction::Allow),
            rule(Some("batch"), Some("payments"), PolicyAction::Deny),
        ],
    };
    let payments = service("payments");
    assert_eq!(
        policy.decide(&[service("web")], &payments),
        PolicyAction::Allow
    );
    assert_eq!(
        policy.decide(&[service("batch")], &payments),
        PolicyAction::Deny
    );
    assert_eq!(policy.decide(&[], &payments), PolicyAction::Deny);
    assert_eq!(
        policy.decide(&[service("web")], &service("ledger")),
        PolicyAction::Allow
    );
    assert_eq!(
        policy.decide(&[service("cron")], &service("ledger")),
        PolicyAction::Deny
    );
    assert_eq!(
        AccessPolicy::default().decide(&[], &payments),
        PolicyAction::Allow
    );
}

#[test]
fn ca_keys_never_leave_in_json_or_gossip() {
    let mut state = CommittedState::default();
    state.apply(
        2,
        1,
        &decision(DecisionKind::TrustInit {
            root: root("aa"),
            key: CaKey(b"secret key bytes".to_vec()),
            tokens: vec![],
        }),
    );
    assert!(state.trust.has_ca());
    let json = serde_json::to_string(&state).unwrap();
    assert!(!json.contains("secret"), "{json}");
    assert!(json.contains("<redacted>"));
    assert!(format!("{state:?}").contains("<redacted>"));
    let summary = |state: CommittedState| ConsensusSummary {
        term: 1,
        leader: None,
        commit: 2,
        voters: vec![],
        state,
        proposed: vec![],
    };
    assert!(summary(state.clone()).encode().is_err());
    let public = summary(state.without_keys());
    let decoded = ConsensusSummary::decode(&public.encode().unwrap()).unwrap();
    assert_eq!(decoded.state.trust.roots, state.trust.roots);
    assert!(!decoded.state.trust.has_ca());
    // The full state (a snapshot among voters) keeps the key through bincode.
    let back = CommittedState::decode(&state.encode(), 1 << 20).unwrap();
    assert_eq!(back.trust.keys, state.trust.keys);
}

#[test]
fn a_rotation_keeps_both_roots_until_the_old_one_retires() {
    let mut state = CommittedState::default();
    let init = DecisionKind::TrustInit {
        root: root("01"),
        key: CaKey(vec![1]),
        tokens: vec![],
    };
    state.apply(2, 1, &decision(init));
    state.apply(
        3,
        1,
        &decision(DecisionKind::CaRotate {
            root: root("02"),
            key: CaKey(vec![2]),
            cross_signed: vec![9],
            retire_previous_at_ms: 5_000,
        }),
    );
    let trust = &state.trust;
    assert_eq!(trust.roots.len(), 2);
    assert_eq!(trust.issuer().unwrap().serial, "02");
    assert_eq!(trust.roots[0].retire_at_ms, Some(5_000));
    assert_eq!(trust.rotations, 1);
    // The issuer cannot be retired; the old root can.
    state.apply(
        4,
        1,
        &decision(DecisionKind::CaRetire {
            serial: "02".into(),
        }),
    );
    assert_eq!(state.trust.roots.len(), 2);
    state.apply(
        5,
        1,
        &decision(DecisionKind::CaRetire {
            serial: "01".into(),
        }),
    );
    assert_eq!(state.trust.roots.len(), 1);
    assert!(!state.trust.keys.contains_key("01"));
    assert!(state.trust.cross_signed.is_none());
}

#[test]
fn tokens_are_revoked_and_expire() {
    let token = JoinToken {
        secret_sha256: [7; 32],
        created_ms: 0,
        expires_ms: Some(100),
        revoked: false,
        created_by: "op".into(),
        uses: 0,
    };
    assert_eq!(token.usable(99), Ok(()));
    assert_eq!(token.usable(100), Err("expired"));
    let mut state = CommittedState::default();
    state.apply(
        2,
        1,
        &decision(DecisionKind::TokenCreate {
            id: "t1".into(),
            token,
        }),
    );
    state.apply(
        3,
        1,
        &decision(DecisionKind::TokenRevoke { id: "t1".into() }),
    );
    assert_eq!(state.trust.tokens["t1"].usable(0), Err("revoked"));
}

#[test]
fn quarantine_denies_node_and_serial_until_release() {
    let mut state = CommittedState::default();
    let bad = node("bad");
    state.apply(
        2,
        1,
        &decision(DecisionKind::Quarantine {
            node: bad.clone(),
            serials: vec!["abcd".into()],
            observers: vec![node("a"), node("b")],
        }),
    );
    assert!(state.trust.denies(&bad, "ffff"));
    assert!(state.trust.denies(&node("other"), "abcd"));
    assert!(!state.trust.denies(&node("other"), "ffff"));
    assert_eq!(state.trust.quarantined[&bad].since_ms, 1_000);
    state.apply(3, 1, &decision(DecisionKind::Release { node: bad.clone() }));
    assert!(!state.trust.denies(&bad, "abcd"));
    // The release stays on record, so an agent that never saw the quarantine learns of it.
    assert_eq!(state.trust.released[&bad], 3);
    // Releasing a node that is not quarantined records nothing.
    state.apply(4, 1, &decision(DecisionKind::Release { node: node("x") }));
    assert!(!state.trust.released.contains_key(&node("x")));
}

#[test]
fn the_release_record_is_bounded_and_forgets_the_oldest() {
    let mut state = CommittedState::default();
    let mut index = 2;
    for i in 0..=MAX_RELEASES {
        let n = node(&format!("n{i}"));
        let quarantine = DecisionKind::Quarantine {
            node: n.clone(),
            serials: vec![],
            observers: vec![node("a"), node("b")],
        };
        state.apply(index, 1, &decision(quarantine));
        state.apply(index + 1, 1, &decision(DecisionKind::Release { node: n }));
        index += 2;
    }
    assert_eq!(state.trust.released.len(), MAX_RELEASES);
    assert!(!state.trust.released.contains_key(&node("n0")));
    assert!(state
        .trust
        .released
        .contains_key(&node(&format!("n{MAX_RELEASES}"))));
}

#[test]
fn leader_messages_are_bounded() {
    use crate::frame::FrameMessage;
    let big = LeaderRequest::Renew {
        csr: vec![0; MAX_CERT_DER + 1],
    };
    let bytes = big.to_frame_bytes();
    let frame = crate::Frame::decode(&bytes).unwrap().0;
    assert!(LeaderRequest::from_frame(&frame).is_err());
    let ok = LeaderRequest::Operator {
        action: OperatorAction::Release { node: node("n") },
    };
    let frame = crate::Frame::decode(&ok.to_frame_bytes()).unwrap().0;
    assert_eq!(LeaderRequest::from_frame(&frame).unwrap(), ok);
}
