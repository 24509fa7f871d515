use super::super::super::tests::{check, ms, record};
use super::*;
use crate::checks::evaluate;
use crate::record::{CheckStatus, FaultWindow};
use crate::scenario::Mode;

fn certs(at: u64, node: &str, leaf_by: &str, issuer: &str, bundle: &[&str]) -> CertsLook {
    CertsLook {
        at: ms(at),
        node: node.into(),
        leaf_serial: format!("{node}-{leaf_by}"),
        issued_by: (!leaf_by.is_empty()).then(|| leaf_by.to_owned()),
        issuer: Some(issuer.into()),
        rotations: u64::from(issuer == "bb"),
        bundle: bundle.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Three agents, root `aa` until a rotation at 10 s to `bb`: node-1's leaf is reissued at
/// 11 s, the others' at 12 s (node-3 does not answer at 12 s: its 13 s look counts); the old
/// root leaves node-1 and node-2's bundles at 30 s and node-3's at 31 s.
fn rotated() -> Vec<CertsLook> {
    let mut looks = Vec::new();
    for at in [5_000, 9_000] {
        for n in ["node-1", "node-2", "node-3"] {
            looks.push(certs(at, n, "aa", "aa", &["aa"]));
        }
    }
    looks.push(certs(11_000, "node-1", "bb", "bb", &["aa", "bb"]));
    looks.push(certs(11_000, "node-2", "aa", "bb", &["aa", "bb"]));
    looks.push(certs(11_000, "node-3", "aa", "bb", &["aa", "bb"]));
    looks.push(certs(12_000, "node-1", "bb", "bb", &["aa", "bb"]));
    looks.push(certs(12_000, "node-2", "bb", "bb", &["aa", "bb"]));
    looks.push(certs(13_000, "node-3", "bb", "bb", &["aa", "bb"]));
    for n in ["node-1", "node-2"] {
        looks.push(certs(30_000, n, "bb", "bb", &["bb"]));
    }
    for n in ["node-1", "node-2", "node-3"] {
        looks.push(certs(31_000, n, "bb", "bb", &["bb"]));
    }
    looks
}

#[test]
fn a_rotation_is_done_once_every_agent_has_a_new_leaf_and_forgot_the_old_root() {
    let r = rotation(&rotated(), ms(10_000)).unwrap();
    assert_eq!((r.old.as_str(), r.new.as_str()), ("aa", "bb"));
    assert_eq!(r.reissued, Some(ms(13_000)));
    assert_eq!(r.retired, Some(ms(31_000)));
    assert!(r.lagging.is_empty(), "{:?}", r.lagging);
    // node-3 never lets go of the old root: not retired, and it is named.
    let mut stuck = rotated();
    stuck.retain(|l| !(l.node == "node-3" && l.at == ms(31_000)));
    stuck.push(certs(31_000, "node-3", "bb", "bb", &["aa", "bb"]));
    let r = rotation(&stuck, ms(10_000)).unwrap();
    assert_eq!(r.retired, None);
    assert_eq!(r.lagging, ["node-3: still trusts the old root"]);
    // A leaf left under the old root is named with its issuer.
    let mut old_leaf = rotated();
    old_leaf.push(certs(32_000, "node-2", "aa", "bb", &["bb"]));
    let r = rotation(&old_leaf, ms(10_000)).unwrap();
    assert_eq!(r.retired, None);
    assert!(r.lagging[0].starts_with("node-2: leaf"), "{:?}", r.lagging);
}

#[test]
fn a_rotation_that_never_happened_or_without_a_known_issuer_is_an_error() {
    let never: Vec<CertsLook> = rotated()
        .into_iter()
        .filter(|l| l.at < ms(10_000))
        .collect();
    let e = rotation(&never, ms(10_000)).unwrap_err();
    assert!(e.contains("stayed aa"), "{e}");
    let late: Vec<CertsLook> = rotated()
        .into_iter()
        .filter(|l| l.at > ms(10_000))
        .collect();
    let e = rotation(&late, ms(10_000)).unwrap_err();
    assert!(e.contains("before the rotation"), "{e}");
}

/// The test record with a CA rotation asked at 8 s.
fn with_rotation() -> crate::record::RunRecord {
    let mut r = record();
    r.faults.insert(
        0,
        FaultWindow {
            label: "CA rotation asked of node-1".into(),
            kind: "ca-rotate".into(),
            targets: vec!["node-1".into()],
            start: ms(10_000),
            end: ms(10_000),
        },
    );
    r
}

#[test]
fn ca_rotated_is_timed_from_the_rotation_to_the_old_root_retired() {
    let r = with_rotation();
    let c = |max| check(CheckKind::CaRotated { max: ms(max) }, Mode::During);
    let evidence = ConsensusEvidence {
        certs: rotated(),
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c(25_000), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(21_000.0));
    assert!(
        result.detail.contains("reissued after 3.0 s"),
        "{}",
        result.detail
    );
    assert_eq!(
        evaluate(&c(20_000), &r, Some(&evidence)).status,
        CheckStatus::Fail
    );
    // No looks at /v1/certs, or no rotation asked: nothing to vouch for.
    let none = ConsensusEvidence::default();
    let result = evaluate(&c(25_000), &r, Some(&none));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(result.detail.contains("/v1/certs"), "{}", result.detail);
    let result = evaluate(&c(25_000), &record(), Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("no ca-rotate fault"),
        "{}",
        result.detail
    );
}

#[test]
fn suspected_is_timed_from_the_window_and_fails_when_never_heard() {
    let r = record();
    let c = check(
        CheckKind::Suspected {
            target: Target::Node("node-2".into()),
            max: ms(5_000),
        },
        Mode::During,
    );
    let seen = |at: u64, node: &str| SuspicionLook {
        at: ms(at),
        node: node.into(),
        observers: vec!["node-3".into()],
        needed: 2,
        held: None,
    };
    let mut evidence = ConsensusEvidence {
        suspicions: vec![seen(9_000, "node-2"), seen(12_500, "node-2")],
        suspicion_looks: 20,
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(
        result.measured,
        Some(2_500.0),
        "before the window does not count"
    );
    assert!(
        result.detail.contains("observers node-3"),
        "{}",
        result.detail
    );
    evidence.suspicions = vec![seen(16_000, "node-2"), seen(11_000, "node-1")];
    assert_eq!(evaluate(&c, &r, Some(&evidence)).status, CheckStatus::Fail);
    evidence.suspicions.clear();
    let result = evaluate(&c, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("never listed node-2"),
        "{}",
        result.detail
    );
}

#[test]
fn quarantine_checks_need_answers_and_spare_operator_actions() {
    let healthy = check(CheckKind::NoHealthyQuarantined, Mode::Continuous);
    let within = check(
        CheckKind::QuarantineWithin {
            target: Target::Node("node-3".into()),
            max: ms(6_000),
        },
        Mode::During,
    );
    // Nobody answered /v1/quarantine: no evidence, a failure rather than a vacuous pass.
    let silent = ConsensusEvidence::default();
    for c in [&healthy, &within] {
        let result = evaluate(c, &record(), Some(&silent));
        assert_eq!(result.status, CheckStatus::Fail, "{result:?}");
        assert!(
            result.detail.contains("/v1/quarantine"),
            "{}",
            result.detail
        );
    }
    // A node an operator's action aimed at (a rotation) is still healthy.
    let r = with_rotation();
    let mut evidence = ConsensusEvidence {
        quarantined: Some(vec![(ms(15_000), "node-3".into())]),
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&healthy, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass);
    assert!(
        result.detail.contains("only faulted nodes: node-3"),
        "{}",
        result.detail
    );
    assert_eq!(
        evaluate(&within, &r, Some(&evidence)).measured,
        Some(5_000.0)
    );
    evidence.quarantined = Some(vec![(ms(15_000), "node-1".into())]);
    let result = evaluate(&healthy, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("healthy: node-1"),
        "{}",
        result.detail
    );
    let result = evaluate(&within, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("never quarantined"),
        "{}",
        result.detail
    );
}
