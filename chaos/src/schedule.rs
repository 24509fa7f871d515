//! The fault schedule: the scenario's faults with their role targets resolved by the seed and
//! their times made absolute. Pure: the same scenario and seed always give the same plan.
//!
//! Seed determinism:
//! - Targets the topology decides (`one`, `minority`, `majority`, `node:`, `zone:`, ...) are
//!   drawn at planning time from one generator seeded with the seed, fault after fault in
//!   file order: the same seed picks the same nodes.
//! - Targets the agents decide when the scenario has `[consensus]` (`leader`, `voter`,
//!   `non-voter`, `voter-minority`, `voter-majority`: the agents elect the leader and choose
//!   the voters themselves) cannot be known before the run. Such a fault is planned with its
//!   targets [`Pending`] and resolved when it starts, from what the agents report then
//!   ([`Roles`]). Its draws (which voters form the minority, say) come from a generator of its
//!   own, seeded with the seed and the fault's number, so they neither consume nor shift the
//!   other faults' draws: the same seed and the same reported roles pick the same nodes.
//!   The roles themselves (who won an election) are the agents' doing, not the seed's.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::scenario::{FaultKind, NetEffect, Scenario, Target};

/// One fault, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFault {
    pub phase: usize,
    pub kind: FaultKind,
    /// The nodes it is aimed at.
    pub targets: Vec<String>,
    /// Network faults: the other ends of the affected links.
    pub peers: Vec<String>,
    /// From the start of the run.
    pub start: Duration,
    /// When it heals (equal to `start` for instant faults such as `restart`).
    pub end: Duration,
    pub label: String,
    /// Targets (or network peers) the agents decide, resolved when the fault starts.
    pub pending: Option<Pending>,
}

/// What a fault aims at that only the agents know before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// `None`: `targets` is already resolved.
    pub target: Option<Target>,
    /// Network faults: the other end, resolved after the target (it excludes it).
    pub peer: Option<Target>,
    /// Seeds this fault's own draws.
    pub seed: u64,
}

/// The consensus roles the agents report when a fault starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roles {
    pub leader: Option<String>,
    pub voters: Vec<String>,
}

impl PlannedFault {
    /// Resolves pending targets from `roles`; an error when a role names nobody (no leader
    /// known, say), in which case the fault must not be applied.
    pub fn resolve(&mut self, scenario: &Scenario, roles: &Roles) -> Result<(), String> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let mut rng = SmallRng::seed_from_u64(pending.seed);
        if let Some(target) = &pending.target {
            self.targets = resolve_with(scenario, target, Some(roles), &[], &mut rng);
            if self.targets.is_empty() {
                return Err(format!(
                    "target `{target}` names no node (the agents report leader {:?}, voters [{}])",
                    roles.leader,
                    roles.voters.join(", ")
                ));
            }
        }
        if let Some(peer) = &pending.peer {
            let peers = resolve_with(scenario, peer, Some(roles), &self.targets, &mut rng);
            self.peers = peers
                .into_iter()
                .filter(|p| !self.targets.contains(p))
                .collect();
        }
        self.label = label(
            &self.kind,
            &self.targets,
            &self.peers,
            &scenario.topology.names(),
        );
        Ok(())
    }
}

