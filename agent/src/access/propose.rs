//! What the Raft leader proposes about the access policy: its configured policy, when the
//! committed one differs.
//!
//! Only a leader whose configuration has `[[policy]]` or `[access]` proposes; a leader without
//! either proposes nothing, so agents that carry no policy never overwrite a committed one.
//! Like the other leader policies ([`crate::decide`]), it waits for its own proposal: after
//! proposing it stays quiet until the committed policy matches or [`RESEND_AFTER`] has passed
//! (the proposal may have been dropped by a leader change).

use std::time::Instant;

use plexus_protocol::{AccessPolicy, Decision, DecisionKind, Evidence, PolicyAction, PolicyRule};

use super::rules::{canonical, rule_text};
use crate::decide::{Proposer, RESEND_AFTER};

/// The leader's memory of its policy proposals.
#[derive(Debug, Clone)]
pub struct PolicyProposer {
    configured: Option<AccessPolicy>,
    proposed_at: Option<Instant>,
}

impl PolicyProposer {
    /// `configured`: this agent's `[[policy]]`/`[access]`, `None` when it has neither.
    pub fn new(configured: Option<AccessPolicy>) -> Self {
        Self {
            configured: configured.as_ref().map(canonical),
            proposed_at: None,
        }
    }

    /// Replaces the configured policy (a reload); a pending proposal of the old one is
    /// forgotten, so the new one is proposed at the next step if it differs.
    pub fn configure(&mut self, configured: Option<AccessPolicy>) {
        *self = Self::new(configured);
    }

    /// Forgets a pending proposal (the node stopped leading).
    pub fn forget(&mut self) {
        self.proposed_at = None;
    }

    /// The `Policy` decision to propose now, if any.
    pub fn next(
        &mut self,
        committed: &AccessPolicy,
        proposer: &Proposer,
        now: Instant,
    ) -> Option<Decision> {
        let wanted = self.configured.as_ref()?;
        if wanted == committed {
            self.proposed_at = None;
            return None;
        }
        if self
            .proposed_at
            .is_some_and(|at| now.saturating_duration_since(at) < RESEND_AFTER)
        {
            return None;
        }
        self.proposed_at = Some(now);
        let (reason, evidence) = explain(committed, wanted);
        Some(proposer.decision(
            DecisionKind::Policy {
                policy: wanted.clone(),
            },
            reason,
            evidence,
        ))
    }
}

fn deny_flag(action: PolicyAction) -> f64 {
    match action {
        PolicyAction::Deny => 1.0,
        PolicyAction::Allow => 0.0,
    }
}

