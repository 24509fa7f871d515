//! Validating what a scenario says about trust: `[trust]`, `[quarantine]`, the access policy,
//! and the faults and checks that go with them.

use std::path::Path;
use std::time::Duration;

use crate::scenario::*;

/// A scenario with the CA in the decision log, a policy, a rotation, a liar and a policy change.
const TRUST: &str = r#"
name = "trust"
purpose = "Trust decisions"
[topology]
nodes = 5
zones = ["a", "b", "c"]
services = [
  { name = "echo", on = ["node-3", "node-4", "node-5"] },
  { name = "web", on = "node-1" },
  { name = "batch", on = "node-2" },
]
[consensus]
bootstrap_expect = 3
[trust]
ca = "decision-log"
leaf_lifetime = "20s"
[quarantine]
window = "10s"
probation = "2m"
max_share = 0.25
[access]
default = "deny"
[[policy]]
allow = { from = "web", to = "echo" }
[[policy]]
allow = { from = "batch", to = "*" }
[workload]
rate = 100
from = ["node-1", "node-2"]
service = "echo"
[[phase]]
name = "steady"
duration = "4s"
faults = [{ kind = "ca-rotate", target = "voter", at = "1s" }]
[[phase]]
name = "fault"
duration = "10s"
faults = [
  { kind = "lying-observer", target = "node:node-4", about = "node:node-5" },
  { kind = "policy-change", target = "all", policy = [{ deny = { from = "batch", to = "echo" } }] },
]
[[check]]
kind = "ca-rotated"
max = "30s"
[[check]]
kind = "suspected"
target = "node:node-5"
max = "10s"
[[check]]
kind = "policy-denied"
from = "node-2"
after = "2s"
min = 0.99
[[check]]
kind = "success-rate"
from = ["node-1"]
min = 0.999
"#;

fn load(text: &str) -> Result<Scenario, ScenarioErrors> {
    Scenario::from_toml(Path::new("s.toml"), text)
}

/// The mistakes in `text`, which must not validate.
fn mistakes(text: &str) -> Vec<String> {
    let e = load(text).unwrap_err().0;
    assert!(e.iter().all(|l| l.starts_with("s.toml: ")), "{e:?}");
    e
}

fn has(errors: &[String], key: &str, words: &str) -> bool {
    errors.iter().any(|l| l.contains(key) && l.contains(words))
}

#[test]
fn trust_settings_faults_and_checks_validate() {
    let s = load(TRUST).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.trust,
        TrustSpec {
            ca_in_log: true,
            leaf_lifetime: Some(Duration::from_secs(20))
        }
    );
    let q = s.quarantine.as_ref().unwrap();
    assert_eq!(q.window, Some(Duration::from_secs(10)));
    assert_eq!(q.probation, Some(Duration::from_secs(120)));
    assert_eq!(
        (q.enabled, q.min_observers, q.max_share),
        (None, None, Some(0.25))
    );
    let p = s.policy.as_ref().unwrap();
    assert_eq!(p.default, Access::Deny);
    assert_eq!(
        p.rules[1],
        PolicyRuleSpec {
            action: Access::Allow,
            from: Some("batch".into()),
            to: None
        }
    );
    assert_eq!(s.phases[0].faults[0].kind, FaultKind::CaRotate);
    assert_eq!(
        s.phases[1].faults[0].kind,
        FaultKind::LyingObserver {
            about: "node-5".into()
        }
    );
    let FaultKind::PolicyChange(changed) = &s.phases[1].faults[1].kind else {
        panic!("{:?}", s.phases[1].faults[1].kind);
    };
    assert_eq!(changed.default, Access::Allow, "the default when left out");
    assert_eq!(changed.summary(), "default allow; deny batch -> echo");
    assert!(s.phases[1].faults[1].kind.is_instant());
    assert!(!s.phases[1].faults[0].kind.is_instant());
    assert_eq!(
        s.checks[0].kind,
        CheckKind::CaRotated {
            max: Duration::from_secs(30)
        }
    );
    assert_eq!(s.checks[0].mode, Mode::During);
    assert_eq!(
        s.checks[1].kind,
        CheckKind::Suspected {
            target: Target::Node("node-5".into()),
            max: Duration::from_secs(10)
        }
    );
    assert_eq!(
        s.checks[2].kind,
        CheckKind::PolicyDenied {
            min: 0.99,
            from: vec!["node-2".into()]
        }
    );
    assert_eq!(s.checks[2].mode, Mode::After);
    assert_eq!(
        s.checks[3].kind,
        CheckKind::SuccessRate {
            min: 0.999,
            from: vec!["node-1".into()]
        }
    );
}

