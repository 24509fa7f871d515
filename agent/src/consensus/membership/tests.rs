use super::*;

fn member(id: &str, zone: &str) -> Candidate {
    Candidate {
        node_id: id.into(),
        eligible: true,
        zone: zone.into(),
        healthy: true,
        down_for: Duration::ZERO,
        left: false,
    }
}

fn dead(id: &str, zone: &str, for_secs: u64) -> Candidate {
    Candidate {
        healthy: false,
        down_for: Duration::from_secs(for_secs),
        ..member(id, zone)
    }
}

const DEAD_AFTER: Duration = Duration::from_secs(30);

#[test]
fn voters_spread_across_zones_and_do_not_depend_on_order() {
    let members = vec![
        member("e", "z1"),
        member("a", "z1"),
        member("b", "z1"),
        member("c", "z2"),
        member("d", "z3"),
    ];
    assert_eq!(choose_voters(&members, 3), vec!["a", "c", "d"]);
    let mut reversed = members.clone();
    reversed.reverse();
    assert_eq!(choose_voters(&reversed, 3), vec!["a", "c", "d"]);
    assert_eq!(choose_voters(&members, 5), vec!["a", "b", "c", "d", "e"]);
}

#[test]
fn agents_without_consensus_never_vote_or_replace() {
    let caller = Candidate {
        eligible: false,
        ..member("a-caller", "z1")
    };
    let members = vec![
        caller,
        member("b", "z1"),
        member("c", "z2"),
        member("d", "z3"),
    ];
    assert_eq!(choose_voters(&members, 3), vec!["b", "c", "d"]);
    let mut with_dead = members.clone();
    with_dead[3] = dead("d", "z3", 60);
    assert_eq!(
        plan_step(&group(&["b", "c", "d"]), &with_dead, DEAD_AFTER),
        None
    );
}

#[test]
fn one_zone_gives_the_lowest_ids_and_unhealthy_members_are_skipped() {
    let members = vec![
        member("c", ""),
        dead("a", "", 1),
        member("b", ""),
        member("d", ""),
    ];
    assert_eq!(choose_voters(&members, 3), vec!["b", "c", "d"]);
}

fn group(voters: &[&str]) -> Group {
    Group {
        voters: voters.iter().map(|v| v.to_string()).collect(),
        target: 3,
        ..Group::default()
    }
}

#[test]
fn a_voter_dead_long_enough_is_replaced_in_three_steps() {
    let members = vec![
        member("a", "z1"),
        member("b", "z2"),
        dead("c", "z3", 31),
        member("d", "z1"),
        member("e", "z3"),
    ];
    let mut g = group(&["a", "b", "c"]);
    // The replacement comes from the zone that lost its voter.
    assert_eq!(
        plan_step(&g, &members, DEAD_AFTER),
        Some(Step::AddLearner {
            node: "e".into(),
            replaces: "c".into()
        })
    );
    g.learners = vec!["e".into()];
    assert_eq!(
        plan_step(&g, &members, DEAD_AFTER),
        None,
        "not caught up yet"
    );
    g.caught_up = vec!["e".into()];
    assert_eq!(
        plan_step(&g, &members, DEAD_AFTER),
        Some(Step::Promote { node: "e".into() })
    );
    let g = group(&["a", "b", "c", "e"]);
    assert_eq!(
        plan_step(&g, &members, DEAD_AFTER),
        Some(Step::Remove {
            node: "c".into(),
            down_for: Duration::from_secs(31)
        })
    );
    assert_eq!(
        plan_step(&group(&["a", "b", "e"]), &members, DEAD_AFTER),
        None
    );
}

#[test]
fn nothing_happens_too_early_while_pending_or_without_a_candidate() {
    let members = vec![
        member("a", ""),
        member("b", ""),
        dead("c", "", 5),
        member("d", ""),
    ];
    assert_eq!(
        plan_step(&group(&["a", "b", "c"]), &members, DEAD_AFTER),
        None
    );
    let left = vec![
        member("a", ""),
        member("b", ""),
        Candidate {
            left: true,
            ..dead("c", "", 0)
        },
        member("d", ""),
    ];
    // A voter that left (say, for a restart) keeps its seat until dead_after has passed.
    assert_eq!(plan_step(&group(&["a", "b", "c"]), &left, DEAD_AFTER), None);
    let mut pending = group(&["a", "b", "c"]);
    pending.pending = true;
    assert_eq!(plan_step(&pending, &left, DEAD_AFTER), None);
    let no_spare = vec![member("a", ""), member("b", ""), dead("c", "", 60)];
    assert_eq!(
        plan_step(&group(&["a", "b", "c"]), &no_spare, DEAD_AFTER),
        None
    );
}

#[test]
fn a_voter_missing_from_the_view_is_no_evidence_and_a_dead_learner_is_removed() {
    // The leader has just started: it sees only itself and one other member.
    let partial = vec![member("a", ""), member("b", "")];
    assert_eq!(
        plan_step(&group(&["a", "b", "c"]), &partial, DEAD_AFTER),
        None
    );
    let members = vec![
        member("a", ""),
        member("b", ""),
        dead("c", "", 60),
        dead("d", "", 45),
        member("e", ""),
    ];
    let mut g = group(&["a", "b", "c"]);
    g.learners = vec!["d".into()];
    assert_eq!(
        plan_step(&g, &members, DEAD_AFTER),
        Some(Step::Remove {
            node: "d".into(),
            down_for: Duration::from_secs(45)
        })
    );
}