/// Resolves every fault of `scenario` with `seed`.
pub fn plan(scenario: &Scenario, seed: u64) -> Vec<PlannedFault> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes = scenario.topology.names();
    let consensus = scenario.consensus.is_some();
    let mut out = Vec::new();
    let mut phase_start = Duration::ZERO;
    let mut number = 0u64;
    for (index, phase) in scenario.phases.iter().enumerate() {
        for fault in &phase.faults {
            number += 1;
            let later = fault.target.asks_agents(consensus);
            let peer_later = match &fault.kind {
                FaultKind::Network { peer, .. } => later || peer.asks_agents(consensus),
                _ => false,
            };
            let pending = (later || peer_later).then(|| Pending {
                target: later.then(|| fault.target.clone()),
                peer: match &fault.kind {
                    FaultKind::Network { peer, .. } if peer_later => Some(peer.clone()),
                    _ => None,
                },
                seed: seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            });
            let targets = if later {
                Vec::new()
            } else {
                resolve(scenario, &fault.target, &[], &mut rng)
            };
            let start = phase_start + fault.at;
            let end = phase_start + fault.lasts.map_or(phase.duration, |d| fault.at + d);
            match &fault.kind {
                FaultKind::RollingRestart { interval } => {
                    // Every target restarts within the fault's window: the interval shrinks
                    // when the window is too short for all of them.
                    let count = u32::try_from(targets.len().max(1)).unwrap_or(u32::MAX);
                    let step = (*interval).min(end.saturating_sub(start) / count);
                    for (i, node) in targets.iter().enumerate() {
                        let at = start + step * i as u32;
                        out.push(PlannedFault {
                            phase: index,
                            kind: fault.kind.clone(),
                            targets: vec![node.clone()],
                            peers: Vec::new(),
                            start: at,
                            end: at,
                            label: format!("rolling restart: {node}"),
                            pending: None,
                        });
                    }
                }
                FaultKind::Restart => out.push(PlannedFault {
                    phase: index,
                    kind: fault.kind.clone(),
                    label: match &pending {
                        Some(_) => format!("restart {} (when it starts)", fault.target),
                        None => format!("restart {}", targets.join(", ")),
                    },
                    targets,
                    peers: Vec::new(),
                    start,
                    end: start,
                    pending,
                }),
                kind => {
                    let peers = match kind {
                        FaultKind::Network { peer, .. } if !peer_later => {
                            let peers = resolve(scenario, peer, &targets, &mut rng);
                            peers.into_iter().filter(|p| !targets.contains(p)).collect()
                        }
                        _ => Vec::new(),
                    };
                    out.push(PlannedFault {
                        phase: index,
                        kind: kind.clone(),
                        label: match &pending {
                            Some(_) => format!(
                                "{} {} (resolved when it starts)",
                                kind.name(),
                                fault.target
                            ),
                            None => label(kind, &targets, &peers, &nodes),
                        },
                        targets,
                        peers,
                        start,
                        // An action at one instant (a CA rotation asked, a policy changed).
                        end: if kind.is_instant() { start } else { end },
                        pending,
                    });
                }
            }
        }
        phase_start += phase.duration;
    }
    out
}

/// The nodes `target` names at planning time (see [`resolve_with`]).
pub fn resolve(
    scenario: &Scenario,
    target: &Target,
    exclude: &[String],
    rng: &mut SmallRng,
) -> Vec<String> {
    resolve_with(scenario, target, None, exclude, rng)
}

/// The nodes `target` names; role targets are drawn with `rng`, avoiding the workload's
/// sources where possible (killing the caller says little about the mesh). Voter roles come
/// from `roles` (what the agents report) when given, else from `topology.voters`; `leader`
/// needs `roles`.
pub fn resolve_with(
    scenario: &Scenario,
    target: &Target,
    roles: Option<&Roles>,
    exclude: &[String],
    rng: &mut SmallRng,
) -> Vec<String> {
    let topology = &scenario.topology;
    let all = topology.names();
    let n = all.len();
    let in_order = |mut nodes: Vec<String>| {
        nodes.retain(|x| !exclude.contains(x));
        nodes.sort_by_key(|x| all.iter().position(|a| a == x));
        nodes
    };
    let voters = in_order(roles.map_or_else(|| topology.voters.clone(), |r| r.voters.clone()));
    match target {
        Target::Leader => {
            return in_order(roles.and_then(|r| r.leader.clone()).into_iter().collect())
        }
        Target::Voter => return voters,
        Target::NonVoter => {
            return in_order(
                all.iter()
                    .filter(|x| !voters.contains(x))
                    .cloned()
                    .collect(),
            )
        }
        Target::VoterMinority => {
            return draw(
                &voters,
                ((voters.len().max(1) - 1) / 2).max(1),
                scenario,
                exclude,
                rng,
            )
        }
        Target::VoterMajority => {
            return draw(&voters, voters.len() / 2 + 1, scenario, exclude, rng)
        }
        _ => {}
    }
    let mut candidates: Vec<String> = all
        .iter()
        .filter(|x| !scenario.workload.from.contains(x) && !exclude.contains(x))
        .cloned()
        .collect();
    if candidates.is_empty() {
        candidates = all
            .iter()
            .filter(|x| !exclude.contains(x))
            .cloned()
            .collect();
    }
    candidates.shuffle(rng);
    let take = |count: usize, mut pool: Vec<String>| -> Vec<String> {
        // Top up from the rest of the nodes (in order) when the candidates are too few.
        for x in &all {
            if pool.len() >= count {
                break;
            }
            if !pool.contains(x) && !exclude.contains(x) {
                pool.push(x.clone());
            }
        }
        pool.truncate(count);
        let mut picked = pool;
        picked.sort_by_key(|x| all.iter().position(|a| a == x));
        picked
    };
    match target {
        Target::One => take(1, candidates),
        Target::Minority => take(((n - 1) / 2).max(1), candidates),
        Target::Majority => take(n / 2 + 1, candidates),
        Target::All => all,
        Target::Node(name) => vec![name.clone()],
        Target::Zone(zone) => topology
            .nodes
            .iter()
            .filter(|x| x.zone.as_deref() == Some(zone))
            .map(|x| x.name.clone())
            .collect(),
        Target::Rest => all.into_iter().filter(|x| !exclude.contains(x)).collect(),
        // Roles were answered above; `faulted` is for checks only.
        _ => Vec::new(),
    }
}

