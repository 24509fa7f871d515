//! The decision log with real agents: `plexus agent` processes form a Raft group once
//! `bootstrap_expect` of them have met, elect a leader, survive kill -9 of the leader and of
//! every voter in turn with identical logs, and catch a restarted voter up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use plexus_tests::*;
use serde_json::Value;

use crate::PATIENCE;

/// A cell of agent processes on fixed ports, each with its own data directory.
struct Cell {
    mesh: Mesh,
    /// How many voters the group has (`bootstrap_expect`).
    expect: usize,
    configs: Vec<PathBuf>,
    admins: Vec<SocketAddr>,
    agents: Vec<Option<AgentProcess>>,
}

impl Cell {
    async fn start(count: usize, expect: usize) -> Self {
        let mesh = Mesh::new();
        let quic: Vec<u16> = (0..count).map(|_| free_port(true)).collect();
        let mut configs = Vec::new();
        let mut admins = Vec::new();
        for (i, port) in quic.iter().enumerate() {
            let node = format!("v{i}");
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
            let seeds = if i == 0 {
                String::new()
            } else {
                format!("seeds = [\"127.0.0.1:{}\"]\n", quic[0])
            };
            let data = mesh.path().join(format!("{node}-data"));
            let top = format!(
                "listen = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\nzone = \"z{}\"\n\
                 data_dir = \"{}\"\n{seeds}",
                i % 3,
                data.display()
            );
            let extra = format!(
                "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = {expect}\n\
                 election_timeout = \"500ms\"\ndead_voter_after = \"3s\"\n"
            );
            configs.push(mesh.config(&node, &mesh.node(&node), &top, &extra));
            admins.push(admin);
        }
        let mut agents = Vec::new();
        for (config, admin) in configs.iter().zip(&admins) {
            agents.push(Some(AgentProcess::spawn(config, *admin).await));
        }
        Self {
            mesh,
            expect,
            configs,
            admins,
            agents,
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|i| self.agents[*i].is_some())
            .collect()
    }

