//! The fault schedule: the scenario's faults with their role targets resolved by the seed and
//! their times made absolute. Pure: the same scenario and seed always give the same plan.

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
}

/// Resolves every fault of `scenario` with `seed`.
pub fn plan(scenario: &Scenario, seed: u64) -> Vec<PlannedFault> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes = scenario.topology.names();
    let mut out = Vec::new();
    let mut phase_start = Duration::ZERO;
    for (index, phase) in scenario.phases.iter().enumerate() {
        for fault in &phase.faults {
            let targets = resolve(scenario, &fault.target, &[], &mut rng);
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
                        });
                    }
                }
                FaultKind::Restart => out.push(PlannedFault {
                    phase: index,
                    kind: fault.kind.clone(),
                    label: format!("restart {}", targets.join(", ")),
                    targets,
                    peers: Vec::new(),
                    start,
                    end: start,
                }),
                kind => {
                    let peers = match kind {
                        FaultKind::Network { peer, .. } => {
                            let peers = resolve(scenario, peer, &targets, &mut rng);
                            peers.into_iter().filter(|p| !targets.contains(p)).collect()
                        }
                        _ => Vec::new(),
                    };
                    out.push(PlannedFault {
                        phase: index,
                        kind: kind.clone(),
                        label: label(kind, &targets, &peers, &nodes),
                        targets,
                        peers,
                        start,
                        end,
                    });
                }
            }
        }
        phase_start += phase.duration;
    }
    out
}

/// The nodes `target` names; role targets are drawn with `rng`, avoiding the workload's
/// sources where possible (killing the caller says little about the mesh).
pub fn resolve(
    scenario: &Scenario,
    target: &Target,
    exclude: &[String],
    rng: &mut SmallRng,
) -> Vec<String> {
    let topology = &scenario.topology;
    let all = topology.names();
    let n = all.len();
    let sources = &scenario.workload.from;
    let mut candidates: Vec<String> = all
        .iter()
        .filter(|x| !sources.contains(x) && !exclude.contains(x))
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
        Target::Voter => topology.voters.clone(),
        Target::NonVoter => all
            .into_iter()
            .filter(|x| !topology.voters.contains(x))
            .collect(),
        Target::Node(name) => vec![name.clone()],
        Target::Zone(zone) => topology
            .nodes
            .iter()
            .filter(|x| x.zone.as_deref() == Some(zone))
            .map(|x| x.name.clone())
            .collect(),
        Target::Rest => all.into_iter().filter(|x| !exclude.contains(x)).collect(),
        // Validation refuses `leader` until consensus exists; `faulted` is for checks only.
        Target::Leader | Target::Faulted => Vec::new(),
    }
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
        FaultKind::Restart | FaultKind::RollingRestart { .. } => format!("restart {who}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario(faults: &str) -> Scenario {
        let text = format!(
            r#"name = "t"
purpose = "test"
[topology]
nodes = 5
zones = ["a", "b"]
voters = 3
services = [{{ name = "echo" }}]
[workload]
rate = 10
from = "node-1"
service = "echo"
[[phase]]
name = "steady"
duration = "2s"
[[phase]]
name = "fault"
duration = "10s"
faults = [{faults}]
[[check]]
kind = "success-rate"
min = 0.9
"#
        );
        Scenario::from_toml(Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn the_seed_fixes_the_targets() {
        let s = scenario(r#"{ kind = "kill", target = "minority" }"#);
        let a = plan(&s, 42);
        assert_eq!(a, plan(&s, 42));
        assert_eq!(a[0].targets.len(), 2);
        assert!(
            !a[0].targets.contains(&"node-1".to_owned()),
            "the workload source is spared"
        );
        assert_eq!(
            (a[0].start, a[0].end),
            (Duration::from_secs(2), Duration::from_secs(12))
        );
        let differs = (0..20).any(|seed| plan(&s, seed)[0].targets != a[0].targets);
        assert!(differs, "other seeds pick other nodes");
    }

    #[test]
    fn roles_resolve() {
        let s = scenario(
            r#"{ kind = "stop", target = "majority" }, { kind = "stop", target = "voter" },
               { kind = "stop", target = "zone:b" }, { kind = "partition", target = "node:node-2", for = "1s" }"#,
        );
        let p = plan(&s, 1);
        assert_eq!(p[0].targets.len(), 3);
        assert_eq!(p[1].targets, ["node-1", "node-2", "node-3"]);
        assert_eq!(p[2].targets, ["node-2", "node-4"]);
        assert_eq!(p[3].peers, ["node-1", "node-3", "node-4", "node-5"]);
        assert_eq!(p[3].end, Duration::from_secs(3));
        assert!(p[3].label.contains("the rest"), "{}", p[3].label);
    }

    #[test]
    fn a_rolling_restart_fits_every_node_in_its_window() {
        let s = scenario(r#"{ kind = "rolling-restart", target = "all", interval = "5s" }"#);
        let starts: Vec<u64> = plan(&s, 1).iter().map(|f| f.start.as_secs()).collect();
        assert_eq!(
            starts,
            [2, 4, 6, 8, 10],
            "5 s would not fit five nodes in 10 s"
        );
    }

    #[test]
    fn a_rolling_restart_spaces_its_nodes() {
        let s = scenario(r#"{ kind = "rolling-restart", target = "all", interval = "2s" }"#);
        let p = plan(&s, 1);
        let starts: Vec<u64> = p.iter().map(|f| f.start.as_secs()).collect();
        assert_eq!(starts, [2, 4, 6, 8, 10]);
        assert_eq!(p[4].targets, ["node-5"]);
    }
}
