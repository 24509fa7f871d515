use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
name = "one-endpoint-fails-hard"
purpose = "One endpoint answers 503 to everything: it is ejected and callers see no errors"
seed = 7
[topology]
nodes = 5
zones = ["a", "b"]
voters = 3
services = [{ name = "echo", protocol = "http", on = "all", versions = { "node-5" = "v2" } }]
[workload]
rate = 200
from = "node-1"
service = "echo"
[[phase]]
name = "steady"
duration = "5s"
[[phase]]
name = "fault"
duration = "10s"
faults = [
  { kind = "backend-errors", target = "node:node-3", rate = 1.0 },
  { kind = "loss", target = "one", peer = "rest", rate = 0.2, at = "1s", for = "2s" },
]
[[check]]
kind = "success-rate"
min = 0.999
[[check]]
kind = "traffic-share"
phase = "fault"
after = "3s"
max = 0.02
"#;

fn load(text: &str) -> Result<Scenario, ScenarioErrors> {
    Scenario::from_toml(Path::new("s.toml"), text)
}

#[test]
fn a_good_scenario_validates() {
    let s = load(GOOD).unwrap();
    assert_eq!(s.seed, 7);
    assert_eq!(s.topology.nodes.len(), 5);
    assert_eq!(s.topology.nodes[1].zone.as_deref(), Some("b"));
    // Voters spread across zones: node-1 (a), node-2 (b), node-3 (a).
    assert_eq!(s.topology.voters, ["node-1", "node-2", "node-3"]);
    assert_eq!(s.topology.services[0].versions["node-5"], "v2");
    assert_eq!(s.workload.protocol, Protocol::Http);
    assert_eq!(s.length(), Duration::from_secs(15));
    let fault = &s.phases[1].faults[1];
    assert_eq!(fault.at, Duration::from_secs(1));
    assert_eq!(fault.lasts, Some(Duration::from_secs(2)));
    assert!(matches!(
        fault.kind,
        FaultKind::Network {
            effect: NetEffect::Loss { rate },
            peer: Target::Rest,
            direction: Direction::Both
        } if rate == 0.2
    ));
    assert_eq!(s.checks[0].mode, Mode::Continuous);
    assert_eq!(
        s.checks[1].kind,
        CheckKind::TrafficShare {
            target: Target::Faulted,
            min: None,
            max: Some(0.02)
        }
    );
    assert_eq!(s.checks[1].mode, Mode::During);
}

#[test]
fn every_mistake_gets_its_own_line_naming_file_and_key() {
    let bad = GOOD
        .replace("rate = 200", "rate = 0")
        .replace(
            "kind = \"backend-errors\", target = \"node:node-3\"",
            "kind = \"backend-errors\", target = \"node:node-9\"",
        )
        .replace("rate = 0.2, at", "rate = 1.5, at")
        .replace("max = 0.02", "max = 0.02\nbelow = 0.1");
    let errors = load(&bad).unwrap_err().0;
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors.iter().all(|e| e.starts_with("s.toml: ")),
        "{errors:#?}"
    );
    assert!(errors[0].contains("workload.rate"), "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("phase[1].faults[0].target") && e.contains("node-9")));
    assert!(errors
        .iter()
        .any(|e| e.contains("phase[1].faults[1].rate") && e.contains("1.5")));
    assert!(errors
        .iter()
        .any(|e| e.contains("check[1].below") && e.contains("does not apply")));
}

#[test]
fn unknown_keys_and_kinds_are_named() {
    let e = load(&GOOD.replace("seed = 7", "seed = 7\nsped = 3"))
        .unwrap_err()
        .0;
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("sped"), "{e:?}");
    let e = load(&GOOD.replace("\"backend-errors\"", "\"backend-explodes\""))
        .unwrap_err()
        .0;
    assert!(
        e[0].contains("phase[1].faults[0].kind") && e[0].contains("backend-explodes"),
        "{e:?}"
    );
    let e = load(&GOOD.replace(
        "kind = \"success-rate\"",
        "kind = \"success-rate\"\nmode = \"sometimes\"",
    ))
    .unwrap_err()
    .0;
    assert!(e[0].contains("check[0].mode"), "{e:?}");
}

