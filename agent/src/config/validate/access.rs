//! `[access]` and `[[policy]]`: the cell's access policy, which the Raft leader proposes.
//!
//! ```toml
//! [access]
//! default = "deny"                                  # or "allow" (the default)
//!
//! [[policy]]
//! allow = { from = "web", to = "payments" }         # or deny = { ... }; "*" or omitted: any
//! ```

use std::collections::BTreeMap;

use plexus_protocol::trust::MAX_POLICY_RULES;
use plexus_protocol::{AccessPolicy, PolicyAction, PolicyRule, ServiceName};

use super::Checker;
use crate::config::raw::{RawAccess, RawPolicy, RawPolicyMatch};

/// The configured policy, in precedence order; `None` when the file has neither `[access]`
/// nor `[[policy]]` (the agent then never proposes one). `voter_eligible`: whether the file
/// has `[consensus]`, without which the agent never leads and its policy would be ignored.
pub(super) fn policy(
    c: &mut Checker<'_>,
    access: Option<&RawAccess>,
    raw: &[RawPolicy],
    voter_eligible: bool,
) -> Option<AccessPolicy> {
    if access.is_none() && raw.is_empty() {
        return None;
    }
    if !voter_eligible {
        let key = if access.is_some() { "access" } else { "policy" };
        c.error(
            key,
            "only agents with [consensus] propose the access policy (every agent enforces the \
             committed one); put [access] and [[policy]] on the voters",
        );
    }
    let default = match access.and_then(|a| a.default.as_deref()) {
        None | Some("allow") => PolicyAction::Allow,
        Some("deny") => PolicyAction::Deny,
        Some(other) => {
            c.error(
                "access.default",
                format!("{other:?} is not \"allow\" or \"deny\""),
            );
            PolicyAction::Allow
        }
    };
    if raw.len() > MAX_POLICY_RULES {
        c.error(
            "policy",
            format!(
                "{} entries; a cell's policy has at most {MAX_POLICY_RULES}",
                raw.len()
            ),
        );
    }
    let mut rules = Vec::new();
    let mut seen: BTreeMap<Ends, usize> = BTreeMap::new();
    for (i, entry) in raw.iter().enumerate() {
        let (action, label, matching) = match (&entry.allow, &entry.deny) {
            (Some(m), None) => (PolicyAction::Allow, "allow", m),
            (None, Some(m)) => (PolicyAction::Deny, "deny", m),
            (Some(_), Some(_)) => {
                c.error(
                    format!("policy[{i}]"),
                    "has both allow and deny; write one [[policy]] entry for each",
                );
                continue;
            }
            (None, None) => {
                c.error(
                    format!("policy[{i}]"),
                    "needs allow = { from = \"...\", to = \"...\" } or deny = { ... }",
                );
                continue;
            }
        };
        let Some((from, to)) = ends(c, &format!("policy[{i}].{label}"), matching) else {
            continue;
        };
        if let Some(first) = seen.get(&(from.clone(), to.clone())) {
            c.error(
                format!("policy[{i}]"),
                format!(
                    "policy[{first}] already has a rule from {} to {}; one entry per source \
                     and destination",
                    any(from.as_ref()),
                    any(to.as_ref())
                ),
            );
            continue;
        }
        seen.insert((from.clone(), to.clone()), i);
        rules.push(PolicyRule { from, to, action });
    }
    Some(crate::access::rules::canonical(&AccessPolicy {
        default,
        rules,
    }))
}

fn any(name: Option<&ServiceName>) -> &str {
    crate::access::rules::name_or_any(name)
}

/// A rule's source and destination; `None` is any.
type Ends = (Option<ServiceName>, Option<ServiceName>);

