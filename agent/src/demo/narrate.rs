//! The demo's narrator: watches the agents (their admin API and decision log) while one
//! backend fails and is repaired, and says what the mesh did, when.

use std::path::Path;
use std::time::{Duration, Instant};

use plexus_protocol::{NodeId, ServiceName};

use super::backend::DemoBackend;
use super::load::Tally;
use super::step;
use crate::RunningAgent;

/// How long the mesh gets to form and route, to react to the failure, and to recover.
const FORM_LIMIT: Duration = Duration::from_secs(30);
const REACT_LIMIT: Duration = Duration::from_secs(60);
const RECOVER_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Waits until the voters have a leader and both callers route to all three endpoints.
pub(super) async fn wait_until_formed(
    voters: &[RunningAgent],
    callers: &[RunningAgent],
) -> Result<(), String> {
    let api = ServiceName::new("api").expect("a valid service name");
    let started = Instant::now();
    while started.elapsed() < FORM_LIMIT {
        let led = voters.iter().any(|v| v.consensus.status().is_leader);
        let routed = callers
            .iter()
            .all(|c| c.view().borrow().endpoints(&api).len() == 3);
        if led && routed {
            println!(
                "      the voters elected a leader and both callers route to all three endpoints ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("the mesh did not form within {FORM_LIMIT:?}"))
}

/// What the narrator watches.
pub(super) struct Story<'a> {
    voters: &'a [RunningAgent],
    callers: &'a [RunningAgent],
    backends: &'a [DemoBackend],
    tally: &'a Tally,
    /// Backend hits and the tally at the last status line.
    last: (Vec<u64>, (u64, u64)),
    timeline: Vec<String>,
}

impl<'a> Story<'a> {
    pub(super) fn new(
        voters: &'a [RunningAgent],
        callers: &'a [RunningAgent],
        backends: &'a [DemoBackend],
        tally: &'a Tally,
    ) -> Self {
        Self {
            voters,
            callers,
            backends,
            tally,
            last: (backends.iter().map(|b| b.hits()).collect(), tally.read()),
            timeline: Vec::new(),
        }
    }

    /// Tells the story; an error when the mesh did not react or did not recover.
    pub(super) async fn tell(mut self, dir: &Path) -> Result<(), String> {
        step(4, "steady state");
        for _ in 0..2 {
            tokio::time::sleep(STATUS_EVERY).await;
            self.status(None);
        }
        // The failing node: a voter that does not lead (a leader is never quarantined).
        let leader = self.leader().unwrap_or(0);
        let bad = if leader == 2 { 1 } else { 2 };
        let node = self.voters[bad].node_id.clone();
        let backend = &self.backends[bad];
        step(
            5,
            format!(
                "{} starts answering 503 to every request behind {node} (its health check still \
                 passes: only the data plane can tell)",
                backend.name
            ),
        );
        let fault = Instant::now();
        let first_index = self.voters[leader].consensus.status().commit;
        backend.set_failing(true);
        let mut ejected: Vec<NodeId> = Vec::new();
        let (mut weighted, mut quarantined, mut avoided) = (false, false, false);
        let mut seen = backend.hits();
        let mut quiet_since = Instant::now();
        let mut next_status = fault + STATUS_EVERY;
        while fault.elapsed() < REACT_LIMIT && !quarantined {
            tokio::time::sleep(POLL).await;
            for caller in self.callers {
                if !ejected.contains(&caller.node_id) && ejects(caller, &node).await {
                    ejected.push(caller.node_id.clone());
                    self.event(fault, format!(
                        "{} ejected {node}'s endpoint (consecutive 503s); its requests were retried on the others",
                        caller.node_id
                    ));
                }
            }
            // Failures look slow to the balancer: P2C stops picking the endpoint at once.
            if !avoided {
                let hits = backend.hits();
                if hits != seen {
                    (seen, quiet_since) = (hits, Instant::now());
                } else if quiet_since.elapsed() >= Duration::from_secs(1) {
                    avoided = true;
                    self.event(fault, format!(
                        "the callers' balancers route around {node}: its fast 503s count as slow, \
                         so power-of-two-choices stops picking it; retries answer the few that reach it"
                    ));
                }
            }
            if !weighted {
                if let Some(reason) = self.weight_commit(&node, first_index) {
                    weighted = true;
                    self.event(fault, format!("the leader committed weights: {reason}"));
                }
            }
            if let Some(reason) = self.quarantine_of(&node) {
                quarantined = true;
                self.event(fault, format!("quarantine committed: {reason}"));
            }
            if Instant::now() >= next_status {
                while next_status <= Instant::now() {
                    next_status += STATUS_EVERY;
                }
                self.status(Some(fault));
            }
        }
        if ejected.is_empty() {
            return Err(format!("no caller ejected {node} within {REACT_LIMIT:?}"));
        }
        step(
            6,
            format!(
                "{} is repaired{}",
                backend.name,
                if quarantined {
                    format!("; the operator releases {node} (plexus ctl quarantine release {node})")
                } else {
                    String::new()
                }
            ),
        );
        backend.set_failing(false);
        let repaired = Instant::now();
        if quarantined {
            self.release(dir, &node, leader).await;
        }
        let hits = backend.hits();
        let mut next_status = repaired + STATUS_EVERY;
        let mut deadline = repaired + RECOVER_LIMIT;
        let mut released_at = quarantined.then(Instant::now);
        // At most this many late releases, so a node quarantined again and again cannot keep
        // the demo going.
        let mut late_releases = 0;
        let recovered = loop {
            tokio::time::sleep(POLL).await;
            let quarantine = self.quarantine_of(&node);
            if backend.hits() > hits + 10 && quarantine.is_none() {
                break true;
            }
            // A verdict committed after the story moved on (a slow machine): the operator
            // releases it too, and the node gets its full time to come back from then.
            if let Some(reason) = quarantine {
                if late_releases < 2
                    && released_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
                {
                    late_releases += 1;
                    self.event(fault, format!("quarantine committed: {reason}"));
                    self.event(
                        fault,
                        format!(
                            "the operator releases {node} (plexus ctl quarantine release {node})"
                        ),
                    );
                    self.release(dir, &node, leader).await;
                    released_at = Some(Instant::now());
                    deadline = Instant::now() + RECOVER_LIMIT;
                }
            }
            if Instant::now() >= next_status {
                while next_status <= Instant::now() {
                    next_status += STATUS_EVERY;
                }
                self.status(Some(fault));
            }
            if Instant::now() >= deadline {
                break false;
            }
        };
        if recovered {
            self.event(
                fault,
                format!(
                    "{node} is back in rotation: its half-open probe succeeded and traffic returns"
                ),
            );
        }
        self.status(Some(fault));
        println!("      what happened, from the failure on:");
        for line in &self.timeline {
            println!("        {line}");
        }
        if recovered {
            return Ok(());
        }
        self.diagnose(&node, first_index).await;
        Err(format!(
            "{node} did not get traffic back within {RECOVER_LIMIT:?}"
        ))
    }

    /// What the agents hold about `node` when it did not come back: each caller's endpoint
    /// entry and the decisions committed since the failure, so the reason can be read.
    async fn diagnose(&self, node: &NodeId, after: u64) {
        println!("      why {node} got no traffic back, as the agents see it:");
        for caller in self.callers {
            let entry = endpoint_of(caller, node)
                .await
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no endpoint".into());
            println!("        {} routes: {entry}", caller.node_id);
        }
        if let Some(leader) = self.leader() {
            for record in self.voters[leader].consensus.decisions(64) {
                if record.index > after {
                    let reason = record.decision.map(|d| d.reason).unwrap_or_default();
                    println!(
                        "        decision {} {}: {reason}",
                        record.index, record.kind
                    );
                }
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.voters
            .iter()
            .position(|v| v.consensus.status().is_leader)
    }

    fn event(&mut self, since: Instant, text: String) {
        let line = format!("+{:>5.1} s  {text}", since.elapsed().as_secs_f64());
        println!("      {line}");
        self.timeline.push(line);
    }

    /// One line: the app's success over the last interval and each backend's share.
    fn status(&mut self, since: Option<Instant>) {
        let hits: Vec<u64> = self.backends.iter().map(|b| b.hits()).collect();
        let tally = self.tally.read();
        let deltas: Vec<u64> = hits.iter().zip(&self.last.0).map(|(h, l)| h - l).collect();
        let (ok, failed) = (tally.0 - self.last.1 .0, tally.1 - self.last.1 .1);
        let total: u64 = deltas.iter().sum();
        let shares: Vec<String> = self
            .backends
            .iter()
            .zip(&deltas)
            .map(|(b, d)| {
                format!(
                    "{} {:>3.0} %",
                    b.name,
                    100.0 * *d as f64 / total.max(1) as f64
                )
            })
            .collect();
        let when = since
            .map(|s| format!("+{:>5.1} s", s.elapsed().as_secs_f64()))
            .unwrap_or_else(|| "        ".into());
        println!(
            "      {when}  app: {ok}/{} answered   backends: {}",
            ok + failed,
            shares.join("  ")
        );
        self.last = (hits, tally);
    }

    /// A committed weights decision after `after` that lowers `node`'s endpoint.
    fn weight_commit(&self, node: &NodeId, after: u64) -> Option<String> {
        let leader = &self.voters[self.leader()?];
        leader
            .consensus
            .decisions(64)
            .into_iter()
            .filter(|r| r.index > after && r.kind == "weights")
            .filter_map(|r| r.decision)
            .find(|d| {
                d.reason.contains(node.as_str())
                    && ["error", "fail", "shed"]
                        .iter()
                        .any(|w| d.reason.contains(w))
            })
            .map(|d| d.reason)
    }

    fn quarantine_of(&self, node: &NodeId) -> Option<String> {
        self.voters
            .iter()
            .find_map(|v| v.consensus.state().trust.quarantined.get(node).cloned())
            .map(|q| q.reason)
    }

    /// What an operator does with `plexus ctl quarantine release NODE` on the leader's host.
    async fn release(&mut self, dir: &Path, node: &NodeId, leader: usize) {
        let agent = &self.voters[leader];
        let token = dir
            .join(format!("{}-data", agent.node_id))
            .join("admin.token");
        let body = serde_json::json!({ "node": node });
        match crate::ctl::post(agent.admin_addr, "/v1/quarantine/release", body, &token).await {
            Ok((200, _)) => {}
            Ok((code, answer)) => println!("      release answered {code}: {}", answer.trim()),
            Err(error) => println!("      release failed: {error}"),
        }
    }
}

/// Whether `caller` has `node`'s endpoint out of rotation (ejected or probing).
async fn ejects(caller: &RunningAgent, node: &NodeId) -> bool {
    endpoint_of(caller, node)
        .await
        .is_some_and(|e| e["state"] != "healthy")
}

/// `node`'s endpoint as `caller`'s `/v1/routes` shows it.
async fn endpoint_of(caller: &RunningAgent, node: &NodeId) -> Option<serde_json::Value> {
    let Ok((200, body)) = crate::ctl::get(caller.admin_addr, "/v1/routes").await else {
        return None;
    };
    let mut routes = serde_json::from_str::<serde_json::Value>(&body).ok()?;
    routes["upstreams"]
        .as_array_mut()?
        .iter_mut()
        .flat_map(|u| u["endpoints"].as_array_mut().into_iter().flatten())
        .find(|e| e["node_id"] == node.as_str())
        .map(std::mem::take)
}
