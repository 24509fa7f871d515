//! From the TOML text to a [`Scenario`], collecting every mistake as `FILE: KEY: REASON`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use plexus_agent::config::line_of;

use super::raw::{RawFault, RawScenario};
use super::*;

const MAX_NODES: usize = 32;
const MAX_RATE: i64 = 20_000;
const MAX_RUN: Duration = Duration::from_secs(2 * 3600);
const DEFAULT_SEED: u64 = 1;
/// Requests one run may send (each is kept: about 80 bytes apiece).
const MAX_REQUESTS: f64 = 5_000_000.0;

pub fn scenario(path: &Path, text: &str) -> Result<Scenario, ScenarioErrors> {
    let one = |key: String, reason: &str| {
        ScenarioErrors(vec![format!("{}: {key}: {reason}", path.display())])
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| one(line_of(text, e.span()), e.message()))?;
    let raw: RawScenario = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." => line_of(text, e.inner().span()),
            p => p,
        };
        one(key, e.inner().message())
    })?;
    let mut v = Validator {
        file: path,
        errors: Vec::new(),
        consensus: false,
        voters: 0,
        ca_in_log: false,
        rotates: false,
        sources: Vec::new(),
        http: true,
    };
    let scenario = v.scenario(raw);
    match (scenario, v.errors.is_empty()) {
        (Some(s), true) => Ok(Scenario {
            source: path.to_owned(),
            ..s
        }),
        _ => Err(ScenarioErrors(v.errors)),
    }
}

struct Validator<'a> {
    file: &'a Path,
    errors: Vec<String>,
    /// The scenario configures `[consensus]`: the agents elect a leader and choose voters.
    consensus: bool,
    /// `topology.voters`, for role targets without consensus.
    voters: usize,
    /// `[trust] ca = "decision-log"`.
    ca_in_log: bool,
    /// A `ca-rotate` fault is scheduled.
    rotates: bool,
    /// The workload's source nodes.
    sources: Vec<String>,
    /// The workload speaks HTTP (a policy refusal is then a 403, not a bare reset).
    http: bool,
}

/// Names the scenario defines, for checking references.
struct Names {
    nodes: Vec<String>,
    zones: BTreeSet<String>,
}

