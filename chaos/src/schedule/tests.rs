use std::path::Path;

use super::*;

fn scenario(faults: &str) -> Scenario {
    let text = format!(
        r#"name = "t"
purpose = "test"
[topology]
nodes = 5
zones = ["a", "b"]
voters = 3
services = [{{ name = "echo" }}]
[workload]
rate = 10
from = "node-1"
service = "echo"
[[phase]]
name = "steady"
duration = "2s"
[[phase]]
name = "fault"
duration = "10s"
faults = [{faults}]
[[check]]
kind = "success-rate"
min = 0.9
"#
    );
    Scenario::from_toml(Path::new("t.toml"), &text).unwrap()
}

#[test]
fn the_seed_fixes_the_targets() {
    let s = scenario(r#"{ kind = "kill", target = "minority" }"#);
    let a = plan(&s, 42);
    assert_eq!(a, plan(&s, 42));
    assert_eq!(a[0].targets.len(), 2);
    assert!(
        !a[0].targets.contains(&"node-1".to_owned()),
        "the workload source is spared"
    );
    assert_eq!(
        (a[0].start, a[0].end),
        (Duration::from_secs(2), Duration::from_secs(12))
    );
    let differs = (0..20).any(|seed| plan(&s, seed)[0].targets != a[0].targets);
    assert!(differs, "other seeds pick other nodes");
}

#[test]
fn roles_resolve() {
    let s = scenario(
        r#"{ kind = "stop", target = "majority" }, { kind = "stop", target = "voter" },
           { kind = "stop", target = "zone:b" }, { kind = "partition", target = "node:node-2", for = "1s" }"#,
    );
    let p = plan(&s, 1);
    assert_eq!(p[0].targets.len(), 3);
    assert_eq!(p[1].targets, ["node-1", "node-2", "node-3"]);
    assert_eq!(p[2].targets, ["node-2", "node-4"]);
    assert_eq!(p[3].peers, ["node-1", "node-3", "node-4", "node-5"]);
    assert_eq!(p[3].end, Duration::from_secs(3));
    assert!(p[3].label.contains("the rest"), "{}", p[3].label);
}

#[test]
fn a_rolling_restart_fits_every_node_in_its_window() {
    let s = scenario(r#"{ kind = "rolling-restart", target = "all", interval = "5s" }"#);
    let starts: Vec<u64> = plan(&s, 1).iter().map(|f| f.start.as_secs()).collect();
    assert_eq!(
        starts,
        [2, 4, 6, 8, 10],
        "5 s would not fit five nodes in 10 s"
    );
}

#[test]
fn a_rolling_restart_spaces_its_nodes() {
    let s = scenario(r#"{ kind = "rolling-restart", target = "all", interval = "2s" }"#);
    let p = plan(&s, 1);
    let starts: Vec<u64> = p.iter().map(|f| f.start.as_secs()).collect();
    assert_eq!(starts, [2, 4, 6, 8, 10]);
    assert_eq!(p[4].targets, ["node-5"]);
}

fn with_consensus(faults: &str) -> Scenario {
    let text = format!(
        r#"name = "t"
purpose = "test"
[topology]
nodes = 5
zones = ["a", "b", "c"]
services = [{{ name = "echo" }}]
[consensus]
bootstrap_expect = 3
[workload]
rate = 10
from = "node-2"
service = "echo"
[[phase]]
name = "steady"
duration = "2s"
[[phase]]
name = "fault"
duration = "10s"
faults = [{faults}]
[[check]]
kind = "success-rate"
min = 0.9
"#
    );
    Scenario::from_toml(Path::new("t.toml"), &text).unwrap()
}

fn roles(leader: &str, voters: &[&str]) -> Roles {
    Roles {
        leader: Some(leader.to_owned()),
        voters: voters.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn roles_the_agents_decide_are_resolved_when_the_fault_starts() {
    let s = with_consensus(
        r#"{ kind = "kill", target = "leader" }, { kind = "stop", target = "one" },
           { kind = "partition", target = "node:node-1", peer = "voter" },
           { kind = "stop", target = "non-voter" }"#,
    );
    let mut p = plan(&s, 7);
    assert!(p[0].targets.is_empty() && p[0].pending.is_some());
    assert!(p[0].label.contains("leader"), "{}", p[0].label);
    assert!(p[1].pending.is_none() && p[1].targets.len() == 1);
    // The target is known, the peer is not.
    assert_eq!(p[2].targets, ["node-1"]);
    assert!(p[2].pending.as_ref().is_some_and(|x| x.target.is_none()));
    let now = roles("node-3", &["node-1", "node-3", "node-5"]);
    p[0].resolve(&s, &now).unwrap();
    assert_eq!(p[0].targets, ["node-3"]);
    assert_eq!(p[0].label, "kill -9 node-3");
    p[2].resolve(&s, &now).unwrap();
    assert_eq!(
        p[2].peers,
        ["node-3", "node-5"],
        "the target is not its own peer"
    );
    p[3].resolve(&s, &now).unwrap();
    assert_eq!(p[3].targets, ["node-2", "node-4"]);
    // Resolved once: a second call changes nothing.
    p[0].resolve(&s, &roles("node-1", &["node-1"])).unwrap();
    assert_eq!(p[0].targets, ["node-3"]);
    // No leader known: the fault must not be applied.
    let mut again = plan(&s, 7);
    let none = Roles {
        leader: None,
        voters: now.voters.clone(),
    };
    let e = again[0].resolve(&s, &none).unwrap_err();
    assert!(e.contains("leader"), "{e}");
}

#[test]
fn voter_minorities_and_majorities_are_drawn_with_the_seed_sparing_sources() {
    let s = with_consensus(
        r#"{ kind = "kill", target = "voter-minority" }, { kind = "stop", target = "voter-majority", at = "1s", for = "1s" }"#,
    );
    // node-2, the workload's source, is a voter.
    let now = roles("node-1", &["node-1", "node-2", "node-3"]);
    let pick = |seed| {
        let mut p = plan(&s, seed);
        p[0].resolve(&s, &now).unwrap();
        p[1].resolve(&s, &now).unwrap();
        (p[0].targets.clone(), p[1].targets.clone())
    };
    let (minority, majority) = pick(5);
    assert_eq!((minority.len(), majority.len()), (1, 2));
    assert!(!minority.contains(&"node-2".to_owned()) && !majority.contains(&"node-2".to_owned()));
    assert_eq!(
        pick(5),
        (minority.clone(), majority),
        "the same seed, the same nodes"
    );
    assert!(
        (0..20).any(|seed| pick(seed).0 != minority),
        "other seeds draw others"
    );
    // Without consensus the topology's voters are drawn from at planning time.
    let s = scenario(r#"{ kind = "kill", target = "voter-majority" }"#);
    let p = plan(&s, 3);
    assert!(p[0].pending.is_none());
    assert_eq!(p[0].targets.len(), 2);
    assert!(p[0].targets.iter().all(|t| s.topology.voters.contains(t)));
}

#[test]
fn operator_actions_happen_at_an_instant_and_a_liar_lasts_its_phase() {
    let s = with_consensus(
        r#"{ kind = "policy-change", target = "all", at = "1s", policy = [{ deny = { to = "echo" } }] },
           { kind = "lying-observer", target = "node:node-4", about = "node:node-5" }"#,
    );
    let p = plan(&s, 1);
    assert_eq!((p[0].start, p[0].end), (secs(3), secs(3)));
    assert_eq!(p[0].targets.len(), 5);
    assert_eq!(
        p[0].label,
        "policy on node-1, node-2, node-3, node-4, node-5: default allow; deny * -> echo"
    );
    assert_eq!((p[1].start, p[1].end), (secs(2), secs(12)));
    assert_eq!(p[1].label, "node-4 lies about node-5");
}

fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}
