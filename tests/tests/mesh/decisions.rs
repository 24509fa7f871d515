//! Decisions through the log with in-process agents: a slow endpoint loses weight on every
//! agent (voters and a caller that only learns from gossip) without the weights oscillating.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_agent::RunningAgent;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, eventually, Mesh};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_loses_weight_mesh_wide_without_oscillating() {
    let mesh = Mesh::new();
    let mut backends = Vec::new();
    let mut servers: Vec<RunningAgent> = Vec::new();
    for i in 0..3 {
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
        let extra = format!(
            "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
             weights_window = \"2s\"\n[[service]]\nname = \"api\"\naddress = \"{}\"\n\
             protocol = \"http\"\n",
            backend.addr
        );
        let path = mesh.config(&node, &mesh.node(&node), &top, &extra);
        servers.push(plexus_tests::start(&path).await);
        backends.push(backend);
    }
    let top = format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
        servers[0].quic_addr
    );
    let extra = "[gossip]\ninterval = \"100ms\"\n[[upstream]]\nservice = \"api\"\n\
                 listen = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
    let caller =
        plexus_tests::start(&mesh.config("caller", &mesh.node("caller"), &top, extra)).await;
    backends[2].behaviour.set_delay(Duration::from_millis(20));

    // Bounded open load: 4 clients, each at most 100 requests per second, for at most 60 s.
    let app = caller.upstream_addr("api").unwrap();
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

    let slow = "srv-2";
    let everywhere = eventually(Duration::from_secs(45), async || {
        for agent in servers.iter().chain([&caller]) {
            if committed_weight(agent, slow).await >= 1000 {
                return false;
            }
        }
        true
    })
    .await;
    let routes = json(&caller, "/v1/routes").await;
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
