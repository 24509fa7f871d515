use super::super::tests::{check, ms, record};
use super::*;
use crate::checks::evaluate;
use crate::scenario::Mode;

fn entry(index: u64, term: u64, digest: &str) -> LogEntry {
    LogEntry {
        index,
        term,
        digest: digest.into(),
    }
}

/// Entries `from..=to` of one history (term 1 up to 5, term 2 after).
fn history(from: u64, to: u64) -> Vec<LogEntry> {
    (from..=to)
        .map(|i| entry(i, if i <= 5 { 1 } else { 2 }, &format!("d{i}")))
        .collect()
}

fn voter(name: &str, log: Vec<LogEntry>) -> VoterLog {
    (name.to_owned(), log)
}

#[test]
fn consensus_checks_are_not_evaluated_without_evidence_and_judged_with_it() {
    let r = record();
    let c = check(CheckKind::VoterLogsIdentical, Mode::After);
    assert_eq!(evaluate(&c, &r, None).status, CheckStatus::NotEvaluated);
    let log = vec![entry(1, 1, "weights#1"), entry(2, 1, "weights#2")];
    let mut evidence = ConsensusEvidence {
        logs: vec![voter("node-1", log.clone()), voter("node-2", log.clone())],
        acknowledged: vec![(2, "weights#2".into())],
        quarantined: Some(vec![(ms(15_000), "node-3".into())]),
        ..ConsensusEvidence::default()
    };
    assert_eq!(evaluate(&c, &r, Some(&evidence)).status, CheckStatus::Pass);
    let lost = check(CheckKind::NoDecisionLost, Mode::After);
    assert_eq!(
        evaluate(&lost, &r, Some(&evidence)).status,
        CheckStatus::Pass
    );
    let q = check(
        CheckKind::QuarantineWithin {
            target: Target::Node("node-3".into()),
            max: ms(6000),
        },
        Mode::During,
    );
    assert_eq!(evaluate(&q, &r, Some(&evidence)).measured, Some(5000.0));
    let healthy = check(CheckKind::NoHealthyQuarantined, Mode::Continuous);
    assert_eq!(
        evaluate(&healthy, &r, Some(&evidence)).status,
        CheckStatus::Pass
    );
    evidence.logs[1].1[1] = entry(2, 2, "weights#2b");
    if let Some(q) = evidence.quarantined.as_mut() {
        q.push((ms(16_000), "node-2".into()));
    }
    assert_eq!(evaluate(&c, &r, Some(&evidence)).status, CheckStatus::Fail);
    assert_eq!(
        evaluate(&lost, &r, Some(&evidence)).status,
        CheckStatus::Fail
    );
    assert_eq!(
        evaluate(&healthy, &r, Some(&evidence)).status,
        CheckStatus::Fail
    );
    // No agent answered /v1/quarantine: no evidence is a failure, not a vacuous pass.
    evidence.quarantined = None;
    assert_eq!(
        evaluate(&healthy, &r, Some(&evidence)).status,
        CheckStatus::Fail
    );
}

#[test]
fn missing_evidence_fails_instead_of_passing() {
    let r = record();
    let same = check(CheckKind::VoterLogsIdentical, Mode::After);
    let lost = check(CheckKind::NoDecisionLost, Mode::After);
    let nobody = ConsensusEvidence::default();
    for c in [&same, &lost] {
        let result = evaluate(c, &r, Some(&nobody));
        assert_eq!(result.status, CheckStatus::Fail, "{result:?}");
        assert!(result.detail.contains("no voter"), "{}", result.detail);
    }
    // Voters answered but nothing committed was ever seen during the run.
    let unseen = ConsensusEvidence {
        logs: vec![voter("node-1", history(1, 3))],
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&lost, &r, Some(&unseen));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(result.detail.contains("nothing to vouch for"));
    // A voter the agents name that does not answer.
    let silent = ConsensusEvidence {
        logs: vec![
            voter("node-1", history(1, 3)),
            voter("node-2", history(1, 3)),
        ],
        silent: vec!["node-3".into()],
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&same, &r, Some(&silent));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(result.detail.contains("node-3"), "{}", result.detail);
}

#[test]
fn logs_starting_at_different_indexes_compare_on_what_both_hold() {
    // node-3 caught up by snapshot at 6: it holds nothing before 7.
    let logs = vec![
        voter("node-1", history(2, 9)),
        voter("node-2", history(4, 9)),
        voter("node-3", history(7, 9)),
    ];
    assert_eq!(first_divergence(&logs), None);
    // The same entries but one voter ends earlier: a different last committed entry.
    let lagging = vec![
        voter("node-1", history(2, 9)),
        voter("node-3", history(7, 8)),
    ];
    let d = first_divergence(&lagging).unwrap();
    assert!(
        d.contains("ends at index 9") && d.contains("index 8"),
        "{d}"
    );
    // A disagreement on an index both hold, found although the logs start apart.
    let mut other = history(7, 9);
    other[1] = entry(8, 2, "forked");
    let forked = vec![voter("node-1", history(2, 9)), voter("node-3", other)];
    let d = first_divergence(&forked).unwrap();
    assert!(d.contains("index 8") && d.contains("forked"), "{d}");
    // A voter showing nothing, or a hole, is a divergence too.
    let empty = vec![voter("node-1", history(2, 9)), voter("node-2", Vec::new())];
    assert!(first_divergence(&empty)
        .unwrap()
        .contains("no committed entry"));
    let mut holed = history(2, 9);
    holed.remove(3);
    let holes = vec![voter("node-1", holed)];
    assert!(first_divergence(&holes).unwrap().contains("jumps"));
}

#[test]
fn lost_decisions_ignore_what_a_snapshot_covers_but_not_what_was_rewritten() {
    let logs = vec![
        voter("node-1", history(2, 9)),
        voter("node-3", history(7, 9)),
    ];
    // Index 3 is behind node-3's snapshot: only node-1 can vouch for it, and does.
    let ack = vec![(3, "d3".to_owned()), (8, "d8".to_owned())];
    assert!(lost_decisions(&ack, &logs).is_empty());
    // Rewritten: node-3 holds index 8 with another digest.
    let ack = vec![(8, "other".to_owned())];
    assert_eq!(lost_decisions(&ack, &logs), [8]);
    // Acknowledged, yet every voter's log ends before it.
    let ack = vec![(12, "d12".to_owned())];
    assert_eq!(lost_decisions(&ack, &logs), [12]);
    // A voter lagging behind an acknowledged entry another voter holds: not lost (the
    // identical-logs check reports the lag).
    let lagging = vec![
        voter("node-1", history(2, 9)),
        voter("node-3", history(7, 8)),
    ];
    assert!(lost_decisions(&[(9, "d9".to_owned())], &lagging).is_empty());
    // Compacted everywhere: nothing to hold against anyone.
    let compacted = vec![voter("node-1", history(7, 9))];
    assert!(lost_decisions(&[(2, "d2".to_owned())], &compacted).is_empty());
}
