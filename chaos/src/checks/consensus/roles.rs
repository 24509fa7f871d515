//! What the agents' `/v1/decisions` answers say about roles (pure): the committed voter set,
//! the leader, whether the group is ready, and the timeline judgments of `canary-outcome`,
//! `voters-replaced` and `decisions-resume`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{AgentConsensus, ConsensusLook};
use crate::scenario::CanaryEnd;

/// The committed voter set: as the most advanced voter (highest term, then commit) reports
/// it; without any voter's answer, as a non-voter learned it from gossip.
pub fn voter_set(answers: &[(&str, &AgentConsensus)]) -> Vec<String> {
    let best = answers
        .iter()
        .filter(|(_, a)| a.role == "voter")
        .max_by_key(|(_, a)| (a.term, a.commit))
        .or_else(|| {
            answers
                .iter()
                .filter(|(_, a)| !a.voters.is_empty())
                .max_by_key(|(_, a)| a.applied)
        });
    let mut voters = best.map(|(_, a)| a.voters.clone()).unwrap_or_default();
    voters.sort();
    voters
}

/// The leader: the agent that says it leads in the highest term any voter reports (a leader
/// cut off in an older term may still think it leads).
pub fn leader(answers: &[(&str, &AgentConsensus)]) -> Option<String> {
    let term = answers
        .iter()
        .filter(|(_, a)| a.role == "voter")
        .map(|(_, a)| a.term)
        .max()?;
    answers
        .iter()
        .find(|(_, a)| a.is_leader && a.term == term)
        .map(|(n, _)| (*n).to_owned())
}

/// Why the group is not ready yet (empty when it is): every agent answers, `expect` voters,
/// one leader every voter names, and every agent knows the committed voter set.
pub fn not_ready(expect: usize, answers: &[(String, Option<AgentConsensus>)]) -> Vec<String> {
    let mut waiting: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.is_none())
        .map(|(n, _)| format!("{n}: no /v1/decisions"))
        .collect();
    let given: Vec<(&str, &AgentConsensus)> = answers
        .iter()
        .filter_map(|(n, a)| Some((n.as_str(), a.as_ref()?)))
        .collect();
    let voters = voter_set(&given);
    if voters.len() != expect {
        waiting.push(format!("{} of {expect} voters", voters.len()));
    }
    match leader(&given) {
        None => waiting.push("no leader".into()),
        Some(l) => waiting.extend(
            given
                .iter()
                .filter(|(_, a)| a.role == "voter" && a.leader.as_ref() != Some(&l))
                .map(|(n, a)| format!("{n} names leader {:?}, not {l}", a.leader)),
        ),
    }
    waiting.extend(
        given
            .iter()
            .filter(|(_, a)| a.voters.is_empty())
            .map(|(n, _)| format!("{n} knows no voters yet")),
    );
    waiting
}

/// `canary-outcome`: when the committed state first shows the release ended as `expect`
/// (after `from`), and what each agent showed last (every one must show it at the end).
pub fn canary_end(
    looks: &[ConsensusLook],
    service: &str,
    expect: CanaryEnd,
    from: Duration,
) -> (Option<Duration>, BTreeMap<String, String>) {
    let phase = |l: &ConsensusLook| {
        l.agent.canaries.get(service).map_or_else(
            || "no release".to_owned(),
            |(p, share)| format!("{p} at {share}%"),
        )
    };
    let first = looks
        .iter()
        .filter(|l| l.at >= from)
        .find(|l| {
            l.agent
                .canaries
                .get(service)
                .is_some_and(|(p, _)| p == expect.agent_phase())
        })
        .map(|l| l.at);
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    // The agents still answering at the end: those with a look in the last 3 s of looks.
    let end = looks.iter().map(|l| l.at).max().unwrap_or_default();
    for l in looks
        .iter()
        .filter(|l| l.at + Duration::from_secs(3) >= end)
    {
        last.insert(l.node.clone(), phase(l));
    }
    (first, last)
}

/// `voters-replaced`: when the committed voter set first left out every one of `dead` and had
/// `count` members again (after `from`); an error when none of `dead` was a voter before.
pub fn replaced(
    looks: &[ConsensusLook],
    dead: &[String],
    count: usize,
    from: Duration,
) -> Result<Option<Duration>, String> {
    if dead.is_empty() {
        return Err("no faulted node to replace".into());
    }
    let before = looks
        .iter()
        .filter(|l| l.at <= from && !l.agent.voters.is_empty())
        .max_by_key(|l| (l.at, l.agent.applied));
    let was_voter = before.is_some_and(|l| l.agent.voters.iter().any(|v| dead.contains(v)));
    if !was_voter {
        return Err(format!(
            "{} was not a voter when the window started (voters then: {})",
            dead.join(", "),
            before.map_or("unknown".to_owned(), |l| l.agent.voters.join(", "))
        ));
    }
    Ok(looks
        .iter()
        .filter(|l| l.at >= from)
        .find(|l| l.agent.voters.len() == count && !l.agent.voters.iter().any(|v| dead.contains(v)))
        .map(|l| l.at))
}

/// `decisions-resume`: the first poll round in `[from, to)` in which, among the agents that
/// answered and that no fault is aimed at then (`aimed(node, at)`: cut off or stopped by
/// design), one leads, every voter names it, and every one has applied everything committed
/// by `from` (the highest commit any agent reported by then). `Err` says what was still
/// missing in the window's last round.
pub fn resumed(
    looks: &[ConsensusLook],
    from: Duration,
    to: Duration,
    aimed: &dyn Fn(&str, Duration) -> bool,
) -> Result<Duration, String> {
    let before = looks
        .iter()
        .filter(|l| l.at <= from)
        .map(|l| l.agent.commit)
        .max()
        .unwrap_or(0);
    let mut rounds: BTreeMap<Duration, Vec<(&str, &AgentConsensus)>> = BTreeMap::new();
    for l in looks.iter().filter(|l| l.at >= from && l.at < to) {
        if !aimed(&l.node, l.at) {
            rounds
                .entry(l.at)
                .or_default()
                .push((l.node.as_str(), &l.agent));
        }
    }
    let mut missing = "no agent answered in the window".to_owned();
    for (at, answers) in rounds {
        let mut gaps = Vec::new();
        match leader(&answers) {
            None => gaps.push("no leader".to_owned()),
            Some(l) => gaps.extend(
                answers
                    .iter()
                    .filter(|(_, a)| a.role == "voter" && a.leader.as_ref() != Some(&l))
                    .map(|(n, a)| format!("{n} names leader {:?}, not {l}", a.leader)),
            ),
        }
        gaps.extend(
            answers
                .iter()
                .filter(|(_, a)| a.applied < before)
                .map(|(n, a)| format!("{n} applied {} of {before}", a.applied)),
        );
        if gaps.is_empty() {
            return Ok(at);
        }
        missing = gaps.join(", ");
    }
    Err(missing)
}

#[cfg(test)]
mod tests;