#[test]
fn faults_must_fit_their_phase_and_targets_must_exist() {
    let e = load(&GOOD.replace("at = \"1s\", for = \"2s\"", "at = \"9s\", for = \"2s\""))
        .unwrap_err()
        .0;
    assert!(
        e[0].contains("faults[1].for") && e[0].contains("outlast"),
        "{e:?}"
    );
    let e = load(&GOOD.replace("target = \"one\"", "target = \"zone:mars\""))
        .unwrap_err()
        .0;
    assert!(e[0].contains("mars"), "{e:?}");
    let e = load(&GOOD.replace("target = \"one\"", "target = \"leader\""))
        .unwrap_err()
        .0;
    assert!(e[0].contains("needs [consensus]"), "{e:?}");
}

#[test]
fn bandwidth_and_clock_offsets_parse() {
    assert_eq!(validate::faults::bytes_per_second("64KiB/s"), Some(65536));
    assert_eq!(validate::faults::bytes_per_second("1MB/s"), Some(1_000_000));
    assert_eq!(validate::faults::bytes_per_second("fast"), None);
    let s = load(&GOOD.replace(
        "{ kind = \"loss\", target = \"one\", peer = \"rest\", rate = 0.2, at = \"1s\", for = \"2s\" }",
        "{ kind = \"clock-skew\", target = \"node:node-2\", offset = \"-30m\" }",
    ))
    .unwrap();
    assert_eq!(
        s.phases[1].faults[1].kind,
        FaultKind::ClockSkew { offset_secs: -1800 }
    );
}

#[test]
fn checks_that_cannot_fail_or_cannot_find_their_nodes_are_refused() {
    let no_checks = GOOD.split("[[check]]").next().unwrap().to_owned();
    let e = load(&no_checks).unwrap_err().0;
    assert!(
        e.iter()
            .any(|l| l.contains("check") && l.contains("at least one")),
        "{e:?}"
    );
    let e = load(&GOOD.replace("max = 0.02", "max = 0.02\ntarget = \"minority\""))
        .unwrap_err()
        .0;
    assert!(e.iter().any(|l| l.contains("check[1].target")), "{e:?}");
    let e = load(&GOOD.replace("max = 0.02", "max = 1.0"))
        .unwrap_err()
        .0;
    assert!(e.iter().any(|l| l.contains("cannot fail")), "{e:?}");
    let e = load(&GOOD.replace("min = 0.999", "min = 0.999\npass_percent = 0"))
        .unwrap_err()
        .0;
    assert!(e.iter().any(|l| l.contains("pass_percent")), "{e:?}");
}

/// A scenario with the agents' decision log and a canary release.
const CONSENSUS: &str = r#"
name = "canary"
purpose = "A canary release"
[topology]
nodes = 5
zones = ["a", "b", "c"]
services = [{ name = "echo", on = "all", versions = { "node-5" = "v2" } }]
[consensus]
bootstrap_expect = 3
election_timeout = "500ms"
dead_voter_after = "3s"
weights_window = "2s"
[[canary]]
service = "echo"
baseline = "v1"
canary = "v2"
step_percent = 25
interval = "2s"
[workload]
rate = 100
from = "node-4"
service = "echo"
[[phase]]
name = "steady"
duration = "4s"
[[phase]]
name = "fault"
duration = "10s"
faults = [
  { kind = "kill", target = "leader" },
  { kind = "partition", target = "voter-majority", peer = "non-voter", at = "1s", for = "2s" },
]
[[check]]
kind = "canary-outcome"
service = "echo"
expect = "promoted"
max = "20s"
[[check]]
kind = "voters-replaced"
max = "10s"
[[check]]
kind = "decisions-resume"
max = "5s"
"#;

#[test]
fn consensus_and_canaries_validate_into_the_agents_settings() {
    let s = load(CONSENSUS).unwrap();
    let c = s.consensus.as_ref().unwrap();
    assert_eq!(c.bootstrap_expect, 3);
    assert_eq!(c.election_timeout, Some(Duration::from_millis(500)));
    assert_eq!(c.dead_voter_after, Some(Duration::from_secs(3)));
    assert_eq!(s.canaries[0].step_percent, Some(25));
    assert_eq!(s.canaries[0].interval, Some(Duration::from_secs(2)));
    assert_eq!(s.phases[1].faults[0].target, Target::Leader);
    assert_eq!(s.phases[1].faults[1].target, Target::VoterMajority);
    assert_eq!(
        s.checks[0].kind,
        CheckKind::CanaryOutcome {
            service: "echo".into(),
            expect: CanaryEnd::Promoted,
            max: Duration::from_secs(20)
        }
    );
    assert_eq!(s.checks[0].mode, Mode::Continuous);
    assert_eq!(
        s.checks[1].kind,
        CheckKind::VotersReplaced {
            target: Target::Faulted,
            max: Duration::from_secs(10),
            voters: 3
        }
    );
    assert_eq!(s.checks[1].mode, Mode::During);
    assert_eq!(s.checks[2].mode, Mode::After);
}

