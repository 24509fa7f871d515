//! Proxy benchmark: direct loopback TCP versus the same traffic through two `plexus` agents
//! (real processes, release build), measured side by side in one run.
//!
//! ```text
//! cargo bench -p plexus-agent --bench proxy
//! ```
//!
//! - latency: one persistent connection per path, 1 KiB written then 1 KiB read back; direct
//!   and proxied rounds alternate (A/B/A/B...) so machine noise hits both alike; p50/p99 over
//!   all samples, and the spread of the per-round added p50;
//! - throughput: one connection streaming 1 GiB into a sink that answers with the count;
//! - memory: resident set size of each agent when idle, before and after the load.
//!
//! Latency is measured twice: with the machine otherwise idle ("cold"), and with two
//! lowest-priority spinner processes keeping every CPU awake ("warm"). On a small VM the
//! difference is the cost of waking a halted vCPU, paid on each of the six cross-process hops a
//! two-agent path adds; a busy production host pays it rarely. Throughput is measured cold only,
//! since the spinners would take CPU from it.
//!
//! `PLEXUS_BENCH_BINARY=PATH` runs that `plexus` binary instead of the one built with the bench.
//!
//! Every loop is bounded in count; everything listens on 127.0.0.1.

#[path = "common/agent_binary.rs"]
mod agent_binary;
#[path = "common/ports.rs"]
mod ports;

use ports::free_port;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use plexus_agent::pki::{self, IssueOptions, Validity};
use plexus_protocol::{NodeId, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WARMUP: usize = 2_000;
const ROUNDS: usize = 8;
const EXCHANGES_PER_ROUND: usize = 4_000;
const MESSAGE: usize = 1024;
const BULK: u64 = 1 << 30;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        agent_binary::stop(&mut self.0);
    }
}