    async fn decisions(&self, i: usize) -> Option<Value> {
        let (code, body) = plexus_agent::ctl::get(self.admins[i], "/v1/decisions")
            .await
            .ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The leader every running voter names, once they all agree on one that is running.
    async fn agreed_leader(&self) -> Option<String> {
        let mut leaders = Vec::new();
        for i in self.running() {
            let status = self.decisions(i).await?["status"].clone();
            if status["role"] == "voter" {
                leaders.push(status["leader"].as_str()?.to_owned());
            }
        }
        let first = leaders.first()?.clone();
        let running: Vec<String> = self.running().iter().map(|i| format!("v{i}")).collect();
        (leaders.iter().all(|l| *l == first) && running.contains(&first)).then_some(first)
    }

    async fn wait_for_leader(&self, limit: Duration) -> String {
        let mut leader = None;
        let found = eventually(limit, async || {
            leader = self.agreed_leader().await;
            leader.is_some()
        })
        .await;
        if !found {
            let mut statuses = Vec::new();
            for i in self.running() {
                statuses.push(self.decisions(i).await.map(|d| d["status"].clone()));
            }
            panic!("no agreed leader within {limit:?}: {statuses:#?}");
        }
        leader.unwrap()
    }

    /// (index, term, digest) of every committed entry a voter shows.
    async fn log(&self, i: usize) -> Vec<(u64, u64, String)> {
        let Some(d) = self.decisions(i).await else {
            return Vec::new();
        };
        d["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["index"].as_u64().unwrap(),
                    e["term"].as_u64().unwrap(),
                    e["digest"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until every running voter (non-voters hold no log) has committed the same last entry and agrees with the
    /// others on every entry they both still hold (a voter that caught up by snapshot holds
    /// none before it), and returns the longest log.
    async fn identical_logs(&self, limit: Duration) -> Vec<(u64, u64, String)> {
        let mut seen = Vec::new();
        let same = eventually(limit, async || {
            let mut logs = Vec::new();
            for i in self.running() {
                let voter = self
                    .decisions(i)
                    .await
                    .is_some_and(|d| d["status"]["role"] == "voter");
                if voter {
                    logs.push(self.log(i).await);
                }
            }
            if logs.is_empty() {
                return false;
            }
            seen = logs.clone();
            // Every running voter answers (a restarted one that did not rejoin fails here).
            if logs.len() != self.expect.min(self.running().len()) {
                return false;
            }
            let Some(last) = logs[0].last().cloned() else {
                return false;
            };
            logs.iter().all(|log| log.last() == Some(&last))
                && logs.iter().all(|a| {
                    logs.iter().all(|b| {
                        a.iter().all(|entry| {
                            b.iter().find(|e| e.0 == entry.0).is_none_or(|e| e == entry)
                        })
                    })
                })
        })
        .await;
        assert!(same, "voter logs differ: {seen:#?}");
        seen.into_iter().max_by_key(|log| log.len()).unwrap()
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut agent) = self.agents[i].take() {
            agent.kill();
        }
    }

    async fn restart(&mut self, i: usize) {
        self.agents[i] = Some(AgentProcess::spawn(&self.configs[i], self.admins[i]).await);
    }
}

fn index_of(node: &str) -> usize {
    node.trim_start_matches('v').parse().unwrap()
}

/// Nothing committed in `earlier` was lost or rewritten in `later` (entries `later` no longer
/// holds were compacted behind its snapshot, which is past them).
fn extends(later: &[(u64, u64, String)], earlier: &[(u64, u64, String)]) {
    let first = later.first().map_or(u64::MAX, |e| e.0);
    for entry in earlier.iter().filter(|e| e.0 >= first) {
        assert!(
            later.contains(entry),
            "committed entry {entry:?} lost; log now {later:#?}"
        );
    }
    assert!(later.last().map(|e| e.0) >= earlier.last().map(|e| e.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_another_after_kill_9() {
    let mut cell = Cell::start(3, 3).await;
    let leader = cell.wait_for_leader(PATIENCE).await;
    let before = cell.identical_logs(PATIENCE).await;
    let status = cell.decisions(0).await.unwrap()["status"].clone();
    assert_eq!(status["voters"].as_array().unwrap().len(), 3, "{status}");

    cell.kill(index_of(&leader));
    let next = cell.wait_for_leader(PATIENCE).await;
    assert_ne!(next, leader);
    let after = cell.identical_logs(PATIENCE).await;
    extends(&after, &before);

    cell.restart(index_of(&leader)).await;
    let rejoined = cell.identical_logs(PATIENCE).await;
    extends(&rejoined, &after);

    // Every voter killed at once: what was committed is on disk, nobody repairs it.
    for i in 0..3 {
        cell.kill(i);
    }
    for i in 0..3 {
        cell.restart(i).await;
    }
    cell.wait_for_leader(PATIENCE).await;
    let restarted = cell.identical_logs(PATIENCE).await;
    extends(&restarted, &rejoined);
    drop(cell.mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_hands_over_first() {
    let mut cell = Cell::start(3, 3).await;
    let leader = cell.wait_for_leader(PATIENCE).await;
    let before = cell.identical_logs(PATIENCE).await;
    let i = index_of(&leader);
    if let Some(mut agent) = cell.agents[i].take() {
        tokio::task::block_in_place(|| agent.terminate());
    }
    // Handed over before it exited: the others agree on a successor at once, well inside
    // the 500 ms election timeout an election after a crash would need.
    let next = cell.wait_for_leader(Duration::from_millis(300)).await;
    assert_ne!(next, leader);
    extends(&cell.identical_logs(PATIENCE).await, &before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_keep_one_log_through_kill_9_of_each_in_turn() {
    let mut cell = Cell::start(5, 5).await;
    cell.wait_for_leader(PATIENCE).await;
    let mut log = cell.identical_logs(PATIENCE).await;
    for i in 0..5 {
        cell.kill(i);
        cell.wait_for_leader(PATIENCE).await;
        cell.restart(i).await;
        cell.wait_for_leader(PATIENCE).await;
        let now = cell.identical_logs(PATIENCE).await;
        extends(&now, &log);
        log = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_voter_is_replaced_by_a_healthy_non_voter() {
    let mut cell = Cell::start(4, 3).await;
    cell.wait_for_leader(PATIENCE).await;
    let before = cell.identical_logs(PATIENCE).await;
    let voters = |d: &Value| -> Vec<String> {
        let mut v: Vec<String> = d["status"]["voters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let first = voters(&cell.decisions(0).await.unwrap());
    assert_eq!(first.len(), 3, "{first:?}");
    let spare = (0..4).find(|i| !first.contains(&format!("v{i}"))).unwrap();
    // Kill a voter that is not the leader, for good (dead_voter_after is 3 s here).
    let leader = cell.agreed_leader().await.unwrap();
    let victim = first.iter().find(|v| **v != leader).unwrap().clone();
    cell.kill(index_of(&victim));
    let mut now = Vec::new();
    let replaced = eventually(Duration::from_secs(40), async || {
        let Some(d) = cell.decisions(index_of(&leader)).await else {
            return false;
        };
        now = voters(&d);
        now.len() == 3 && !now.contains(&victim) && now.contains(&format!("v{spare}"))
    })
    .await;
    assert!(
        replaced,
        "voters now {now:?}, {victim} killed, v{spare} spare"
    );
    let after = cell.identical_logs(PATIENCE).await;
    extends(&after, &before);
    // The membership steps are decisions with reasons in the log.
    let log = cell.decisions(index_of(&leader)).await.unwrap();
    let reasons: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "membership")
        .filter_map(|e| e["decision"]["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "learner, promote, remove: {reasons:?}");
    assert!(reasons[2].contains(&victim), "{reasons:?}");
}
