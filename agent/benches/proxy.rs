//! Proxy benchmark: direct loopback TCP versus the same traffic through two `plexus` agents
//! (real processes, release build), measured side by side in one run.
//!
//! ```text
//! cargo bench -p plexus-agent --bench proxy
//! ```
//!
//! - latency: one persistent connection, 1 KiB written then 1 KiB read back, p50/p99;
//! - throughput: one connection streaming 1 GiB into a sink that answers with the count;
//! - memory: resident set size of each agent when idle, before and after the load.
//!
//! Every loop is bounded in count; everything listens on 127.0.0.1.

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
const EXCHANGES: usize = 20_000;
const MESSAGE: usize = 1024;
const BULK: u64 = 1 << 30;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
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
    let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
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

async fn latency(addr: SocketAddr) -> Histogram<u64> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let message = vec![0x5a; MESSAGE];
    let mut reply = vec![0u8; MESSAGE];
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for i in 0..WARMUP + EXCHANGES {
        let started = Instant::now();
        stream.write_all(&message).await.unwrap();
        stream.read_exact(&mut reply).await.unwrap();
        if i >= WARMUP {
            histogram
                .record(started.elapsed().as_nanos() as u64)
                .unwrap();
        }
    }
    histogram
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
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

    let direct = latency(echo).await;
    let proxied = latency(echo_via).await;
    let direct_gbps = throughput(sink).await;
    let proxied_gbps = throughput(sink_via).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after_a, after_b) = (a.rss_kib(), b.rss_kib());

    println!("| measure | direct TCP | through two agents | added / ratio |");
    println!("|---|---|---|---|");
    for (name, q) in [("1 KiB echo p50 (µs)", 0.5), ("1 KiB echo p99 (µs)", 0.99)] {
        let (d, p) = (us(&direct, q), us(&proxied, q));
        println!("| {name} | {d:.1} | {p:.1} | +{:.1} µs |", p - d);
    }
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
        "({EXCHANGES} exchanges after {WARMUP} warm-up; client, echo and sink share one thread)"
    );
}