impl Agent {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

async fn spawn_agent(dir: &Path, node: &str, quic: u16, extra: &str) -> (Agent, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{quic}\"\nadmin = \"{admin}\"\n[tls]\nca = \"{node}/ca.pem\"\ncert = \"{node}/node.pem\"\nkey = \"{node}/node.key\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(agent_binary::plexus_binary())
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    for _ in 0..200 {
        if let Ok((200, _)) = plexus_agent::ctl::get(admin, "/readyz").await {
            return (agent, admin);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("agent {node} did not become ready");
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads to EOF, then answers with the number of bytes it read.
async fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    addr
}

/// One persistent connection doing 1 KiB request/response exchanges.
struct EchoClient {
    stream: TcpStream,
    message: Vec<u8>,
    reply: Vec<u8>,
}

impl EchoClient {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Self {
            stream,
            message: vec![0x5a; MESSAGE],
            reply: vec![0u8; MESSAGE],
        };
        client.run(WARMUP, None).await;
        client
    }

    async fn run(&mut self, exchanges: usize, mut histogram: Option<&mut Histogram<u64>>) {
        for _ in 0..exchanges {
            let started = Instant::now();
            self.stream.write_all(&self.message).await.unwrap();
            self.stream.read_exact(&mut self.reply).await.unwrap();
            if let Some(h) = histogram.as_deref_mut() {
                h.record(started.elapsed().as_nanos() as u64).unwrap();
            }
        }
    }
}

/// Alternating rounds: (all direct samples, all proxied samples, per-round added p50 in µs).
async fn latency(
    direct: SocketAddr,
    proxied: SocketAddr,
) -> (Histogram<u64>, Histogram<u64>, Vec<f64>) {
    let mut direct_client = EchoClient::connect(direct).await;
    let mut proxied_client = EchoClient::connect(proxied).await;
    let mut all_direct = Histogram::<u64>::new(3).unwrap();
    let mut all_proxied = Histogram::<u64>::new(3).unwrap();
    let mut added = Vec::new();
    for _ in 0..ROUNDS {
        let mut d = Histogram::<u64>::new(3).unwrap();
        let mut p = Histogram::<u64>::new(3).unwrap();
        direct_client.run(EXCHANGES_PER_ROUND, Some(&mut d)).await;
        proxied_client.run(EXCHANGES_PER_ROUND, Some(&mut p)).await;
        added.push(us(&p, 0.5) - us(&d, 0.5));
        all_direct.add(&d).unwrap();
        all_proxied.add(&p).unwrap();
    }
    added.sort_by(f64::total_cmp);
    (all_direct, all_proxied, added)
}

async fn throughput(addr: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![0xa5u8; 256 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < BULK {
        stream.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    stream.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(u64::from_be_bytes(count), BULK, "the sink got every byte");
    (BULK * 8) as f64 / elapsed.as_secs_f64() / 1e9
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Spins one CPU for at most `seconds` (the "warm" condition's helper process).
fn spin(seconds: u64) {
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        for _ in 0..10_000 {
            std::hint::spin_loop();
        }
    }
}

/// Processes that keep the CPUs awake at the lowest priority until dropped (or 120 s pass).
struct Spinners(Vec<Child>);

impl Spinners {
    fn start() -> Self {
        let exe = std::env::current_exe().unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self(
            (0..cpus)
                .map(|_| {
                    Command::new("nice")
                        .args(["-n", "19"])
                        .arg(&exe)
                        .args(["--spin", "120"])
                        .spawn()
                        .expect("start a spinner (needs `nice`)")
                })
                .collect(),
        )
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn print_latency(
    condition: &str,
    direct: &Histogram<u64>,
    proxied: &Histogram<u64>,
    added: &[f64],
) {
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (d, p) = (us(direct, q), us(proxied, q));
        println!(
            "| 1 KiB echo {name}, {condition} (µs) | {d:.1} | {p:.1} | +{:.1} µs |",
            p - d
        );
    }
    println!(
        "| added p50 per round, {condition} (µs): min / median / max | | | {:.1} / {:.1} / {:.1} |",
        added[0],
        added[added.len() / 2],
        added[added.len() - 1]
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--spin") {
        spin(
            args.get(i + 1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(10)
                .min(120),
        );
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if let Some(binary) = agent_binary::chosen_binary() {
        println!("agents: {}", binary.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let options = IssueOptions {
        validity: Validity::starting_now(Duration::from_secs(3600)),
        force: true,
    };
    pki::init_ca(
        &TrustDomain::new("bench.plexus").unwrap(),
        &dir.path().join("ca"),
        options,
    )
    .unwrap();
    for node in ["node-a", "node-b"] {
        pki::issue_node(
            &dir.path().join("ca"),
            &NodeId::new(node).unwrap(),
            &dir.path().join(node),
            options,
        )
        .unwrap();
    }
    let echo = echo_server().await;
    let sink = sink_server().await;
    let b_quic = free_port(true);
    let (b, _) = spawn_agent(
        dir.path(),
        "node-b",
        b_quic,
        &format!("[[service]]\nname = \"echo\"\naddress = \"{echo}\"\n[[service]]\nname = \"sink\"\naddress = \"{sink}\"\n"),
    )
    .await;
    let (echo_up, sink_up) = (free_port(false), free_port(false));
    let endpoints = format!("endpoints = [\"127.0.0.1:{b_quic}\"]");
    let (a, _) = spawn_agent(
        dir.path(),
        "node-a",
        free_port(true),
        &format!(
            "[[upstream]]\nservice = \"echo\"\nlisten = \"127.0.0.1:{echo_up}\"\n{endpoints}\n[[upstream]]\nservice = \"sink\"\nlisten = \"127.0.0.1:{sink_up}\"\n{endpoints}\n"
        ),
    )
    .await;
    let echo_via: SocketAddr = format!("127.0.0.1:{echo_up}").parse().unwrap();
    let sink_via: SocketAddr = format!("127.0.0.1:{sink_up}").parse().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_a, idle_b) = (a.rss_kib(), b.rss_kib());

    let cold = latency(echo, echo_via).await;
    let direct_gbps = throughput(sink).await;
    let proxied_gbps = throughput(sink_via).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after_a, after_b) = (a.rss_kib(), b.rss_kib());
    let warm = {
        let _spinners = Spinners::start();
        tokio::time::sleep(Duration::from_millis(200)).await;
        latency(echo, echo_via).await
    };

    println!("| measure | direct TCP | through two agents | added / ratio |");
    println!("|---|---|---|---|");
    print_latency("cold", &cold.0, &cold.1, &cold.2);
    print_latency("warm", &warm.0, &warm.1, &warm.2);
    println!(
        "| one-stream throughput (Gbit/s, 1 GiB) | {direct_gbps:.2} | {proxied_gbps:.2} | {:.0}% of direct |",
        100.0 * proxied_gbps / direct_gbps
    );
    println!(
        "| agent RSS idle, before load (MiB) | - | a {:.1}, b {:.1} | |",
        idle_a as f64 / 1024.0,
        idle_b as f64 / 1024.0
    );
    println!(
        "| agent RSS idle, after load (MiB) | - | a {:.1}, b {:.1} | |",
        after_a as f64 / 1024.0,
        after_b as f64 / 1024.0
    );
    println!(
        "({ROUNDS} alternating rounds of {EXCHANGES_PER_ROUND} exchanges per path after {WARMUP} \
         warm-up; client, echo and sink share one thread)"
    );
}
