//! The serving agent's precomputed access decisions: for every node in the mesh view, what the
//! committed policy says about each service this agent hosts.
//!
//! The policy speaks of services ("nodes hosting `web` may call `payments`") while a stream
//! only proves which node is calling (its certificate). Joining the two per request would walk
//! the view's members and the policy's rules on the hot path; instead the table is rebuilt off
//! the request path whenever the committed policy or the services a member hosts change, and a
//! request costs one hash lookup.

use std::collections::{BTreeMap, HashMap};

use plexus_protocol::{AccessPolicy, NodeId, PolicyAction, ServiceName};

use crate::gossip::MeshView;

/// The services each node hosts, as its signed gossip summary says (members without a
/// summary host nothing yet).
pub type CallerServices = BTreeMap<NodeId, Vec<ServiceName>>;

/// What the view says each member hosts. Members of every state are kept: a node whose
/// connection was verified is calling, whatever gossip last heard of it.
pub fn caller_services(view: &MeshView) -> CallerServices {
    view.members
        .iter()
        .filter_map(|member| {
            let node = NodeId::new(member.node_id.as_str()).ok()?;
            let mut services: Vec<ServiceName> = member
                .summary
                .as_ref()
                .map(|s| s.services.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default();
            services.sort();
            services.dedup();
            Some((node, services))
        })
        .collect()
}

/// One calling node's precomputed decisions.
#[derive(Debug, Clone)]
struct Caller {
    services: Vec<ServiceName>,
    /// Per hosted service.
    actions: Vec<(ServiceName, PolicyAction)>,
}

/// The decisions of one (policy, view) pair.
#[derive(Debug, Clone)]
pub struct AccessTable {
    policy: AccessPolicy,
    /// The committed state's applied index when this policy was read.
    applied_index: u64,
    /// The default policy (no rules, default allow) needs no lookup at all.
    allow_all: bool,
    callers: HashMap<NodeId, Caller>,
    /// The input the callers were computed from, to skip rebuilding when nothing changed.
    services_seen: CallerServices,
    /// Decisions for a node the view does not know yet (it hosts nothing as far as we know).
    stranger: Vec<(ServiceName, PolicyAction)>,
}

impl AccessTable {
    /// Decides, for every caller in `callers` and the unknown caller, each of `hosted`.
    pub fn build(
        policy: &AccessPolicy,
        applied_index: u64,
        callers: CallerServices,
        hosted: &[ServiceName],
    ) -> Self {
        let allow_all = policy.rules.is_empty() && policy.default == PolicyAction::Allow;
        let decide = |services: &[ServiceName]| -> Vec<(ServiceName, PolicyAction)> {
            hosted
                .iter()
                .map(|to| (to.clone(), policy.decide(services, to)))
                .collect()
        };
        let table = callers
            .iter()
            .map(|(node, services)| {
                let caller = Caller {
                    services: services.clone(),
                    actions: decide(services),
                };
                (node.clone(), caller)
            })
            .collect();
        Self {
            policy: policy.clone(),
            applied_index,
            allow_all,
            stranger: decide(&[]),
            callers: table,
            services_seen: callers,
        }
    }

    /// Whether `policy` and `callers` are what this table was built from.
    pub fn built_from(&self, policy: &AccessPolicy, callers: &CallerServices) -> bool {
        self.policy == *policy && self.services_seen == *callers
    }

    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The policy's answer to `caller` calling `service`, with the services the caller hosts
    /// (empty when allowed by a policy without rules).
    pub fn decide(&self, caller: &NodeId, service: &ServiceName) -> (PolicyAction, &[ServiceName]) {
        if self.allow_all {
            return (PolicyAction::Allow, &[]);
        }
        let (services, actions): (&[ServiceName], &[(ServiceName, PolicyAction)]) =
            match self.callers.get(caller) {
                Some(c) => (&c.services, &c.actions),
                None => (&[], &self.stranger),
            };
        let action = actions
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, a)| *a)
            // Not a hosted service at build time: decide now (the proxies never ask this).
            .unwrap_or_else(|| self.policy.decide(services, service));
        (action, services)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_protocol::PolicyRule;

    fn svc(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn web_to_payments_only() -> AccessPolicy {
        AccessPolicy {
            default: PolicyAction::Deny,
            rules: vec![PolicyRule {
                from: Some(svc("web")),
                to: Some(svc("payments")),
                action: PolicyAction::Allow,
            }],
        }
    }

    fn callers() -> CallerServices {
        [
            (node("node-web"), vec![svc("web")]),
            (node("node-batch"), vec![svc("batch")]),
            (node("node-both"), vec![svc("batch"), svc("web")]),
            (node("node-bare"), vec![]),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn callers_are_judged_by_the_services_they_host() {
        let hosted = [svc("payments"), svc("ledger")];
        let table = AccessTable::build(&web_to_payments_only(), 7, callers(), &hosted);
        let payments = svc("payments");
        assert_eq!(
            table.decide(&node("node-web"), &payments).0,
            PolicyAction::Allow
        );
        assert_eq!(
            table.decide(&node("node-both"), &payments).0,
            PolicyAction::Allow
        );
        let (action, services) = table.decide(&node("node-batch"), &payments);
        assert_eq!(
            (action, services),
            (PolicyAction::Deny, &[svc("batch")][..])
        );
        // A node hosting nothing, or unknown to the view, matches only wildcard sources.
        assert_eq!(
            table.decide(&node("node-bare"), &payments).0,
            PolicyAction::Deny
        );
        assert_eq!(
            table.decide(&node("stranger"), &payments).0,
            PolicyAction::Deny
        );
        assert_eq!(
            table.decide(&node("node-web"), &svc("ledger")).0,
            PolicyAction::Deny
        );
        assert_eq!(table.applied_index(), 7);
    }

    #[test]
    fn services_not_hosted_at_build_time_are_decided_on_the_spot() {
        let table = AccessTable::build(&web_to_payments_only(), 1, callers(), &[]);
        assert_eq!(
            table.decide(&node("node-web"), &svc("payments")).0,
            PolicyAction::Allow
        );
        assert_eq!(
            table.decide(&node("node-batch"), &svc("payments")).0,
            PolicyAction::Deny
        );
    }

    #[test]
    fn the_default_policy_allows_everyone_without_a_lookup() {
        let table = AccessTable::build(&AccessPolicy::default(), 0, CallerServices::new(), &[]);
        assert_eq!(
            table.decide(&node("anyone"), &svc("payments")).0,
            PolicyAction::Allow
        );
        let deny_all = AccessPolicy {
            default: PolicyAction::Deny,
            rules: vec![],
        };
        let table = AccessTable::build(&deny_all, 0, callers(), &[svc("payments")]);
        assert_eq!(
            table.decide(&node("node-web"), &svc("payments")).0,
            PolicyAction::Deny
        );
    }

    #[test]
    fn a_table_knows_what_it_was_built_from() {
        let policy = web_to_payments_only();
        let table = AccessTable::build(&policy, 3, callers(), &[svc("payments")]);
        assert!(table.built_from(&policy, &callers()));
        assert!(!table.built_from(&AccessPolicy::default(), &callers()));
        let mut moved = callers();
        moved.insert(node("node-batch"), vec![svc("web")]);
        assert!(!table.built_from(&policy, &moved));
    }
}
