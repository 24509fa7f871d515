use super::super::super::tests::{check, ms, record};
use super::super::*;
use crate::checks::evaluate;
use crate::record::FaultWindow;
use crate::scenario::{CanaryEnd, Mode};

fn agent(
    role: &str,
    term: u64,
    commit: u64,
    leader: Option<&str>,
    voters: &[&str],
) -> AgentConsensus {
    AgentConsensus {
        role: role.into(),
        term,
        leader: leader.map(str::to_owned),
        is_leader: false,
        commit,
        applied: commit,
        voters: voters.iter().map(|v| (*v).to_owned()).collect(),
        canaries: Default::default(),
    }
}

#[test]
fn the_voter_set_and_the_leader_come_from_the_most_advanced_voters() {
    let old = ["node-1", "node-2", "node-3"];
    let new = ["node-1", "node-3", "node-5"];
    // node-2 was removed while down and came back with its old configuration and term.
    let stale = agent("voter", 2, 2, None, &old);
    let mut leading = agent("voter", 3, 9, Some("node-1"), &new);
    leading.is_leader = true;
    let follower = agent("voter", 3, 9, Some("node-1"), &new);
    let learner = agent("non_voter", 0, 0, None, &new);
    let answers = [
        ("node-1", &leading),
        ("node-2", &stale),
        ("node-3", &follower),
        ("node-4", &learner),
    ];
    assert_eq!(roles::voter_set(&answers), new);
    assert_eq!(roles::leader(&answers).as_deref(), Some("node-1"));
    // A leader cut off in an older term still says it leads: not the leader.
    let mut cut_off = agent("voter", 2, 5, Some("node-2"), &old);
    cut_off.is_leader = true;
    let answers = [("node-2", &cut_off), ("node-3", &follower)];
    assert_eq!(roles::leader(&answers), None);
    // Without a voter's answer, the voters a non-voter learned.
    assert_eq!(roles::voter_set(&[("node-4", &learner)]), new);
}

#[test]
fn the_group_is_ready_once_voters_agree_on_a_leader_every_agent_knows() {
    let voters = ["node-1", "node-2", "node-3"];
    let mut l = agent("voter", 2, 2, Some("node-1"), &voters);
    l.is_leader = true;
    let f = agent("voter", 2, 2, Some("node-1"), &voters);
    let waiting = agent("waiting", 0, 0, None, &[]);
    let n = |name: &str, a: &AgentConsensus| (name.to_owned(), Some(a.clone()));
    let not_yet = roles::not_ready(
        3,
        &[
            n("node-1", &l),
            n("node-2", &f),
            n("node-3", &f),
            n("node-4", &waiting),
        ],
    );
    assert_eq!(not_yet, ["node-4 knows no voters yet"]);
    let learned = agent("non_voter", 0, 0, None, &voters);
    let all = [
        n("node-1", &l),
        n("node-2", &f),
        n("node-3", &f),
        n("node-4", &learned),
    ];
    assert!(roles::not_ready(3, &all).is_empty());
    assert!(!roles::not_ready(5, &all).is_empty(), "3 of 5 voters");
    let silent = [("node-1".to_owned(), None), n("node-2", &f)];
    let reasons = roles::not_ready(3, &silent);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("node-1: no /v1/decisions")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "no leader"), "{reasons:?}");
}

fn look(at: u64, node: &str, agent: AgentConsensus) -> ConsensusLook {
    ConsensusLook {
        at: ms(at),
        node: node.into(),
        agent,
    }
}

fn with_canary(mut a: AgentConsensus, phase: &str, share: u64) -> AgentConsensus {
    a.canaries.insert("echo".into(), (phase.into(), share));
    a
}

#[test]
fn a_canary_outcome_is_timed_from_the_window_and_must_reach_every_agent() {
    let mut r = record();
    r.faults.clear();
    let base = agent(
        "voter",
        2,
        5,
        Some("node-1"),
        &["node-1", "node-2", "node-3"],
    );
    let mut looks = Vec::new();
    for (t, phase, share) in [
        (1000, "Progressing", 0),
        (5000, "Progressing", 50),
        (9000, "Promoted", 100),
    ] {
        for node in ["node-1", "node-2"] {
            looks.push(look(t, node, with_canary(base.clone(), phase, share)));
        }
    }
    let evidence = ConsensusEvidence {
        looks: looks.clone(),
        ..ConsensusEvidence::default()
    };
    let promoted = |max| {
        check(
            CheckKind::CanaryOutcome {
                service: "echo".into(),
                expect: CanaryEnd::Promoted,
                max: ms(max),
            },
            Mode::Continuous,
        )
    };
    let result = evaluate(&promoted(10_000), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(9000.0));
    assert_eq!(
        evaluate(&promoted(8000), &r, Some(&evidence)).status,
        CheckStatus::Fail
    );
    let rolled_back = check(
        CheckKind::CanaryOutcome {
            service: "echo".into(),
            expect: CanaryEnd::RolledBack,
            max: ms(30_000),
        },
        Mode::Continuous,
    );
    let result = evaluate(&rolled_back, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("Promoted at 100%"),
        "{}",
        result.detail
    );
    // Committed, but one agent still shows the release in progress at the end.
    let mut lagging = looks;
    lagging.pop();
    lagging.push(look(9000, "node-2", with_canary(base, "Progressing", 75)));
    let evidence = ConsensusEvidence {
        looks: lagging,
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&promoted(10_000), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("node-2: Progressing"),
        "{}",
        result.detail
    );
}