/// The reason and evidence of replacing `committed` by `wanted`: counts and the default first,
/// then every rule added (value 1) or withdrawn (value 0, reference 1).
fn explain(committed: &AccessPolicy, wanted: &AccessPolicy) -> (String, Vec<Evidence>) {
    let added: Vec<&PolicyRule> = wanted
        .rules
        .iter()
        .filter(|r| !committed.rules.contains(r))
        .collect();
    let withdrawn: Vec<&PolicyRule> = committed
        .rules
        .iter()
        .filter(|r| !wanted.rules.contains(r))
        .collect();
    let mut reason = format!(
        "the leader's configured access policy differs from the committed one: {} rules, \
         default {}",
        wanted.rules.len(),
        wanted.default.label()
    );
    if wanted.default != committed.default {
        reason += &format!(" (was {})", committed.default.label());
    }
    let listed = |rules: &[&PolicyRule]| {
        rules
            .iter()
            .map(|r| rule_text(r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !added.is_empty() {
        reason += &format!("; adds {}", listed(&added));
    }
    if !withdrawn.is_empty() {
        reason += &format!("; withdraws {}", listed(&withdrawn));
    }
    let mut evidence = vec![
        Evidence {
            subject: "access policy".into(),
            signal: "rules".into(),
            value: wanted.rules.len() as f64,
            reference: Some(committed.rules.len() as f64),
        },
        Evidence {
            subject: "access policy".into(),
            signal: "default_deny".into(),
            value: deny_flag(wanted.default),
            reference: Some(deny_flag(committed.default)),
        },
    ];
    evidence.extend(added.iter().map(|r| Evidence {
        subject: rule_text(r),
        signal: "rule_added".into(),
        value: 1.0,
        reference: None,
    }));
    evidence.extend(withdrawn.iter().map(|r| Evidence {
        subject: rule_text(r),
        signal: "rule_withdrawn".into(),
        value: 0.0,
        reference: Some(1.0),
    }));
    (reason, evidence)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use plexus_protocol::{NodeId, ServiceName};

    fn proposer() -> Proposer {
        Proposer {
            node: NodeId::new("leader").unwrap(),
            now_ms: 1_000,
        }
    }

    fn allow(from: &str, to: &str) -> PolicyRule {
        PolicyRule {
            from: Some(ServiceName::new(from).unwrap()),
            to: Some(ServiceName::new(to).unwrap()),
            action: PolicyAction::Allow,
        }
    }

    fn web_to_payments() -> AccessPolicy {
        AccessPolicy {
            default: PolicyAction::Deny,
            rules: vec![allow("web", "payments")],
        }
    }

    #[test]
    fn an_agent_without_policy_configuration_proposes_nothing() {
        let mut access = PolicyProposer::new(None);
        let now = Instant::now();
        assert!(access.next(&web_to_payments(), &proposer(), now).is_none());
        assert!(access
            .next(&AccessPolicy::default(), &proposer(), now)
            .is_none());
    }

    #[test]
    fn a_differing_committed_policy_is_replaced_by_the_configured_one() {
        let mut access = PolicyProposer::new(Some(web_to_payments()));
        let decision = access
            .next(&AccessPolicy::default(), &proposer(), Instant::now())
            .expect("a proposal");
        assert_eq!(
            decision.kind,
            DecisionKind::Policy {
                policy: web_to_payments()
            }
        );
        assert_eq!(decision.proposer.as_str(), "leader");
        assert!(decision.validate().is_ok(), "{decision:?}");
        assert_eq!(
            decision.reason,
            "the leader's configured access policy differs from the committed one: 1 rules, \
             default deny (was allow); adds allow web -> payments"
        );
        let signals: Vec<(&str, &str, f64)> = decision
            .evidence
            .iter()
            .map(|e| (e.subject.as_str(), e.signal.as_str(), e.value))
            .collect();
        assert_eq!(
            signals,
            [
                ("access policy", "rules", 1.0),
                ("access policy", "default_deny", 1.0),
                ("allow web -> payments", "rule_added", 1.0),
            ]
        );
    }

    #[test]
    fn a_matching_committed_policy_needs_no_proposal() {
        let mut access = PolicyProposer::new(Some(web_to_payments()));
        assert!(access
            .next(&web_to_payments(), &proposer(), Instant::now())
            .is_none());
    }

    #[test]
    fn the_leader_waits_for_its_own_proposal_then_resends() {
        let mut access = PolicyProposer::new(Some(web_to_payments()));
        let t0 = Instant::now();
        let committed = AccessPolicy::default();
        assert!(access.next(&committed, &proposer(), t0).is_some());
        let soon = t0 + Duration::from_secs(1);
        assert!(access.next(&committed, &proposer(), soon).is_none());
        let later = t0 + RESEND_AFTER;
        assert!(access.next(&committed, &proposer(), later).is_some());
        // Once committed, a later change (someone else's proposal) is answered at once.
        assert!(access
            .next(&web_to_payments(), &proposer(), later)
            .is_none());
        let changed = later + Duration::from_millis(1);
        assert!(access.next(&committed, &proposer(), changed).is_some());
        access.forget();
        assert!(access.next(&committed, &proposer(), changed).is_some());
    }

    #[test]
    fn withdrawn_rules_are_named() {
        let mut access = PolicyProposer::new(Some(AccessPolicy {
            default: PolicyAction::Deny,
            rules: vec![],
        }));
        let decision = access
            .next(&web_to_payments(), &proposer(), Instant::now())
            .unwrap();
        assert!(decision.reason.ends_with("withdraws allow web -> payments"));
        assert_eq!(decision.evidence[2].signal, "rule_withdrawn");
    }

    #[test]
    fn rules_written_in_another_order_are_the_same_policy() {
        let rules = vec![allow("web", "payments"), allow("batch", "ledger")];
        let mut reversed = rules.clone();
        reversed.reverse();
        let mut access = PolicyProposer::new(Some(AccessPolicy {
            default: PolicyAction::Deny,
            rules,
        }));
        let committed = canonical(&AccessPolicy {
            default: PolicyAction::Deny,
            rules: reversed,
        });
        assert!(access
            .next(&committed, &proposer(), Instant::now())
            .is_none());
    }
}
