//! Decisions through the log with in-process agents: a slow endpoint loses weight on every
//! agent (voters and a caller that only learns from gossip) without the weights oscillating.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_agent::RunningAgent;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, eventually, run_plexus, Mesh};
use serde_json::Value;

async fn json(agent: &RunningAgent, path: &str) -> Value {
    let (code, body) = admin_get(agent.admin_addr, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The committed weight of `node` for `api` in an agent's committed state (1000 when unset).
async fn committed_weight(agent: &RunningAgent, node: &str) -> u64 {
    let d = json(agent, "/v1/decisions").await;
    d["state"]["services"]["api"]["weights"][node]
        .as_u64()
        .unwrap_or(1000)
}

/// Three voters hosting `api` (with the given versions) and a caller that only learns from
/// gossip, with `extra` added to every voter's config.
struct Cell {
    servers: Vec<RunningAgent>,
    configs: Vec<std::path::PathBuf>,
    backends: Vec<Backend>,
    caller: RunningAgent,
    _mesh: Mesh,
}

impl Cell {
    async fn start(versions: [&str; 3], extra: &str) -> Self {
        let mesh = Mesh::new();
        let mut backends = Vec::new();
        let mut servers: Vec<RunningAgent> = Vec::new();
        let mut configs = Vec::new();
        for (i, version) in versions.iter().enumerate() {
            let backend = Backend::start(&format!("b{i}")).await;
            let seeds = match servers.first() {
                Some(first) => format!("seeds = [\"{}\"]\n", first.quic_addr),
                None => String::new(),
            };
            let node = format!("srv-{i}");
            let top = format!(
                "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{seeds}",
                mesh.path().join(format!("{node}-data")).display()
            );
            let config = format!(
                "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
                 weights_window = \"2s\"\n[[service]]\nname = \"api\"\naddress = \"{}\"\n\
                 protocol = \"http\"\nversion = \"{version}\"\n{extra}\n",
                backend.addr
            );
            let path = mesh.config(&node, &mesh.node(&node), &top, &config);
            servers.push(plexus_tests::start(&path).await);
            configs.push(path);
            backends.push(backend);
        }
        let top = format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
            servers[0].quic_addr
        );
        let upstream = "[gossip]\ninterval = \"100ms\"\n[[upstream]]\nservice = \"api\"\n\
                        listen = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
        let caller =
            plexus_tests::start(&mesh.config("caller", &mesh.node("caller"), &top, upstream)).await;
        // The three serving agents form the group; the caller (no [consensus]) never votes.
        let formed = eventually(Duration::from_secs(20), async || {
            servers.iter().all(|s| s.consensus.status().role == "voter")
        })
        .await;
        assert!(formed, "the voters did not form a group");
        assert_ne!(caller.consensus.status().role, "voter");
        let voters = servers[0].consensus.status().voters;
        assert_eq!(
            voters,
            ["srv-0", "srv-1", "srv-2"],
            "the caller has no [consensus]"
        );
        Self {
            servers,
            configs,
            backends,
            caller,
            _mesh: mesh,
        }
    }

    fn everyone(&self) -> impl Iterator<Item = &RunningAgent> {
        self.servers.iter().chain([&self.caller])
    }

    /// Bounded load through the caller: 4 clients, each at most 100 requests per second, for
    /// at most 60 s, until the returned flag is set.
    fn load(&self) -> (Arc<AtomicBool>, tokio::task::JoinSet<()>) {
        let app = self.caller.upstream_addr("api").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let stop = stop.clone();
            load.spawn(async move {
                let mut client = Client::h1(app).await;
                for _ in 0..6_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = client.get("/work").await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        (stop, load)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_loses_weight_mesh_wide_without_oscillating() {
    let cell = Cell::start(["v1", "v1", "v1"], "").await;
    cell.backends[2]
        .behaviour
        .set_delay(Duration::from_millis(20));
    let (stop, mut load) = cell.load();
    let (servers, caller) = (&cell.servers, &cell.caller);

    let slow = "srv-2";
    let everywhere = eventually(Duration::from_secs(45), async || {
        for agent in cell.everyone() {
            if committed_weight(agent, slow).await >= 1000 {
                return false;
            }
        }
        true
    })
    .await;
    let routes = json(caller, "/v1/routes").await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        everywhere,
        "the slow endpoint kept full weight somewhere; caller routes: {routes:#}"
    );

    // The caller's balancer uses the committed weight.
    let endpoint = routes["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node_id"] == slow)
        .cloned()
        .unwrap();
    assert!(endpoint["weight"].as_f64().unwrap() < 1.0, "{routes:#}");
    assert!(routes["upstreams"][0]["weights_epoch"].as_u64().unwrap() >= 1);

    // Every weights decision in the log, in order: the slow endpoint's weight changes
    // direction at most twice, and the healthy ones keep full weight.
    let log = json(&servers[0], "/v1/decisions").await;
    let mut weights = Vec::new();
    for entry in log["entries"].as_array().unwrap() {
        let decision = &entry["decision"];
        let Some(kind) = decision["kind"]["Weights"].as_object() else {
            continue;
        };
        let listed = kind["weights"].as_array().unwrap();
        let weight_of = |node: &str| {
            listed
                .iter()
                .find(|w| w["node"] == node)
                .map_or(1000, |w| w["weight"].as_u64().unwrap())
        };
        assert_eq!(weight_of("srv-0"), 1000, "{decision:#}");
        assert_eq!(weight_of("srv-1"), 1000, "{decision:#}");
        assert!(decision["reason"].as_str().is_some_and(|r| !r.is_empty()));
        weights.push(weight_of(slow) as i64);
    }
    assert!(!weights.is_empty(), "no weights decision in {log:#}");
    let directions: Vec<i64> = weights
        .windows(2)
        .map(|w| (w[1] - w[0]).signum())
        .filter(|d| *d != 0)
        .collect();
    let reversals = directions.windows(2).filter(|d| d[0] != d[1]).count();
    assert!(reversals <= 2, "weights oscillated: {weights:?}");
}

/// The committed canary of `api` on one agent: (share, phase).
async fn canary(agent: &RunningAgent) -> Option<(u64, String)> {
    let d = json(agent, "/v1/decisions").await;
    let canary = &d["state"]["services"]["api"]["canary"];
    Some((
        canary["share_percent"].as_u64()?,
        canary["phase"].as_str()?.to_owned(),
    ))
}

/// Latency bounds loose enough for in-process agents of a debug build sharing two cores with
/// the other tests (their p99s move by milliseconds); the bad canary fails on errors.
const CANARY: &str = "[[canary]]\nservice = \"api\"\nbaseline = \"v1\"\ncanary = \"v2\"\n\
                      step_percent = 50\ninterval = \"1s\"\nmax_latency_ratio = 4.0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_is_promoted_and_takes_all_traffic() {
    let cell = Cell::start(["v1", "v1", "v2"], CANARY).await;
    let (stop, mut load) = cell.load();
    let promoted = eventually(Duration::from_secs(45), async || {
        for agent in cell.everyone() {
            if canary(agent).await != Some((100, "Promoted".into())) {
                return false;
            }
        }
        true
    })
    .await;
    let routes = json(&cell.caller, "/v1/routes").await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    if !promoted {
        let log = json(&cell.servers[0], "/v1/decisions").await;
        let reasons: Vec<&Value> = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["decision"]["reason"])
            .collect();
        panic!("not promoted everywhere: {reasons:#?}");
    }
    assert_eq!(
        routes["upstreams"][0]["canary_share_percent"], 100,
        "{routes:#}"
    );
    // Promotion took steps: start, 50 %, 100 %.
    let log = json(&cell.servers[0], "/v1/decisions").await;
    let steps: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "canary_step")
        .collect();
    assert!(steps.len() >= 2, "{log:#}");
    let hits_before = cell.backends[0].behaviour.hits() + cell.backends[1].behaviour.hits();
    let mut client = Client::h1(cell.caller.upstream_addr("api").unwrap()).await;
    for _ in 0..50 {
        let answer = client.get("/work").await.unwrap();
        assert_eq!(
            answer.backend(),
            Some("b2"),
            "a promoted canary takes every request"
        );
    }
    let hits_after = cell.backends[0].behaviour.hits() + cell.backends[1].behaviour.hits();
    assert_eq!(hits_before, hits_after);

    let admin = cell.servers[0].admin_addr.to_string();
    let (code, out, err) = run_plexus(&["ctl", "--admin", &admin, "canary", "api"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("share 100%") && out.contains("Promoted"),
        "{out}"
    );
    let (code, out, err) = run_plexus(&["ctl", "--admin", &admin, "decisions"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("canary_step"), "{out}");

    // Fail static: a voter restarted alone (no quorum) serves the last committed state at once.
    let Cell {
        servers, configs, ..
    } = cell;
    for server in servers {
        server.shutdown().await;
    }
    let alone = plexus_tests::start(&configs[0]).await;
    assert_eq!(canary(&alone).await, Some((100, "Promoted".into())));
    let status = json(&alone, "/v1/decisions").await["status"].clone();
    assert_eq!(status["role"], "voter", "{status}");
    assert!(status["leader"].is_null(), "no quorum, no leader: {status}");
    alone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_rolled_back_to_zero() {
    let cell = Cell::start(["v1", "v1", "v2"], CANARY).await;
    cell.backends[2].behaviour.set_status(500);
    let (stop, mut load) = cell.load();
    let rolled_back = eventually(Duration::from_secs(45), async || {
        for agent in cell.everyone() {
            if canary(agent).await != Some((0, "RolledBack".into())) {
                return false;
            }
        }
        true
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        rolled_back,
        "not rolled back: {:?}",
        canary(&cell.servers[0]).await
    );
    let log = json(&cell.servers[0], "/v1/decisions").await;
    let rollback = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "canary_step")
        .cloned()
        .unwrap();
    let evidence = rollback["decision"]["evidence"].as_array().unwrap();
    assert!(
        !evidence.is_empty(),
        "a rollback carries its evidence: {rollback:#}"
    );
    let hits = cell.backends[2].behaviour.hits();
    let mut client = Client::h1(cell.caller.upstream_addr("api").unwrap()).await;
    for _ in 0..30 {
        let answer = client.get("/work").await.unwrap();
        assert_ne!(
            answer.backend(),
            Some("b2"),
            "a rolled-back canary gets no traffic"
        );
    }
    assert_eq!(cell.backends[2].behaviour.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_service_gets_a_scaling_hint_and_the_hook_runs() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("scale.sh");
    let calls = dir.path().join("calls");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1 $2\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Any load is "busy" against a 1 % utilization target: the hint goes to the maximum.
    let scaling = format!(
        "[[scaling]]\nservice = \"api\"\ntarget_utilization = 0.01\nmax_replicas = 5\n\
         scale_hook = \"{}\"\n",
        hook.display()
    );
    let cell = Cell::start(["v1", "v1", "v1"], &scaling).await;
    for backend in &cell.backends {
        backend.behaviour.set_delay(Duration::from_millis(20));
    }
    let (stop, mut load) = cell.load();
    let hinted = eventually(Duration::from_secs(30), async || {
        let services = json(&cell.caller, "/v1/services").await;
        services["decisions"]["api"]["scaling"]["desired"] == 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert!(
        hinted,
        "{:#}",
        json(&cell.servers[0], "/v1/services").await["decisions"]
    );
    let metrics = admin_get(cell.servers[1].admin_addr, "/metrics").await.1;
    assert!(
        metrics.contains("plexus_scaling_desired_replicas{service=\"api\"} 5"),
        "{metrics}"
    );
    // Every agent with the hook runs it once the hint is committed (bounded wait: the hook
    // runs off the runtime).
    let ran = eventually(Duration::from_secs(10), async || {
        std::fs::read_to_string(&calls)
            .is_ok_and(|c| c.lines().filter(|l| *l == "api 5").count() >= 3)
    })
    .await;
    assert!(ran, "hook calls: {:?}", std::fs::read_to_string(&calls));
}