#[test]
fn trust_and_policy_mistakes_are_named() {
    let e = mistakes(
        &TRUST
            .replace("ca = \"decision-log\"", "ca = \"vault\"")
            .replace("window = \"10s\"", "window = \"1s\"\nmin_observers = 1")
            .replace("max_share = 0.25", "max_share = 0.9")
            .replace("default = \"deny\"", "default = \"maybe\"")
            .replace(
                "from = \"web\", to = \"echo\"",
                "from = \"web\", to = \"payments\"",
            )
            .replace(
                "allow = { from = \"batch\", to = \"*\" }",
                "allow = { from = \"batch\" }\ndeny = { from = \"batch\" }",
            ),
    );
    assert!(has(&e, "trust.ca", "vault"), "{e:?}");
    // The leaf lifetime needs the CA in the log (the faulty `ca` leaves it out).
    assert!(has(&e, "trust.leaf_lifetime", "decision-log"), "{e:?}");
    assert!(has(&e, "quarantine.window", "shorter than 2s"), "{e:?}");
    assert!(
        has(&e, "quarantine.min_observers", "1 is not 2 to 32"),
        "{e:?}"
    );
    assert!(has(&e, "quarantine.max_share", "0.9"), "{e:?}");
    assert!(has(&e, "access.default", "maybe"), "{e:?}");
    assert!(
        has(&e, "policy[0].allow.to", "`payments` is not a service"),
        "{e:?}"
    );
    assert!(has(&e, "policy[1]", "exactly one of allow"), "{e:?}");
    // Without the CA in the log, nothing rotates and nothing is judged on a rotation.
    assert!(
        has(&e, "faults[0].kind", "`ca-rotate` needs [trust]"),
        "{e:?}"
    );
    assert!(
        has(&e, "check[0].kind", "`ca-rotated` needs [trust]"),
        "{e:?}"
    );
    let e = mistakes(&TRUST.replace("ca = \"decision-log\"", "ca = \"files\""));
    assert!(has(&e, "trust.leaf_lifetime", "decision-log"), "{e:?}");
    // Two entries for one source and destination.
    let e = mistakes(&TRUST.replace(
        "[workload]",
        "[[policy]]\ndeny = { from = \"web\", to = \"echo\" }\n[workload]",
    ));
    assert!(has(&e, "policy[2]", "same from and to"), "{e:?}");
}

#[test]
fn trust_needs_consensus() {
    let without = TRUST.replace("[consensus]\nbootstrap_expect = 3\n", "");
    let e = mistakes(&without);
    assert!(has(&e, "trust.ca", "needs [consensus]"), "{e:?}");
    assert!(has(&e, "quarantine", "needs [consensus]"), "{e:?}");
    assert!(has(&e, "access", "needs [consensus]"), "{e:?}");
    assert!(
        has(&e, "faults[0].kind", "`lying-observer` needs [consensus]"),
        "{e:?}"
    );
    assert!(
        has(&e, "faults[1].kind", "`policy-change` needs [consensus]"),
        "{e:?}"
    );
}

#[test]
fn trust_faults_and_checks_name_their_mistakes() {
    let e = mistakes(
        &TRUST
            .replace("about = \"node:node-5\"", "about = \"node-5\"")
            .replace(
                "{ kind = \"ca-rotate\", target = \"voter\", at = \"1s\" }",
                "{ kind = \"ca-rotate\", target = \"voter\", at = \"1s\", for = \"1s\", rate = 0.5 }",
            )
            .replace(
                "policy = [{ deny = { from = \"batch\", to = \"echo\" } }]",
                "offset = \"+1h\"",
            )
            .replace("from = \"node-2\"", "from = \"node-3\"")
            .replace("from = [\"node-1\"]", "from = []"),
    );
    assert!(
        has(&e, "faults[0].about", "`node-5`: name one node"),
        "{e:?}"
    );
    assert!(has(&e, "faults[0].for", "one instant"), "{e:?}");
    assert!(
        has(&e, "faults[0].rate", "does not apply to `ca-rotate`"),
        "{e:?}"
    );
    assert!(has(&e, "faults[1].policy", "missing"), "{e:?}");
    assert!(has(&e, "faults[1].offset", "does not apply"), "{e:?}");
    assert!(
        has(&e, "check[2].from", "`node-3` is not a workload source"),
        "{e:?}"
    );
    assert!(has(&e, "check[3].from", "at least one"), "{e:?}");
    // A liar about itself; a suspicion of no node; a policy check on TCP traffic.
    let e = mistakes(
        &TRUST
            .replace("about = \"node:node-5\"", "about = \"node:node-4\"")
            .replace("target = \"node:node-5\"\nmax", "target = \"faulted\"\nmax")
            .replace(
                "{ name = \"echo\", on = [",
                "{ name = \"echo\", protocol = \"tcp\", on = [",
            ),
    );
    assert!(has(&e, "faults[0].about", "lying about itself"), "{e:?}");
    assert!(
        has(&e, "check[1].target", "the node under suspicion"),
        "{e:?}"
    );
    assert!(has(&e, "check[2].kind", "needs an http workload"), "{e:?}");
    // A rotation check with nothing that rotates.
    let e = mistakes(&TRUST.replace(
        "faults = [{ kind = \"ca-rotate\", target = \"voter\", at = \"1s\" }]",
        "",
    ));
    assert!(has(&e, "check[0].kind", "nothing rotates"), "{e:?}");
    // A policy-denied check without its sources, or that could not fail.
    let e = mistakes(
        &TRUST
            .replace("from = \"node-2\"\n", "")
            .replace("min = 0.99\n", "min = 0.0\n"),
    );
    assert!(has(&e, "check[2].from", "missing"), "{e:?}");
    assert!(has(&e, "check[2].min", "cannot fail"), "{e:?}");
}
