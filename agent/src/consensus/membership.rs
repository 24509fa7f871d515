//! Who votes, pure: the first voter set of a cell ([`choose_voters`]) and, later, the one
//! membership step the leader takes to replace a dead voter ([`plan_step`]), in the manner of
//! Consul Autopilot: add a healthy non-voter as a learner, promote it once it has caught up,
//! then remove the dead voter; one change at a time, never a joint change.

use std::collections::BTreeMap;
use std::time::Duration;

/// A member of the cell as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: String,
    /// It has `[consensus]` configured (an agent without it never votes).
    pub eligible: bool,
    pub zone: String,
    /// Alive and routable in gossip.
    pub healthy: bool,
    /// How long gossip has held it dead or left (zero when alive).
    pub down_for: Duration,
    /// Left on purpose (reported; replaced like a dead voter, after `dead_after`).
    pub left: bool,
}

/// Picks `count` voters among the healthy, eligible `members`, spread across zones: zones in name order take turns,
/// each giving its lowest node ID not yet picked. Every agent that sees the same members picks
/// the same voters.
pub fn choose_voters(members: &[Candidate], count: usize) -> Vec<String> {
    let mut zones: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for member in members.iter().filter(|m| m.healthy && m.eligible) {
        zones
            .entry(member.zone.as_str())
            .or_default()
            .push(member.node_id.as_str());
    }
    for nodes in zones.values_mut() {
        nodes.sort_unstable();
        nodes.dedup();
        nodes.reverse();
    }
    let mut voters = Vec::with_capacity(count);
    while voters.len() < count && zones.values().any(|nodes| !nodes.is_empty()) {
        for nodes in zones.values_mut() {
            if voters.len() == count {
                break;
            }
            if let Some(node) = nodes.pop() {
                voters.push(node.to_owned());
            }
        }
    }
    voters.sort_unstable();
    voters
}

/// The group as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Learners whose log has caught up with the leader's commit index.
    pub caught_up: Vec<String>,
    /// The voter count the cell wants (`bootstrap_expect`).
    pub target: usize,
    /// A membership change is proposed but not applied yet.
    pub pending: bool,
}

/// One membership step, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddLearner { node: String, replaces: String },
    Promote { node: String },
    Remove { node: String, down_for: Duration },
}

/// The next membership step, if any. A voter is replaced once it has been down for
/// `dead_after`, whether it crashed or left on purpose (a voter stopped for a restart must not
/// lose its seat, as Consul servers do not leave on terminate); the replacement is the healthy non-voter in
/// the zone with the fewest voters, lowest node ID first.
pub fn plan_step(group: &Group, members: &[Candidate], dead_after: Duration) -> Option<Step> {
    if group.pending {
        return None;
    }
    let member = |id: &str| members.iter().find(|m| m.node_id == id);
    // Down for long enough, on gossip's word: a member missing from the view is no evidence
    // (a leader that has just started sees few members).
    let gone = |id: &str| member(id).is_some_and(|m| !m.healthy && m.down_for >= dead_after);
    let down_for = |id: &str| member(id).map_or(dead_after, |m| m.down_for);
    if let Some(node) = group.learners.iter().find(|l| gone(l)) {
        // A learner that died before it caught up would block every later step.
        return Some(Step::Remove {
            node: node.clone(),
            down_for: down_for(node),
        });
    }
    if let Some(node) = group.learners.iter().find(|l| group.caught_up.contains(l)) {
        return Some(Step::Promote { node: node.clone() });
    }
    let dead: Vec<&String> = group.voters.iter().filter(|v| gone(v)).collect();
    if group.voters.len() > group.target {
        if let Some(node) = dead.first() {
            return Some(Step::Remove {
                node: (*node).clone(),
                down_for: down_for(node),
            });
        }
    }
    let replaces = dead.first()?;
    if !group.learners.is_empty() {
        return None;
    }
    let voters_in = |zone: &str| {
        group
            .voters
            .iter()
            .filter(|v| !gone(v) && member(v).is_some_and(|m| m.zone == zone))
            .count()
    };
    members
        .iter()
        .filter(|m| m.healthy && m.eligible && !group.voters.contains(&m.node_id))
        .min_by(|a, b| (voters_in(&a.zone), &a.node_id).cmp(&(voters_in(&b.zone), &b.node_id)))
        .map(|m| Step::AddLearner {
            node: m.node_id.clone(),
            replaces: (*replaces).clone(),
        })
}

#[cfg(test)]
mod tests;
