//! Access rules as people read them: in precedence order, one line each.

use plexus_protocol::{AccessPolicy, PolicyAction, PolicyRule, ServiceName};

/// How specific a rule is, as [`AccessPolicy::decide`] ranks rules: exact source and
/// destination, then any source, then any destination, then neither.
pub fn specificity(rule: &PolicyRule) -> u8 {
    match (&rule.from, &rule.to) {
        (Some(_), Some(_)) => 3,
        (None, Some(_)) => 2,
        (Some(_), None) => 1,
        (None, None) => 0,
    }
}

/// The rules in the order they take effect: more specific first, denies before allows among
/// equally specific ones, then by name. The first rule that matches a call is the one
/// [`AccessPolicy::decide`] applies.
pub fn in_precedence_order(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut sorted = rules.to_vec();
    sorted.sort_by(|a, b| {
        specificity(b)
            .cmp(&specificity(a))
            .then_with(|| deny_first(a.action).cmp(&deny_first(b.action)))
            .then_with(|| a.from.cmp(&b.from))
            .then_with(|| a.to.cmp(&b.to))
    });
    sorted
}

fn deny_first(action: PolicyAction) -> u8 {
    match action {
        PolicyAction::Deny => 0,
        PolicyAction::Allow => 1,
    }
}

/// The same policy with its rules in precedence order: two agents configured with the same
/// rules in different orders propose the same policy.
pub fn canonical(policy: &AccessPolicy) -> AccessPolicy {
    AccessPolicy {
        default: policy.default,
        rules: in_precedence_order(&policy.rules),
    }
}

/// `*` for "any", else the name.
pub fn name_or_any(name: Option<&ServiceName>) -> &str {
    name.map_or("*", ServiceName::as_str)
}

/// `allow web -> payments`, `deny * -> ledger`.
pub fn rule_text(rule: &PolicyRule) -> String {
    format!(
        "{} {} -> {}",
        rule.action.label(),
        name_or_any(rule.from.as_ref()),
        name_or_any(rule.to.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn rule(from: Option<&str>, to: Option<&str>, action: PolicyAction) -> PolicyRule {
        PolicyRule {
            from: from.map(svc),
            to: to.map(svc),
            action,
        }
    }

    fn mixed() -> Vec<PolicyRule> {
        use PolicyAction::{Allow, Deny};
        vec![
            rule(None, None, Allow),
            rule(Some("web"), None, Deny),
            rule(None, Some("payments"), Deny),
            rule(Some("web"), Some("payments"), Allow),
            rule(Some("batch"), Some("payments"), Allow),
            rule(Some("batch"), Some("payments"), Deny),
            rule(None, Some("ledger"), Allow),
            rule(Some("web"), Some("ledger"), Deny),
        ]
    }

    #[test]
    fn precedence_order_is_most_specific_then_deny_first() {
        let texts: Vec<String> = in_precedence_order(&mixed())
            .iter()
            .map(rule_text)
            .collect();
        assert_eq!(
            texts,
            [
                "deny batch -> payments",
                "deny web -> ledger",
                "allow batch -> payments",
                "allow web -> payments",
                "deny * -> payments",
                "allow * -> ledger",
                "deny web -> *",
                "allow * -> *",
            ]
        );
    }

    #[test]
    fn the_first_matching_rule_in_precedence_order_is_what_decide_applies() {
        let policy = AccessPolicy {
            default: PolicyAction::Deny,
            rules: mixed(),
        };
        let ordered = in_precedence_order(&policy.rules);
        let names = ["web", "batch", "payments", "ledger", "other"];
        let mut callers: Vec<Vec<ServiceName>> = vec![vec![]];
        callers.extend(names.iter().map(|n| vec![svc(n)]));
        callers.push(vec![svc("web"), svc("batch")]);
        for without_catch_all in [false, true] {
            let mut policy = policy.clone();
            if without_catch_all {
                policy.rules.retain(|r| specificity(r) > 0);
            }
            let ordered: Vec<&PolicyRule> = ordered
                .iter()
                .filter(|r| !without_catch_all || specificity(r) > 0)
                .collect();
            for caller in &callers {
                for to in names.map(svc) {
                    let first = ordered.iter().find(|r| {
                        r.to.as_ref().is_none_or(|t| *t == to)
                            && r.from.as_ref().is_none_or(|f| caller.contains(f))
                    });
                    let expected = first.map_or(policy.default, |r| r.action);
                    assert_eq!(policy.decide(caller, &to), expected, "{caller:?} -> {to}");
                }
            }
        }
    }

    #[test]
    fn canonical_policies_do_not_depend_on_the_order_written() {
        let mut reversed = mixed();
        reversed.reverse();
        let a = AccessPolicy {
            default: PolicyAction::Deny,
            rules: mixed(),
        };
        let b = AccessPolicy {
            default: PolicyAction::Deny,
            rules: reversed,
        };
        assert_ne!(a, b);
        assert_eq!(canonical(&a), canonical(&b));
    }
}
