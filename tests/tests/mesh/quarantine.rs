//! Quarantine with in-process agents: three voters of a decision-log cell, each calling `api`
//! over HTTP, and two agents serving `api` without `[consensus]`. One lying observer never gets
//! a healthy node quarantined; three independent observers of a failing node do: the verdict
//! and its evidence are in `/v1/quarantine`, the node leaves every route and its new
//! connections are refused; the operator's release (`plexus ctl quarantine release`) restores it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_agent::quarantine::PeerEvent;
use plexus_agent::RunningAgent;
use plexus_protocol::NodeId;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, eventually, run_plexus, Mesh};
use serde_json::Value;

use crate::PATIENCE;

async fn json(agent: &RunningAgent, path: &str) -> Value {
    let (code, body) = admin_get(agent.admin_addr, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The nodes an agent's `/v1/quarantine` lists as quarantined.
async fn quarantined(agent: &RunningAgent) -> Vec<String> {
    json(agent, "/v1/quarantine").await["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["node"].as_str().unwrap().to_owned())
        .collect()
}

/// The nodes an agent's `api` route has as endpoints.
async fn routed(agent: &RunningAgent) -> Vec<String> {
    json(agent, "/v1/routes").await["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["node_id"].as_str().map(str::to_owned))
        .collect()
}

/// Handshakes an agent refused because the peer is quarantined (either direction).
fn quarantine_refusals(agent: &RunningAgent) -> f64 {
    agent
        .telemetry
        .render()
        .lines()
        .filter(|l| {
            l.starts_with("plexus_handshake_failures_total{")
                && l.contains("reason=\"quarantined\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `plexus ARGS` off the runtime's threads.
async fn plexus(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_plexus(&args)
    })
    .await
    .unwrap()
}

struct Cell {
    /// `v-0`..`v-2`: the voters, each with an `api` upstream.
    voters: Vec<RunningAgent>,
    data_dirs: Vec<PathBuf>,
    /// `s-ok` and `s-bad`, serving `api`.
    servers: Vec<RunningAgent>,
    backends: Vec<Backend>,
    _mesh: Mesh,
}

impl Cell {
    /// The cell with `quarantine` in every voter's configuration, once every voter routes to
    /// both servers.
    async fn start(quarantine: &str) -> Self {
        let mesh = Mesh::new();
        let mut voters: Vec<RunningAgent> = Vec::new();
        let mut data_dirs = Vec::new();
        for i in 0..3 {
            let seeds = match voters.first() {
                Some(first) => format!("seeds = [\"{}\"]\n", first.quic_addr),
                None => String::new(),
            };
            let node = format!("v-{i}");
            let data = mesh.path().join(format!("{node}-data"));
            let top = format!(
                "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{seeds}",
                data.display()
            );
            let config = format!(
                "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
                 [[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
                 {quarantine}\n"
            );
            let path = mesh.config(&node, &mesh.node(&node), &top, &config);
            voters.push(plexus_tests::start(&path).await);
            data_dirs.push(data);
        }
        let top = format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
            voters[0].quic_addr
        );
        let mut servers = Vec::new();
        let mut backends = Vec::new();
        for node in ["s-ok", "s-bad"] {
            let backend = Backend::start(node).await;
            let config = format!(
                "[gossip]\ninterval = \"100ms\"\n[[service]]\nname = \"api\"\naddress = \"{}\"\n\
                 protocol = \"http\"\n",
                backend.addr
            );
            let path = mesh.config(node, &mesh.node(node), &top, &config);
            servers.push(plexus_tests::start(&path).await);
            backends.push(backend);
        }
        let cell = Self {
            voters,
            data_dirs,
            servers,
            backends,
            _mesh: mesh,
        };
        let formed = eventually(Duration::from_secs(20), async || {
            cell.voters
                .iter()
                .all(|v| v.consensus.status().role == "voter")
        })
        .await;
        assert!(formed, "the voters did not form a group");
        let routes = eventually(PATIENCE, async || {
            for voter in &cell.voters {
                if routed(voter).await.len() != 2 {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(routes, "the voters never routed to both servers");
        cell
    }

    /// Bounded load from every voter: one client each, at most ~100 requests per second, for
    /// at most 60 s, until the returned flag is set.
    fn load(&self) -> (Arc<AtomicBool>, tokio::task::JoinSet<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = tokio::task::JoinSet::new();
        for voter in &self.voters {
            let app = voter.upstream_addr("api").unwrap();
            let stop = stop.clone();
            load.spawn(async move {
                let mut client = Client::h1(app).await;
                for _ in 0..6_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if client.get("/work").await.is_err() {
                        client = Client::h1(app).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        (stop, load)
    }

    async fn leader(&self) -> &RunningAgent {
        let mut leader = None;
        let elected = eventually(PATIENCE, async || {
            leader = self.voters.iter().find(|v| v.consensus.status().is_leader);
            leader.is_some()
        })
        .await;
        assert!(elected, "no leader");
        leader.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_lying_observer_never_gets_a_healthy_node_quarantined() {
    let cell = Cell::start("[quarantine]\nwindow = \"10s\"\n").await;
    let (stop, mut load) = cell.load();
    // v-1 lies: it claims s-ok keeps sending malformed frames.
    let liar = &cell.voters[1];
    let healthy = NodeId::new("s-ok").unwrap();
    for _ in 0..20 {
        liar.observer()
            .record(&healthy, PeerEvent::ProtocolViolation);
    }
    let reported = eventually(PATIENCE, async || {
        json(liar, "/v1/quarantine").await["reports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["subject"] == "s-ok" && r["signal"] == "protocol_violation")
    })
    .await;
    assert!(reported, "{:#}", json(liar, "/v1/quarantine").await);
    // The leader hears the report: one observer of the two it needs.
    let leader = cell.leader().await;
    let suspected = eventually(PATIENCE, async || {
        let doc = json(leader, "/v1/quarantine").await;
        doc["suspicions"].as_array().unwrap().iter().any(|s| {
            s["node"] == "s-ok" && s["observers"] == serde_json::json!(["v-1"]) && s["needed"] == 2
        })
    })
    .await;
    assert!(suspected, "{:#}", json(leader, "/v1/quarantine").await);
    // Watched for a while longer, on every voter: never quarantined, still routed.
    let quarantined_somewhere = eventually(Duration::from_secs(5), async || {
        for voter in &cell.voters {
            if !quarantined(voter).await.is_empty() {
                return true;
            }
        }
        false
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(!quarantined_somewhere, "one observer quarantined a node");
    for voter in &cell.voters {
        assert!(routed(voter).await.contains(&"s-ok".to_owned()));
        assert!(
            plexus_tests::agent_metric(voter, "plexus_quarantined_nodes") == 0.0,
            "{}",
            voter.node_id
        );
    }
    assert!(plexus_tests::agent_metric(liar, "plexus_quarantine_reports") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_observers_quarantine_a_failing_node_and_release_restores_it() {
    let cell = Cell::start("[quarantine]\nwindow = \"10s\"\nprobation = \"10m\"\n").await;
    let bad = &cell.servers[1];
    let serial = json(bad, "/v1/status").await["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    cell.backends[1].behaviour.set_status(500);
    let (stop, mut load) = cell.load();

    // Every voter sees the verdict, with its evidence. Bounded generously: the callers'
    // balancers starve the failing endpoint (its failures look slow), so on a loaded 2-core
    // machine the five failures each observer needs can take tens of seconds to gather.
    let everywhere = eventually(Duration::from_secs(75), async || {
        for voter in &cell.voters {
            if quarantined(voter).await != ["s-bad"] {
                return false;
            }
        }
        true
    })
    .await;
    let doc = json(&cell.voters[0], "/v1/quarantine").await;
    assert!(everywhere, "s-bad was not quarantined everywhere: {doc:#}");
    let verdict = &doc["quarantined"][0];
    let observers = verdict["observers"].as_array().unwrap();
    assert!(observers.len() >= 2, "{verdict:#}");
    assert!(observers
        .iter()
        .all(|o| o.as_str().unwrap().starts_with("v-")));
    assert_eq!(
        verdict["serials"],
        serde_json::json!([serial]),
        "{verdict:#}"
    );
    let evidence = verdict["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), observers.len(), "{verdict:#}");
    for (e, observer) in evidence.iter().zip(observers) {
        assert_eq!(&e["observer"], observer);
        assert_eq!(e["subject"], "s-bad");
        assert_eq!(e["signal"], "error_rate");
        assert!(e["value"].as_f64().unwrap() > 0.5, "{e:#}");
    }
    assert!(verdict["reason"]
        .as_str()
        .unwrap()
        .contains("distinct observers"));

    // It leaves every route, and its connections are refused, not only unrouted.
    let unrouted = eventually(PATIENCE, async || {
        for voter in &cell.voters {
            if routed(voter).await != ["s-ok"] {
                return false;
            }
        }
        true
    })
    .await;
    assert!(unrouted, "{:#}", json(&cell.voters[0], "/v1/routes").await);
    let refused = eventually(PATIENCE, async || {
        cell.voters.iter().map(quarantine_refusals).sum::<f64>() > 0.0
    })
    .await;
    assert!(
        refused,
        "no handshake with s-bad was refused as quarantined"
    );
    for voter in &cell.voters {
        let metric = |series| plexus_tests::agent_metric(voter, series);
        assert_eq!(metric("plexus_quarantined_nodes"), 1.0);
        assert_eq!(
            metric("plexus_quarantine_verdicts_total{verdict=\"quarantine\"}"),
            1.0
        );
    }
    // The CLI lists it.
    let admin = cell.voters[0].admin_addr.to_string();
    let (code, out, err) = plexus(&["ctl", "--admin", &admin, "quarantine"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("s-bad  quarantined since"), "{out}");
    assert!(out.contains("saw error_rate"), "{out}");

    // Healed and released by the operator: back in every route.
    cell.backends[1].behaviour.set_status(200);
    let token = cell.data_dirs[0].join("admin.token");
    let token = token.to_str().unwrap();
    let release = [
        "ctl",
        "--admin",
        &admin,
        "--token-file",
        token,
        "quarantine",
        "release",
        "s-bad",
    ];
    let (code, out, err) = plexus(&release).await;
    assert_eq!(code, 0, "{out}{err}");
    let restored = eventually(Duration::from_secs(30), async || {
        for voter in &cell.voters {
            if !quarantined(voter).await.is_empty() || routed(voter).await.len() != 2 {
                return false;
            }
        }
        true
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        restored,
        "{:#}\n{:#}",
        json(&cell.voters[0], "/v1/quarantine").await,
        json(&cell.voters[0], "/v1/routes").await
    );
    for voter in &cell.voters {
        let metric = |series| plexus_tests::agent_metric(voter, series);
        assert_eq!(metric("plexus_quarantined_nodes"), 0.0);
        assert_eq!(
            metric("plexus_quarantine_verdicts_total{verdict=\"release\"}"),
            1.0
        );
    }
    // Releasing a node that is not quarantined is refused.
    let (code, out, err) = plexus(&release).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not quarantined"), "{err}");
}