impl Validator<'_> {
    fn error(&mut self, key: impl AsRef<str>, reason: impl AsRef<str>) {
        self.errors.push(format!(
            "{}: {}: {}",
            self.file.display(),
            key.as_ref(),
            reason.as_ref()
        ));
    }

    fn duration(
        &mut self,
        key: &str,
        value: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        match humantime::parse_duration(value) {
            Ok(d) if d < min => {
                self.error(
                    key,
                    format!(
                        "`{value}` is shorter than {}",
                        humantime::format_duration(min)
                    ),
                );
                None
            }
            Ok(d) if d > max => {
                self.error(
                    key,
                    format!(
                        "`{value}` is longer than {}",
                        humantime::format_duration(max)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    key,
                    format!("`{value}` is not a duration ({e}); write e.g. \"500ms\", \"2s\""),
                );
                None
            }
        }
    }

    fn opt_duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        value
            .and_then(|v| self.duration(key, v, Duration::ZERO, max))
            .unwrap_or(default)
    }

    fn ratio(&mut self, key: &str, value: Option<f64>) -> Option<f64> {
        match value {
            None => {
                self.error(key, "missing (a number from 0 to 1)");
                None
            }
            Some(r) if !(0.0..=1.0).contains(&r) => {
                self.error(key, format!("{r} is not between 0 and 1"));
                None
            }
            Some(r) => Some(r),
        }
    }

    fn scenario(&mut self, raw: RawScenario) -> Option<Scenario> {
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                "name",
                "use letters, digits, `-` and `_` only (it names the report)",
            );
        }
        if raw.purpose.trim().is_empty() || raw.purpose.contains('\n') {
            self.error("purpose", "one line saying what this scenario shows");
        }
        let (nodes, names) = self.nodes(&raw.topology.nodes, &raw.topology.zones)?;
        let voter_count = raw.topology.voters.unwrap_or(0);
        if voter_count > nodes.len() {
            self.error(
                "topology.voters",
                format!("{voter_count} voters but only {} nodes", nodes.len()),
            );
        }
        let voters = spread_voters(&nodes, voter_count.min(nodes.len()));
        let consensus = self.consensus(raw.consensus.as_ref(), nodes.len(), raw.topology.voters);
        self.consensus = raw.consensus.is_some();
        self.voters = voters.len();
        let services = self.services(&raw.topology.services, &names);
        let canaries = self.canaries(&raw.canary, self.consensus, &services);
        let agent = self.agent(&raw.agent);
        let workload = self.workload(&raw.workload, &names, &services);
        if let Some(w) = &workload {
            self.sources = w.from.clone();
            self.http = w.protocol == Protocol::Http;
        }
        let trust = self.trust(raw.trust.as_ref());
        self.ca_in_log = trust.ca_in_log;
        let quarantine = self.quarantine(raw.quarantine.as_ref());
        let policy = (raw.access.is_some() || !raw.policy.is_empty())
            .then(|| {
                if !self.consensus {
                    self.error(
                        if raw.access.is_some() { "access" } else { "policy" },
                        "the leader of the decision log proposes the access policy: needs [consensus]",
                    );
                }
                let default = raw.access.as_ref().and_then(|a| a.default.as_deref());
                self.policy(("access.default", default), ("policy", &raw.policy), &services)
            })
            .flatten();
        let mut phases = Vec::new();
        let mut seen = BTreeSet::new();
        if raw.phase.is_empty() {
            self.error("phase", "at least one [[phase]] is needed");
        }
        for (i, p) in raw.phase.iter().enumerate() {
            let key = format!("phase[{i}]");
            if !seen.insert(p.name.clone()) {
                self.error(
                    format!("{key}.name"),
                    format!("`{}` names two phases", p.name),
                );
            }
            let Some(duration) = self.duration(
                &format!("{key}.duration"),
                &p.duration,
                Duration::from_millis(100),
                MAX_RUN,
            ) else {
                continue;
            };
            let faults = p
                .faults
                .iter()
                .enumerate()
                .filter_map(|(j, f)| {
                    self.fault(
                        &format!("{key}.faults[{j}]"),
                        f,
                        duration,
                        &names,
                        &services,
                    )
                })
                .collect();
            phases.push(Phase {
                name: p.name.clone(),
                duration,
                faults,
            });
        }
        self.rotates = phases
            .iter()
            .flat_map(|p: &Phase| &p.faults)
            .any(|f| f.kind == FaultKind::CaRotate);
        let total: Duration = phases.iter().map(|p| p.duration).sum();
        if total > MAX_RUN {
            self.error(
                "phase",
                format!(
                    "the phases last {} in all; at most 2h",
                    humantime::format_duration(total)
                ),
            );
        }
        // Every request is kept for the checks and the report: bound them.
        let requests = raw.workload.rate.max(0) as f64 * total.as_secs_f64();
        if requests > MAX_REQUESTS {
            self.error(
                "workload.rate",
                format!("{requests:.0} requests over the run; at most {MAX_REQUESTS:.0} are recorded: lower the rate or shorten the phases"),
            );
        }
        let phase_names: Vec<String> = raw.phase.iter().map(|p| p.name.clone()).collect();
        if raw.check.is_empty() {
            self.error(
                "check",
                "at least one [[check]] is needed: a run without promises proves nothing",
            );
        }
        let checks = raw
            .check
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                self.check(
                    &format!("check[{i}]"),
                    c,
                    &names,
                    &phase_names,
                    (consensus.as_ref(), &canaries),
                )
            })
            .collect();
        Some(Scenario {
            source: self.file.to_owned(),
            name: raw.name,
            purpose: raw.purpose,
            seed: raw.seed.unwrap_or(DEFAULT_SEED),
            quick: raw.quick,
            topology: Topology {
                nodes,
                voters,
                services,
            },
            agent,
            consensus,
            canaries,
            trust,
            quarantine,
            policy,
            workload: workload?,
            phases,
            checks,
        })
    }

    fn target(&mut self, key: &str, value: &str, names: &Names, allow: &[&str]) -> Option<Target> {
        let target = match value {
            "one" => Target::One,
            "minority" => Target::Minority,
            "majority" => Target::Majority,
            "all" => Target::All,
            "leader" => Target::Leader,
            "voter" => Target::Voter,
            "non-voter" => Target::NonVoter,
            "voter-minority" => Target::VoterMinority,
            "voter-majority" => Target::VoterMajority,
            "faulted" => Target::Faulted,
            "rest" => Target::Rest,
            v => {
                if let Some(node) = v.strip_prefix("node:") {
                    if !names.nodes.iter().any(|n| n == node) {
                        self.error(key, format!("`{node}` is not a node of the topology"));
                        return None;
                    }
                    Target::Node(node.to_owned())
                } else if let Some(zone) = v.strip_prefix("zone:") {
                    if !names.zones.contains(zone) {
                        self.error(key, format!("`{zone}` is not a zone of the topology"));
                        return None;
                    }
                    Target::Zone(zone.to_owned())
                } else {
                    self.error(key, format!("`{v}`: use one, minority, majority, all, leader, voter, non-voter, voter-minority, voter-majority, node:NAME or zone:NAME"));
                    return None;
                }
            }
        };
        let word = match &target {
            Target::Node(_) => "node:",
            Target::Zone(_) => "zone:",
            _ => value,
        };
        if !allow.contains(&word) {
            self.error(key, format!("`{value}` cannot be used here"));
            return None;
        }
        if target == Target::Leader && !self.consensus {
            self.error(
                key,
                "`leader` needs [consensus] in the scenario: the agents elect their leader",
            );
            return None;
        }
        let of_voters = matches!(
            target,
            Target::Voter | Target::VoterMinority | Target::VoterMajority
        );
        if of_voters && !self.consensus && self.voters == 0 {
            self.error(
                key,
                format!("`{value}`: there are no voters; set [consensus] (or topology.voters)"),
            );
            return None;
        }
        Some(target)
    }
}

const NODE_TARGETS: &[&str] = &[
    "one",
    "minority",
    "majority",
    "all",
    "leader",
    "voter",
    "non-voter",
    "voter-minority",
    "voter-majority",
    "node:",
    "zone:",
];

mod checks;
mod consensus;
pub(super) mod faults;
mod topology;
mod trust;

use topology::spread_voters;

/// The fault keys each kind accepts besides `kind`, `target`, `at` and `for`.
fn used_keys(f: &RawFault) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut note = |set: bool, key: &'static str| {
        if set {
            keys.push(key);
        }
    };
    note(f.peer.is_some(), "peer");
    note(f.direction.is_some(), "direction");
    note(f.rate.is_some(), "rate");
    note(f.delay.is_some(), "delay");
    note(f.jitter.is_some(), "jitter");
    note(f.bandwidth.is_some(), "bandwidth");
    note(f.status.is_some(), "status");
    note(f.service.is_some(), "service");
    note(f.version.is_some(), "version");
    note(f.interval.is_some(), "interval");
    note(f.offset.is_some(), "offset");
    note(f.about.is_some(), "about");
    note(f.default.is_some(), "default");
    note(f.policy.is_some(), "policy");
    keys
}