/// `count` of `pool` (in topology order), drawn with `rng`, sparing the workload's sources
/// unless too few others remain.
fn draw(
    pool: &[String],
    count: usize,
    scenario: &Scenario,
    exclude: &[String],
    rng: &mut SmallRng,
) -> Vec<String> {
    let all = scenario.topology.names();
    let sources = &scenario.workload.from;
    let usable: Vec<&String> = pool.iter().filter(|x| !exclude.contains(x)).collect();
    let (mut spared, mut others): (Vec<&String>, Vec<&String>) =
        usable.into_iter().partition(|x| !sources.contains(x));
    spared.shuffle(rng);
    others.shuffle(rng);
    let mut picked: Vec<String> = spared
        .into_iter()
        .chain(others)
        .take(count)
        .cloned()
        .collect();
    picked.sort_by_key(|x| all.iter().position(|a| a == x));
    picked
}

fn label(kind: &FaultKind, targets: &[String], peers: &[String], nodes: &[String]) -> String {
    let who = targets.join(", ");
    let others = if peers.len() + targets.len() == nodes.len() && !peers.is_empty() {
        "the rest".to_owned()
    } else {
        peers.join(", ")
    };
    match kind {
        FaultKind::Kill => format!("kill -9 {who}"),
        FaultKind::Stop => format!("SIGSTOP {who}"),
        FaultKind::Network {
            effect, direction, ..
        } => {
            let arrow = match direction {
                crate::scenario::Direction::Both => "<->",
                crate::scenario::Direction::Outbound => "->",
                crate::scenario::Direction::Inbound => "<-",
            };
            let what = match effect {
                NetEffect::Partition => "partition".to_owned(),
                NetEffect::Loss { rate } => format!("loss {:.0}%", rate * 100.0),
                NetEffect::Latency { delay, jitter } => format!("latency {delay:?} ± {jitter:?}"),
                NetEffect::Reorder { rate, .. } => format!("reorder {:.0}%", rate * 100.0),
                NetEffect::Duplicate { rate } => format!("duplicate {:.0}%", rate * 100.0),
                NetEffect::Bandwidth { bytes_per_sec } => {
                    format!("bandwidth {} KiB/s", bytes_per_sec / 1024)
                }
            };
            format!("{what} {who} {arrow} {others}")
        }
        FaultKind::Backend {
            effect,
            service,
            version,
        } => {
            let what = match effect {
                crate::scenario::BackendEffect::Errors { rate, status } => {
                    format!("backend {status} x {:.0}%", rate * 100.0)
                }
                crate::scenario::BackendEffect::Latency { delay, .. } => {
                    format!("backend +{delay:?}")
                }
                crate::scenario::BackendEffect::Hang => "backend hangs".to_owned(),
                crate::scenario::BackendEffect::Reset { rate } => {
                    format!("backend resets {:.0}%", rate * 100.0)
                }
            };
            let scope = match (service, version) {
                (Some(s), Some(v)) => format!(" ({s} {v})"),
                (Some(s), None) => format!(" ({s})"),
                (None, Some(v)) => format!(" ({v})"),
                (None, None) => String::new(),
            };
            format!("{what} on {who}{scope}")
        }
        FaultKind::Certificate(flaw) => format!("{} on {who}", flaw.name()),
        FaultKind::ClockSkew { offset_secs } => format!("clock {offset_secs:+}s on {who}"),
        FaultKind::CaRotate => format!("CA rotation asked of {}", targets.join(" or ")),
        FaultKind::LyingObserver { about } => format!("{who} lies about {about}"),
        FaultKind::PolicyChange(policy) => format!("policy on {who}: {}", policy.summary()),
        FaultKind::Restart | FaultKind::RollingRestart { .. } => format!("restart {who}"),
    }
}

#[cfg(test)]
mod tests;