#[test]
fn voters_replaced_needs_the_dead_voter_out_and_the_count_back() {
    // record(): node-3 is killed from 10 s to 20 s.
    let r = record();
    let c = |voters| {
        check(
            CheckKind::VotersReplaced {
                target: Target::Faulted,
                max: ms(8000),
                voters,
            },
            Mode::During,
        )
    };
    let v = |voters: &[&str]| agent("voter", 2, 5, Some("node-1"), voters);
    let looks = vec![
        look(9000, "node-1", v(&["node-1", "node-2", "node-3"])),
        look(12_000, "node-1", v(&["node-1", "node-2", "node-3"])),
        // The learner promoted: four voters for a moment.
        look(
            14_000,
            "node-1",
            v(&["node-1", "node-2", "node-3", "node-4"]),
        ),
        look(15_000, "node-1", v(&["node-1", "node-2", "node-4"])),
    ];
    let evidence = ConsensusEvidence {
        looks: looks.clone(),
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c(3), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(5000.0));
    let result = evaluate(&c(5), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(result.detail.contains("never"), "{}", result.detail);
    // The faulted node was no voter: replacing it proves nothing.
    let evidence = ConsensusEvidence {
        looks: vec![
            look(9000, "node-1", v(&["node-1", "node-2", "node-4"])),
            look(12_000, "node-1", v(&["node-1", "node-2", "node-4"])),
        ],
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c(3), &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("was not a voter"),
        "{}",
        result.detail
    );
}

#[test]
fn decisions_resume_once_a_leader_is_named_and_everyone_caught_up() {
    // record(): node-3 (the leader) is killed from 10 s to 20 s.
    let r = record();
    let c = check(CheckKind::DecisionsResume { max: ms(5000) }, Mode::During);
    let voters = ["node-1", "node-2", "node-3"];
    let mut looks = vec![
        // Before the fault node-3 leads and has committed 7.
        look(9000, "node-3", {
            let mut a = agent("voter", 2, 7, Some("node-3"), &voters);
            a.is_leader = true;
            a
        }),
        look(
            9000,
            "node-1",
            agent("voter", 2, 7, Some("node-3"), &voters),
        ),
        // Just after the kill: the followers still name the dead leader.
        look(
            11_000,
            "node-1",
            agent("voter", 2, 7, Some("node-3"), &voters),
        ),
        look(
            11_000,
            "node-2",
            agent("voter", 2, 7, Some("node-3"), &voters),
        ),
        // node-1 wins term 3, but node-4 has not caught up yet.
        look(12_000, "node-1", {
            let mut a = agent("voter", 3, 8, Some("node-1"), &voters);
            a.is_leader = true;
            a
        }),
        look(
            12_000,
            "node-2",
            agent("voter", 3, 8, Some("node-1"), &voters),
        ),
        look(12_000, "node-4", agent("non_voter", 0, 6, None, &voters)),
    ];
    let evidence = ConsensusEvidence {
        looks: looks.clone(),
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("node-4 applied 6 of 7"),
        "{}",
        result.detail
    );
    looks.push(look(13_000, "node-1", {
        let mut a = agent("voter", 3, 8, Some("node-1"), &voters);
        a.is_leader = true;
        a
    }));
    looks.push(look(
        13_000,
        "node-2",
        agent("voter", 3, 8, Some("node-1"), &voters),
    ));
    looks.push(look(
        13_000,
        "node-4",
        agent("non_voter", 0, 8, None, &voters),
    ));
    // node-3 answering while the kill holds it would be left out anyway (it cannot).
    let evidence = ConsensusEvidence {
        looks,
        ..ConsensusEvidence::default()
    };
    let result = evaluate(&c, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(3000.0));
}

#[test]
fn an_agent_a_fault_holds_is_left_out_of_decisions_resume() {
    // The leader node-3 is cut off (partitioned) 10..20 s and still names itself.
    let mut r = record();
    r.faults = vec![FaultWindow {
        label: "partition node-3 <-> the rest".into(),
        kind: "partition".into(),
        targets: vec!["node-3".into()],
        start: ms(10_000),
        end: ms(20_000),
    }];
    let voters = ["node-1", "node-2", "node-3"];
    let mut cut_off = agent("voter", 2, 7, Some("node-3"), &voters);
    cut_off.is_leader = true;
    let mut new_leader = agent("voter", 3, 8, Some("node-1"), &voters);
    new_leader.is_leader = true;
    let looks = vec![
        look(12_000, "node-3", cut_off.clone()),
        look(12_000, "node-1", new_leader.clone()),
        look(
            12_000,
            "node-2",
            agent("voter", 3, 8, Some("node-1"), &voters),
        ),
        look(21_000, "node-3", cut_off),
        look(21_000, "node-1", new_leader),
        look(
            21_000,
            "node-2",
            agent("voter", 3, 8, Some("node-1"), &voters),
        ),
    ];
    let evidence = ConsensusEvidence {
        looks,
        ..ConsensusEvidence::default()
    };
    let during = check(CheckKind::DecisionsResume { max: ms(5000) }, Mode::During);
    let result = evaluate(&during, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Pass, "{result:?}");
    assert_eq!(result.measured, Some(2000.0));
    // After the heal node-3 counts again, and it has not followed.
    let after = check(CheckKind::DecisionsResume { max: ms(5000) }, Mode::After);
    let result = evaluate(&after, &r, Some(&evidence));
    assert_eq!(result.status, CheckStatus::Fail);
    assert!(
        result.detail.contains("node-3 names leader"),
        "{}",
        result.detail
    );
}
