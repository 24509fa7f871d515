//! The decision log's speed on this machine, with real in-process agents (real QUIC/mTLS,
//! real redb with fsync on every step), three voters on loopback:
//!
//! - commit latency: one decision proposed on the leader until the leader has applied it, and
//!   until every voter has, one at a time (p50, p99, max over `CONSENSUS_BENCH_COMMITS`);
//! - proposals per second: a burst of proposals until every voter has applied the last one;
//! - time to react: a backend turns 10x slower under load, until every agent (a gossip-only
//!   caller included) holds a committed lower weight for it, with the default damping window
//!   (10 s) and a short one (2 s). The data plane's own reaction (P2C moving traffic within the
//!   caller, issue 4) is measured beside it: the time until the slow endpoint's share of the
//!   next 200 requests falls under 10 %.
//!
//! Run: `cargo bench -p plexus-tests --bench consensus` (env `CONSENSUS_BENCH_COMMITS`, default 200).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_agent::RunningAgent;
use plexus_protocol::{Decision, DecisionKind, NodeId, ServiceName};
use plexus_tests::http::{Backend, Client};
use plexus_tests::Mesh;

struct Cell {
    servers: Vec<RunningAgent>,
    backends: Vec<Backend>,
    caller: RunningAgent,
    _mesh: Mesh,
}

async fn cell(window: &str) -> Cell {
    let mesh = Mesh::new();
    let mut servers: Vec<RunningAgent> = Vec::new();
    let mut backends = Vec::new();
    for i in 0..3 {
        let backend = Backend::start(&format!("b{i}")).await;
        let seeds = servers
            .first()
            .map(|s| format!("seeds = [\"{}\"]\n", s.quic_addr))
            .unwrap_or_default();
        let node = format!("srv-{i}");
        let top = format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{seeds}",
            mesh.path().join(format!("{node}-data")).display()
        );
        let extra = format!(
            "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
             weights_window = \"{window}\"\n[[service]]\nname = \"api\"\naddress = \"{}\"\n\
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
    let upstream = "[gossip]\ninterval = \"100ms\"\n[[upstream]]\nservice = \"api\"\n\
                    listen = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
    let caller =
        plexus_tests::start(&mesh.config("caller", &mesh.node("caller"), &top, upstream)).await;
    Cell {
        servers,
        backends,
        caller,
        _mesh: mesh,
    }
}

async fn leader(cell: &Cell) -> usize {
    let found = plexus_tests::eventually(Duration::from_secs(20), async || {
        cell.servers.iter().any(|s| s.consensus.status().is_leader)
    })
    .await;
    assert!(found, "no leader");
    (0..3)
        .find(|i| cell.servers[*i].consensus.status().is_leader)
        .unwrap()
}

fn hint(n: u32) -> Decision {
    Decision {
        kind: DecisionKind::ScalingHint {
            service: ServiceName::new("bench").unwrap(),
            current: 1,
            desired: n,
        },
        reason: format!("benchmark proposal {n}"),
        evidence: Vec::new(),
        proposer: NodeId::new("srv-0").unwrap(),
        proposed_at_ms: 0,
    }
}

fn desired(agent: &RunningAgent) -> u32 {
    agent
        .consensus
        .state()
        .services
        .get(&ServiceName::new("bench").unwrap())
        .and_then(|s| s.scaling)
        .map_or(0, |s| s.desired)
}

/// Polls (every 200 µs) until `check` holds; panics after 10 s.
async fn until(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "not within 10 s");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn quantiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    )
}

async fn commits(cell: &Cell) {
    let count: u32 = std::env::var("CONSENSUS_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let lead = leader(cell).await;
    let mut on_leader = Vec::new();
    let mut on_all = Vec::new();
    for n in 1..=count {
        let started = Instant::now();
        cell.servers[lead]
            .consensus
            .propose(hint(n))
            .expect("leader takes proposals");
        until(|| desired(&cell.servers[lead]) == n).await;
        on_leader.push(started.elapsed());
        until(|| cell.servers.iter().all(|s| desired(s) == n)).await;
        on_all.push(started.elapsed());
    }
    println!(
        "commit latency, applied on the leader ({count} one at a time): {}",
        quantiles(on_leader)
    );
    println!(
        "commit latency, applied on all 3 voters:               {}",
        quantiles(on_all)
    );

    let burst = 500u32;
    let base = count + 1;
    let started = Instant::now();
    let mut proposed = 0;
    for n in base..base + burst {
        // The driver's queue holds 64 proposals; wait for room rather than drop.
        while cell.servers[lead].consensus.propose(hint(n)).is_err() {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        proposed += 1;
    }
    let last = base + burst - 1;
    until(|| cell.servers.iter().all(|s| desired(s) == last)).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "proposals per second: {proposed} proposed in a burst, all applied on 3 voters in {:.2} s = {:.0}/s",
        secs,
        f64::from(proposed) / secs
    );
}

async fn reaction(window: &str) {
    let cell = cell(window).await;
    leader(&cell).await;
    let app = cell.caller.upstream_addr("api").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.spawn(async move {
            let mut client = Client::h1(app).await;
            for _ in 0..12_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = client.get("/work").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    // Let gossip carry a healthy baseline first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow = NodeId::new("srv-2").unwrap();
    let weight = |a: &RunningAgent| {
        a.consensus
            .state()
            .services
            .get(&ServiceName::new("api").unwrap())
            .map_or(1000, |s| s.weight(&slow))
    };
    let hits = || cell.backends[2].behaviour.hits();
    let started = Instant::now();
    cell.backends[2]
        .behaviour
        .set_delay(Duration::from_millis(20));
    // The data plane: the share of the slow endpoint over the next 200 requests.
    let mut shifted = None;
    while shifted.is_none() && started.elapsed() < Duration::from_secs(30) {
        let (h0, t0) = (hits(), total(&cell));
        while total(&cell) < t0 + 200 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let share = (hits() - h0) as f64 / (total(&cell) - t0).max(1) as f64;
        if share < 0.10 {
            shifted = Some(started.elapsed());
        }
    }
    let everyone: Vec<&RunningAgent> = cell.servers.iter().chain([&cell.caller]).collect();
    let deadline = started + Duration::from_secs(90);
    while everyone.iter().any(|a| weight(a) >= 1000) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    println!(
        "backend 10x slower, weights_window {window}: P2C share < 10 % after {}; committed weight < 1000 on all 4 agents after {:.2} s (weight now {})",
        shifted.map_or("never (30 s)".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        committed.as_secs_f64(),
        weight(&cell.caller)
    );
}

fn total(cell: &Cell) -> u64 {
    cell.backends.iter().map(|b| b.behaviour.hits()).sum()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = cell("10s").await;
        commits(&c).await;
        drop(c);
        reaction("10s").await;
        reaction("2s").await;
    });
}
