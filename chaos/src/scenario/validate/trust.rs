//! Validating `[trust]`, `[quarantine]` and the access policy (`[access]`, `[[policy]]`, and
//! a `policy-change` fault's new policy): what the agent would refuse, and what could never
//! matter in this topology (a rule about a service no node hosts).

use std::time::Duration;

use plexus_protocol::ServiceName;

use super::super::raw::{RawPolicy, RawPolicyMatch, RawQuarantine, RawTrust};
use super::Validator;
use crate::scenario::*;

/// The agent's bounds on `tls.leaf_lifetime`.
const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(10);
const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

impl Validator<'_> {
    pub(super) fn trust(&mut self, raw: Option<&RawTrust>) -> TrustSpec {
        let Some(raw) = raw else {
            return TrustSpec::default();
        };
        let ca_in_log = match raw.ca.as_deref() {
            None | Some("files") => false,
            Some("decision-log") => true,
            Some(other) => {
                self.error(
                    "trust.ca",
                    format!("`{other}`: use \"files\" (the harness's CA issues every certificate) or \"decision-log\" (the agents hold the CA in their log)"),
                );
                false
            }
        };
        if ca_in_log && !self.consensus {
            self.error(
                "trust.ca",
                "\"decision-log\" needs [consensus]: the CA lives in the agents' decision log",
            );
        }
        let leaf_lifetime = raw.leaf_lifetime.as_deref().and_then(|v| {
            self.duration(
                "trust.leaf_lifetime",
                v,
                MIN_LEAF_LIFETIME,
                MAX_LEAF_LIFETIME,
            )
        });
        if raw.leaf_lifetime.is_some() && !ca_in_log {
            self.error(
                "trust.leaf_lifetime",
                "applies to leaves the leader signs: set ca = \"decision-log\"",
            );
        }
        TrustSpec {
            ca_in_log,
            leaf_lifetime,
        }
    }

    pub(super) fn quarantine(&mut self, raw: Option<&RawQuarantine>) -> Option<QuarantineSpec> {
        let raw = raw?;
        if !self.consensus {
            self.error(
                "quarantine",
                "quarantine verdicts are the decision log leader's: needs [consensus]",
            );
        }
        let day = Duration::from_secs(86_400);
        let min_observers = raw.min_observers.and_then(|n| match u32::try_from(n) {
            Ok(n @ 2..=32) => Some(n),
            _ => {
                self.error(
                    "quarantine.min_observers",
                    format!("{n} is not 2 to 32 (one observer alone must never quarantine a node)"),
                );
                None
            }
        });
        let window = raw
            .window
            .as_deref()
            .and_then(|v| self.duration("quarantine.window", v, Duration::from_secs(2), day));
        let probation = raw
            .probation
            .as_deref()
            .and_then(|v| self.duration("quarantine.probation", v, Duration::ZERO, day));
        let max_share = raw.max_share.filter(|s| {
            let ok = s.is_finite() && *s > 0.0 && *s <= 0.5;
            if !ok {
                self.error(
                    "quarantine.max_share",
                    format!("{s} is not above 0 and at most 0.5"),
                );
            }
            ok
        });
        Some(QuarantineSpec {
            enabled: raw.enabled,
            min_observers,
            window,
            probation,
            max_share,
        })
    }

    /// An access policy: `default` (`allow` when omitted) and the rules; `key` names where
    /// it was written (`access`/`policy`, or a fault's keys), `rules_key` the rules' key.
    pub(super) fn policy(
        &mut self,
        (default_key, default): (&str, Option<&str>),
        (rules_key, raw): (&str, &[RawPolicy]),
        services: &[ServiceSpec],
    ) -> Option<PolicySpec> {
        let mut bad = false;
        let default = match default {
            None | Some("allow") => Access::Allow,
            Some("deny") => Access::Deny,
            Some(other) => {
                self.error(default_key, format!("`{other}`: use \"allow\" or \"deny\""));
                bad = true;
                Access::Allow
            }
        };
        let mut rules: Vec<PolicyRuleSpec> = Vec::new();
        for (i, entry) in raw.iter().enumerate() {
            let key = format!("{rules_key}[{i}]");
            let (action, word, ends) = match (&entry.allow, &entry.deny) {
                (Some(m), None) => (Access::Allow, "allow", m),
                (None, Some(m)) => (Access::Deny, "deny", m),
                _ => {
                    self.error(
                        key,
                        "write exactly one of allow = { from = \"...\", to = \"...\" } and deny = { ... }",
                    );
                    bad = true;
                    continue;
                }
            };
            let Some((from, to)) = self.ends(&format!("{key}.{word}"), ends, services) else {
                bad = true;
                continue;
            };
            if rules.iter().any(|r| r.from == from && r.to == to) {
                self.error(
                    key,
                    "another entry has the same from and to; one entry per source and destination",
                );
                bad = true;
                continue;
            }
            rules.push(PolicyRuleSpec { action, from, to });
        }
        (!bad).then_some(PolicySpec { default, rules })
    }

    /// A rule's `from` and `to`: `*` or omitted is any, else a service of the topology.
    fn ends(
        &mut self,
        key: &str,
        raw: &RawPolicyMatch,
        services: &[ServiceSpec],
    ) -> Option<(Option<String>, Option<String>)> {
        let mut end = |name: &str, value: Option<&String>| -> Result<Option<String>, ()> {
            match value.map(String::as_str) {
                None | Some("*") => Ok(None),
                Some(v) => {
                    if let Err(e) = ServiceName::new(v) {
                        self.error(format!("{key}.{name}"), format!("{e}; or \"*\" for any"));
                        Err(())
                    } else if !services.iter().any(|s| s.name == v) {
                        self.error(
                            format!("{key}.{name}"),
                            format!("`{v}` is not a service of the topology: the rule could never apply"),
                        );
                        Err(())
                    } else {
                        Ok(Some(v.to_owned()))
                    }
                }
            }
        };
        let from = end("from", raw.from.as_ref());
        let to = end("to", raw.to.as_ref());
        Some((from.ok()?, to.ok()?))
    }
}