#[test]
fn consensus_mistakes_are_named() {
    let e = load(
        &CONSENSUS
            .replace("bootstrap_expect = 3", "bootstrap_expect = 4")
            .replace(
                "dead_voter_after = \"3s\"",
                "dead_voter_after = \"3s\"\nquorum = 2",
            ),
    )
    .unwrap_err()
    .0;
    assert!(
        e[0].contains("quorum"),
        "unknown keys are refused first: {e:?}"
    );
    let e = load(
        &CONSENSUS
            .replace("bootstrap_expect = 3", "bootstrap_expect = 4")
            .replace("dead_voter_after = \"3s\"", "dead_voter_after = \"700ms\"")
            .replace("canary = \"v2\"", "canary = \"v3\"")
            .replace("step_percent = 25", "step_percent = 0")
            .replace(
                "zones = [\"a\", \"b\", \"c\"]",
                "zones = [\"a\", \"b\", \"c\"]\nvoters = 5",
            ),
    )
    .unwrap_err()
    .0;
    let has = |key: &str, words: &str| e.iter().any(|l| l.contains(key) && l.contains(words));
    assert!(has("consensus.bootstrap_expect", "4"), "{e:?}");
    assert!(has("canary[0].canary", "v3"), "{e:?}");
    assert!(has("canary[0].step_percent", "0 is not"), "{e:?}");
    assert!(e.iter().all(|l| l.starts_with("s.toml: ")), "{e:?}");
    let e = load(
        &CONSENSUS
            .replace("dead_voter_after = \"3s\"", "dead_voter_after = \"700ms\"")
            .replace(
                "zones = [\"a\", \"b\", \"c\"]",
                "zones = [\"a\", \"b\", \"c\"]\nvoters = 5",
            ),
    )
    .unwrap_err()
    .0;
    assert!(
        e.iter()
            .any(|l| l.contains("consensus.dead_voter_after") && l.contains("twice")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("topology.voters") && l.contains("bootstrap_expect is 3")),
        "{e:?}"
    );
}

#[test]
fn consensus_checks_and_targets_need_consensus_and_their_keys() {
    let without = CONSENSUS.split("[consensus]").next().unwrap().to_owned()
        + &CONSENSUS[CONSENSUS.find("[workload]").unwrap()..];
    let e = load(&without).unwrap_err().0;
    let has = |key: &str, words: &str| e.iter().any(|l| l.contains(key) && l.contains(words));
    assert!(has("faults[0].target", "needs [consensus]"), "{e:?}");
    assert!(has("faults[1].target", "no voters"), "{e:?}");
    assert!(has("check[0].service", "no [[canary]]"), "{e:?}");
    assert!(has("check[1].kind", "needs [consensus]"), "{e:?}");
    assert!(has("check[2].kind", "needs [consensus]"), "{e:?}");
    let e = load(&CONSENSUS.replace("expect = \"promoted\"", "expect = \"done\"\nbelow = 0.1"))
        .unwrap_err()
        .0;
    assert!(
        e.iter()
            .any(|l| l.contains("check[0].expect") && l.contains("done")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("check[0].below") && l.contains("does not apply")),
        "{e:?}"
    );
    let e = load(&CONSENSUS.replace("max = \"5s\"", "max = \"5s\"\nservice = \"echo\""))
        .unwrap_err()
        .0;
    assert!(
        e.iter()
            .any(|l| l.contains("check[2].service") && l.contains("does not apply")),
        "{e:?}"
    );
    let e = load(&CONSENSUS.replace("max = \"5s\"", "max = \"5s\"\nabort = true"))
        .unwrap_err()
        .0;
    assert!(
        e.iter()
            .any(|l| l.contains("check[2].abort") && l.contains("end of the run")),
        "{e:?}"
    );
    // A rolling restart is planned node by node: a role only the agents know cannot be.
    let e = load(&CONSENSUS.replace(
        "{ kind = \"kill\", target = \"leader\" }",
        "{ kind = \"rolling-restart\", target = \"voter\" }",
    ))
    .unwrap_err()
    .0;
    assert!(
        e.iter()
            .any(|l| l.contains("faults[0].target") && l.contains("rolling restart")),
        "{e:?}"
    );
}