/// `from` and `to` of one entry; `None` when either is not a service name.
fn ends(c: &mut Checker<'_>, key: &str, matching: &RawPolicyMatch) -> Option<Ends> {
    let mut name = |end: &str, value: Option<&String>| -> Result<Option<ServiceName>, ()> {
        match value.map(String::as_str) {
            None | Some("*") => Ok(None),
            Some(value) => ServiceName::new(value).map(Some).map_err(|e| {
                c.error(
                    format!("{key}.{end}"),
                    format!("{e}; write a service name, or \"*\" for any"),
                )
            }),
        }
    };
    let from = name("from", matching.from.as_ref());
    let to = name("to", matching.to.as_ref());
    Some((from.ok()?, to.ok()?))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use plexus_protocol::{AccessPolicy, PolicyAction};

    use super::super::{parse, Checker};

    /// Validates only the access keys of `text`: (policy, errors as `KEY: REASON`).
    fn check(text: &str) -> (Option<AccessPolicy>, Vec<String>) {
        let file = Path::new("/etc/plexus/test.toml");
        let raw = parse(file, text).unwrap_or_else(|e| panic!("{e}"));
        let mut c = Checker {
            file,
            errors: Vec::new(),
        };
        let voter = raw.consensus.bootstrap_expect.is_some();
        let policy = super::policy(&mut c, raw.access.as_ref(), &raw.policy, voter);
        let errors = c
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.reason))
            .collect();
        (policy, errors)
    }

    const VOTER: &str = "[consensus]\nbootstrap_expect = 3\n";

    fn texts(policy: &AccessPolicy) -> Vec<String> {
        policy
            .rules
            .iter()
            .map(crate::access::rules::rule_text)
            .collect()
    }

    #[test]
    fn no_policy_keys_means_no_policy_to_propose() {
        assert_eq!(check(VOTER), (None, vec![]));
        assert_eq!(check(""), (None, vec![]));
    }

    #[test]
    fn rules_and_default_become_a_policy_in_precedence_order() {
        let (policy, errors) = check(&format!(
            "{VOTER}[access]\ndefault = \"deny\"\n\
             [[policy]]\nallow = {{ to = \"status\" }}\n\
             [[policy]]\nallow = {{ from = \"web\", to = \"payments\" }}\n\
             [[policy]]\ndeny = {{ from = \"batch\", to = \"*\" }}\n"
        ));
        assert_eq!(errors, Vec::<String>::new());
        let policy = policy.unwrap();
        assert_eq!(policy.default, PolicyAction::Deny);
        assert_eq!(
            texts(&policy),
            [
                "allow web -> payments",
                "allow * -> status",
                "deny batch -> *"
            ]
        );
    }

    #[test]
    fn the_default_is_allow_and_access_alone_is_a_policy() {
        let (policy, errors) = check(&format!("{VOTER}[access]\n"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(policy, Some(AccessPolicy::default()));
        let (policy, _) = check(&format!(
            "{VOTER}[[policy]]\ndeny = {{ from = \"batch\", to = \"payments\" }}\n"
        ));
        assert_eq!(policy.unwrap().default, PolicyAction::Allow);
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let (_, errors) = check(&format!(
            "{VOTER}[access]\ndefault = \"maybe\"\n\
             [[policy]]\nallow = {{ from = \"web\", to = \"payments\" }}\n\
             deny = {{ from = \"web\", to = \"payments\" }}\n\
             [[policy]]\n\
             [[policy]]\nallow = {{ from = \"bad name\", to = \"pay/ments\" }}\n\
             [[policy]]\nallow = {{ from = \"web\", to = \"ledger\" }}\n\
             [[policy]]\ndeny = {{ from = \"web\", to = \"ledger\" }}\n"
        ));
        let expected = [
            "access.default: \"maybe\" is not \"allow\" or \"deny\"",
            "policy[0]: has both allow and deny; write one [[policy]] entry for each",
            "policy[1]: needs allow = { from = \"...\", to = \"...\" } or deny = { ... }",
            "policy[2].allow.from: service name \"bad name\"",
            "policy[2].allow.to: service name \"pay/ments\"",
            "policy[4]: policy[3] already has a rule from web to ledger; one entry per source \
             and destination",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error:?} vs {expected:?}");
        }
        assert!(errors[3].ends_with("; write a service name, or \"*\" for any"));
    }

    #[test]
    fn a_policy_on_an_agent_that_never_leads_is_refused() {
        let (_, errors) = check("[[policy]]\nallow = { from = \"web\", to = \"payments\" }\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("policy: only agents with [consensus] propose"));
        let (_, errors) = check("[access]\ndefault = \"deny\"\n");
        assert!(errors[0].starts_with("access: only agents with [consensus]"));
    }

    #[test]
    fn too_many_rules_are_refused() {
        let mut text = VOTER.to_owned();
        for i in 0..65 {
            text += &format!("[[policy]]\nallow = {{ from = \"s{i}\", to = \"payments\" }}\n");
        }
        let (_, errors) = check(&text);
        assert_eq!(
            errors,
            ["policy: 65 entries; a cell's policy has at most 64"]
        );
    }

    #[test]
    fn unknown_keys_in_a_rule_are_refused_by_name() {
        let file = Path::new("/etc/plexus/test.toml");
        let error = parse(
            file,
            "[[policy]]\nallow = { from = \"web\", too = \"x\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("/etc/plexus/test.toml: policy[0].allow.too: unknown field"),
            "{error}"
        );
    }
}
