use std::time::Duration;

use plexus_protocol::{CommittedState, Decision, DecisionKind, NodeId, TrustDomain, TrustState};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use time::OffsetDateTime;

use super::*;
use crate::pki::{files, init_ca, IssueOptions, Validity};

fn trust_domain() -> TrustDomain {
    TrustDomain::new("ca.test").unwrap()
}

/// A committed trust state holding a fresh CA made by `plexus pki init`.
fn committed_ca(dir: &std::path::Path) -> TrustState {
    let options = IssueOptions {
        validity: Validity::starting_now(Duration::from_secs(86_400 * 30)),
        force: false,
    };
    init_ca(&trust_domain(), dir, options).unwrap();
    let (root, key) = root_from_files(&dir.join(files::CA_CERT), &dir.join(files::CA_KEY)).unwrap();
    let token = token_from_file(&write_token_file(dir, false).unwrap(), 0).unwrap();
    let mut state = CommittedState::default();
    state.apply(
        2,
        1,
        &decision(DecisionKind::TrustInit {
            root,
            key,
            tokens: vec![token],
        }),
    );
    state.trust
}

fn decision(kind: DecisionKind) -> Decision {
    Decision {
        kind,
        reason: "test".into(),
        evidence: vec![],
        proposer: NodeId::new("leader").unwrap(),
        proposed_at_ms: 0,
    }
}

fn node_key() -> PrivateKeyDer<'static> {
    let pair = rcgen::KeyPair::generate().unwrap();
    PrivateKeyDer::try_from(pair.serialize_der()).unwrap()
}

/// Whether `leaf` (with `intermediates`) chains to one of `roots` now.
fn chains(leaf: &[u8], intermediates: &[Vec<u8>], roots: &[&[u8]]) -> bool {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root.to_vec())).unwrap();
    }
    let leaf = CertificateDer::from(leaf.to_vec());
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|i| CertificateDer::from(i.clone()))
        .collect();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &ParsedCertificate::try_from(&leaf).unwrap(),
        &store,
        &intermediates,
        UnixTime::now(),
        crate::pki::crypto_provider()
            .signature_verification_algorithms
            .all,
    )
    .is_ok()
}

#[test]
fn a_request_gets_a_leaf_for_the_asking_node_only() {
    let dir = tempfile::tempdir().unwrap();
    let trust = committed_ca(dir.path());
    let node = NodeId::new("edge-1").unwrap();
    let key = node_key();
    // The request names another node: the leaf is for the node the leader says.
    let csr = make_request(&key, &NodeId::new("someone-else").unwrap()).unwrap();
    let now = OffsetDateTime::now_utc();
    let leaf = sign_request(
        &trust,
        &trust_domain(),
        &node,
        &csr,
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let info = crate::pki::cert_info(&leaf).unwrap();
    assert_eq!(info.spiffe_id, "spiffe://ca.test/node/edge-1");
    assert!((info.not_after - now.unix_timestamp() - 3600).abs() <= 1);
    assert!(chains(&leaf, &[], &[&trust.roots[0].der]));
    // The leaf carries the requester's key: it can be served with that key.
    let signing = crate::pki::crypto_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![CertificateDer::from(leaf)], signing);
    assert!(certified.keys_match().is_ok());
    // Garbage is refused, not signed.
    assert!(sign_request(
        &trust,
        &trust_domain(),
        &node,
        b"junk",
        Duration::from_secs(1),
        now
    )
    .is_err());
}

#[test]
fn leaves_never_outlive_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let trust = committed_ca(dir.path());
    let csr = make_request(&node_key(), &NodeId::new("n").unwrap()).unwrap();
    let now = OffsetDateTime::now_utc();
    let node = NodeId::new("n").unwrap();
    let year = Duration::from_secs(86_400 * 365);
    let leaf = sign_request(&trust, &trust_domain(), &node, &csr, year, now).unwrap();
    let info = crate::pki::cert_info(&leaf).unwrap();
    assert_eq!(info.not_after as u64 * 1000, trust.roots[0].not_after_ms);
}

#[test]
fn a_rotated_root_is_trusted_through_the_old_one_when_cross_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = CommittedState {
        trust: committed_ca(dir.path()),
        ..Default::default()
    };
    let old = state.trust.roots[0].der.clone();
    let now = OffsetDateTime::now_utc();
    let (root, key, cross) = next_root(
        &state.trust,
        &trust_domain(),
        Duration::from_secs(86_400 * 60),
        now,
    )
    .unwrap();
    assert_ne!(root.serial, state.trust.roots[0].serial);
    state.apply(
        3,
        1,
        &decision(DecisionKind::CaRotate {
            root: root.clone(),
            key,
            cross_signed: cross.clone(),
            retire_previous_at_ms: 0,
        }),
    );
    let node = NodeId::new("n").unwrap();
    let csr = make_request(&node_key(), &node).unwrap();
    let leaf = sign_request(
        &state.trust,
        &trust_domain(),
        &node,
        &csr,
        Duration::from_secs(60),
        now,
    )
    .unwrap();
    // New leaves chain to the new root; an agent holding only the old root accepts them
    // through the cross-signed certificate; without it, it would not.
    assert!(chains(&leaf, &[], &[&root.der]));
    assert!(chains(&leaf, &[cross], &[&old]));
    assert!(!chains(&leaf, &[], &[&old]));
}

#[test]
fn tokens_are_checked_against_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let trust = committed_ca(dir.path());
    let text = std::fs::read_to_string(dir.path().join(JOIN_TOKEN_FILE)).unwrap();
    let id = check_token(&trust, &text, 1).unwrap();
    assert_eq!(trust.tokens[&id].created_by, "pki init");
    let (_, secret) = text.trim().split_once('.').unwrap();
    assert!(check_token(&trust, &format!("{id}.{secret}x"), 1)
        .unwrap_err()
        .contains("does not match"));
    assert!(check_token(&trust, "nope.abc", 1)
        .unwrap_err()
        .contains("unknown"));
    assert!(check_token(&trust, "garbage", 1).is_err());
    let made = new_token("op", 1_000, Some(Duration::from_secs(1))).unwrap();
    let mut trust = trust;
    trust.tokens.insert(made.id.clone(), made.record);
    assert_eq!(check_token(&trust, &made.text, 1_500).unwrap(), made.id);
    assert!(check_token(&trust, &made.text, 2_000)
        .unwrap_err()
        .contains("expired"));
}
