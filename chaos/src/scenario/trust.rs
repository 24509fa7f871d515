//! What a scenario says about trust between the agents: where the mesh CA lives, the
//! `[quarantine]` settings, and the access policy (`[access]`, `[[policy]]`) the voters carry.

use std::time::Duration;

/// Where the mesh CA lives (`[trust]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustSpec {
    /// The agents bring the CA into the decision log (`ca = "decision-log"`): the leader signs
    /// leaves, renewals and rotations go through the log. Otherwise (`ca = "files"`, the
    /// default) the harness's CA issues every certificate up front and no agent holds its key.
    pub ca_in_log: bool,
    /// Lifetime of the leaves the leader signs (`tls.leaf_lifetime`); the agent's default when
    /// `None`.
    pub leaf_lifetime: Option<Duration>,
}

/// The agents' `[quarantine]` table (every agent gets the same); keys left out keep the
/// agent's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarantineSpec {
    pub enabled: Option<bool>,
    pub min_observers: Option<u32>,
    pub window: Option<Duration>,
    pub probation: Option<Duration>,
    pub max_share: Option<f64>,
}

/// Allow or deny, as `[access] default` and `[[policy]]` entries say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allow,
    Deny,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "allow",
            Access::Deny => "deny",
        }
    }
}

/// One `[[policy]]` entry: callers hosting `from` may (or may not) call `to`; `None` is any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRuleSpec {
    pub action: Access,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// An access policy as the agents' configuration spells it: `[access] default` and the
/// `[[policy]]` entries, in file order (the agent orders them by precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub default: Access,
    pub rules: Vec<PolicyRuleSpec>,
}

impl PolicySpec {
    /// One line for labels: `default allow; deny batch -> echo`.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("default {}", self.default.as_str())];
        for r in &self.rules {
            parts.push(format!(
                "{} {} -> {}",
                r.action.as_str(),
                r.from.as_deref().unwrap_or("*"),
                r.to.as_deref().unwrap_or("*")
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests;
