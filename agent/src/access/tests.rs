use plexus_protocol::{AccessPolicy, PolicyRule};

use super::*;

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// What each node hosts, as the view would say.
fn callers(nodes: &[(&str, &[&str])]) -> table::CallerServices {
    nodes
        .iter()
        .map(|(id, services)| (node(id), services.iter().map(|s| svc(s)).collect()))
        .collect()
}

fn committed(index: u64, policy: AccessPolicy) -> CommittedState {
    let mut state = CommittedState {
        applied_index: index,
        ..CommittedState::default()
    };
    state.trust.policy = policy;
    state
}

fn allow(from: Option<&str>, to: &str) -> PolicyRule {
    PolicyRule {
        from: from.map(svc),
        to: Some(svc(to)),
        action: PolicyAction::Allow,
    }
}

fn web_only() -> AccessPolicy {
    AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![allow(Some("web"), "payments")],
    }
}

fn gate(telemetry: &Telemetry) -> AccessGate {
    AccessGate::new(
        vec![svc("payments")],
        PeerObserver::new(),
        telemetry.clone(),
        &committed(5, web_only()),
        callers(&[("node-web", &["web"]), ("node-batch", &["batch"])]),
    )
}

#[test]
fn a_denied_call_is_counted_by_service_and_caller() {
    let telemetry = Telemetry::new();
    let gate = gate(&telemetry);
    let payments = svc("payments");
    assert_eq!(gate.check(&node("node-web"), &payments), Ok(()));
    let denied = gate.check(&node("node-batch"), &payments).unwrap_err();
    assert_eq!(denied.caller_services, [svc("batch")]);
    assert!(gate.check(&node("node-batch"), &payments).is_err());
    let metrics = telemetry.render();
    let series = "plexus_policy_refusals_total{service=\"payments\",caller=\"node-batch\"} 2";
    assert!(metrics.contains(series), "{metrics}");
    assert!(!metrics.contains("caller=\"node-web\""), "{metrics}");
}

#[test]
fn a_new_policy_or_a_node_hosting_something_else_takes_effect_on_refresh() {
    let telemetry = Telemetry::new();
    let gate = gate(&telemetry);
    let payments = svc("payments");
    let both = AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![
            allow(Some("web"), "payments"),
            allow(Some("batch"), "payments"),
        ],
    };
    let mesh = callers(&[("node-web", &["web"]), ("node-batch", &["batch"])]);
    gate.refresh(&committed(9, both), mesh);
    assert_eq!(gate.check(&node("node-batch"), &payments), Ok(()));

    // The same policy at a later index, with the web node now hosting something else.
    let moved = callers(&[("node-web", &["report"])]);
    gate.refresh(&committed(12, web_only()), moved);
    assert!(gate.check(&node("node-web"), &payments).is_err());
    gate.refresh(
        &committed(15, web_only()),
        callers(&[("node-web", &["web"])]),
    );
    assert_eq!(gate.check(&node("node-web"), &payments), Ok(()));
}

#[test]
fn the_policy_document_lists_rules_in_precedence_order_with_wildcards() {
    let policy = AccessPolicy {
        default: PolicyAction::Deny,
        rules: vec![
            allow(None, "status"),
            allow(Some("web"), "payments"),
            PolicyRule {
                from: Some(svc("batch")),
                to: None,
                action: PolicyAction::Deny,
            },
        ],
    };
    let doc = policy_json(&committed(3, policy));
    assert_eq!(doc["default"], "deny");
    assert_eq!(doc["applied_index"], 3);
    let rules: Vec<String> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} -> {}", r["action"], r["from"], r["to"]).replace('"', ""))
        .collect();
    assert_eq!(
        rules,
        [
            "allow web -> payments",
            "allow * -> status",
            "deny batch -> *"
        ]
    );
}
