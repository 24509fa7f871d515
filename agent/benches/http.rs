//! HTTP benchmark: request latency at fixed rates through two `plexus` agents
//! (`protocol = "http"`, real processes, release build), against talking to the backend
//! directly and against an HAProxy pair doing mTLS between them, measured side by side in one
//! run; plus the proxies' CPU and RSS at those rates.
//!
//! ```text
//! cargo bench -p plexus-agent --bench http
//! ```
//!
//! - backend: an HTTP/1.1 keep-alive server in this process (own thread), answering every GET
//!   with 200 and a 100-byte body;
//! - plexus: client → node-a upstream listener → QUIC + mTLS → node-b → backend;
//! - haproxy: client → haproxy-a (`mode http`) → TLS 1.3 with client certificates (issued by
//!   the mesh CA, `verify required` both ways), `http-reuse always` → haproxy-b → backend
//!   (Debian's `haproxy` package; the path is left out, and the table says so, if it is missing);
//! - load: open loop at 1 000 and 5 000 requests/s on a fixed timetable over 32 keep-alive
//!   HTTP/1.1 connections (one blocking thread each, one request at a time per connection);
//!   latency runs from each request's *scheduled* send time, so stalls are not omitted;
//! - per rate: 2 s warm-up per path, then 5 rounds of 2 s per path (each after a 250 ms
//!   unrecorded lead-in), the path order rotating every round: 10 s measured per path and rate;
//! - CPU: utime + stime from /proc/PID/stat over the measured windows of the path a process
//!   serves, as % of one core; RSS: VmRSS at the end of each rate's rounds;
//! - quiet machine: before each round the bench waits until other processes use under 10% of
//!   a core, and redoes (at most twice) a round that other work overlapped; waiting is
//!   capped at 10 minutes per run, and rounds kept despite other work are counted and flagged;
//! - any failure or non-200 answer (with its `plexus-error` reason) is counted and printed: a
//!   run with any is not a valid measurement.
//!
//! `HTTP_BENCH_ROUNDS=N` measures N rounds (1 to 50) instead of 5.
//!
//! Diagnostic variants (off by default): `HTTP_BENCH_ADAPTIVE_LIMIT=off` turns node-b's
//! adaptive concurrency limit off; `HTTP_BENCH_WARM=1` keeps every CPU awake with `nice -n 19`
//! spinners (this binary with `--spin`), as the proxy bench's "warm" condition;
//! `HTTP_BENCH_WORKERS=N` runs each agent on N runtime workers (`worker_threads`) instead of
//! the default one; `HTTP_BENCH_HAPROXY_THREADS=N` runs each HAProxy with `nbthread N` instead of
//! its default (one thread per CPU). `PLEXUS_BENCH_BINARY=PATH` runs that `plexus` binary instead
//! of the one built with the bench (another build, say the profile-guided one).
//!
//! Every loop is bounded in count and time; everything listens on 127.0.0.1.

#[path = "common/agent_binary.rs"]
mod agent_binary;
#[path = "http/load.rs"]
mod load;
#[path = "common/ports.rs"]
mod ports;
#[path = "http/procs.rs"]
mod procs;
#[path = "http/report.rs"]
mod report;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use load::Conn;
use plexus_agent::pki::{self, IssueOptions, Validity};
use plexus_protocol::{NodeId, TrustDomain};
use ports::free_port;
use procs::{cpu_ticks, rss_kib, Proc};
use report::{Cell, RateResult, Setup, Snapshot};

const RATES: [u64; 2] = [1_000, 5_000];
const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(2);
/// Rounds per path and rate (`HTTP_BENCH_ROUNDS` overrides, 1 to 50: more rounds, a steadier tail).
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(2);
const LEAD_IN: Duration = Duration::from_millis(250);
/// CPU used by other processes (% of one core) above which a round is redone.
const FOREIGN_MAX: f64 = 10.0;
const ATTEMPTS: u32 = 3;
/// How long the whole run may wait, in total, for the machine to become quiet.
const QUIET_BUDGET: Duration = Duration::from_secs(600);

const HAPROXY: &str = "haproxy pair (mTLS)";

struct Path {
    name: &'static str,
    addr: SocketAddr,
    conns: Vec<Conn>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--spin") {
        let seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(10);
        procs::spin(u64::min(seconds, 1800));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // Diagnostic variants (see the top of this file).
    let no_limit = std::env::var("HTTP_BENCH_ADAPTIVE_LIMIT").is_ok_and(|v| v == "off");
    let warm = std::env::var("HTTP_BENCH_WARM").is_ok_and(|v| v == "1");
    let rounds: usize = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(ROUNDS, |n: usize| n.clamp(1, 50));
    procs::tighten_timer_slack();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let options = IssueOptions {
        validity: Validity::starting_now(Duration::from_secs(3600)),
        force: true,
    };
    let ca_dir = dir.join("ca");
    pki::init_ca(&TrustDomain::new("bench.plexus").unwrap(), &ca_dir, options).unwrap();
    for node in ["node-a", "node-b"] {
        let id = NodeId::new(node).unwrap();
        pki::issue_node(&ca_dir, &id, &dir.join(node), options).unwrap();
    }
    let backend = procs::start_backend();

    let b_quic = free_port(true);
    let upstream: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let ((mut node_b, b_admin), (mut node_a, _)) = runtime.block_on(async {
        let limit = if no_limit {
            "adaptive_limit = false\n"
        } else {
            ""
        };
        let service = format!(
            "[[service]]\nname = \"api\"\naddress = \"{backend}\"\nprotocol = \"http\"\n{limit}"
        );
        let b = procs::spawn_agent(dir, "node-b", b_quic, &service).await;
        let upstream = format!(
            "[[upstream]]\nservice = \"api\"\nlisten = \"{upstream}\"\n\
             endpoints = [\"127.0.0.1:{b_quic}\"]\nprotocol = \"http\"\n"
        );
        let a = procs::spawn_agent(dir, "node-a", free_port(true), &upstream).await;
        (b, a)
    });

    let mut paths = vec![
        Path::new("direct", backend),
        Path::new("plexus (two agents)", upstream),
    ];
    for path in &paths {
        path.wait_until_answering()
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The HAProxy pair and its path, or why it is left out.
    let mut haproxy = start_haproxy(dir, &ca_dir, backend).and_then(|(a, b, version, listen)| {
        Path::new(HAPROXY, listen).wait_until_answering()?;
        Ok((a, b, version, listen))
    });
    let mut tracked: Vec<(&str, u32, Option<usize>)> = vec![
        ("plexus node-a", node_a.pid(), Some(1)),
        ("plexus node-b", node_b.pid(), Some(1)),
    ];
    let haproxy_note = match &haproxy {
        Ok((a, b, version, listen)) => {
            paths.push(Path::new(HAPROXY, *listen));
            tracked.push(("haproxy-a", a.pid(), Some(2)));
            tracked.push(("haproxy-b", b.pid(), Some(2)));
            version.clone()
        }
        Err(why) => format!("HAProxy path NOT measured: {why}"),
    };
    tracked.push((
        "bench process (load generator + backend)",
        std::process::id(),
        None,
    ));
    let spinners = warm.then(|| procs::Spinners::start(1800));
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss: Vec<u64> = tracked.iter().map(|(_, pid, _)| rss_kib(*pid)).collect();
    let mut excluded: Vec<u32> = tracked.iter().map(|(_, pid, _)| *pid).collect();
    excluded.extend(spinners.as_ref().map_or(Vec::new(), |s| s.pids()));
    let snapshot = || Snapshot {
        at: Instant::now(),
        ticks: tracked.iter().map(|(_, pid, _)| cpu_ticks(*pid)).collect(),
        switches: tracked
            .iter()
            .map(|(_, pid, _)| procs::context_switches(*pid))
            .collect(),
        others: procs::other_process_ticks(&excluded),
        udp_drops: procs::udp_rcvbuf_errors(),
    };
    let tps = procs::clock_ticks();
    let mut budget = QUIET_BUDGET;

    let mut results = Vec::new();
    // node-b's adaptive limit at the end of each Plexus round: (rate, reading).
    let mut limits: Vec<(u64, String)> = Vec::new();
    for rate in RATES {
        eprintln!("[http bench] {rate} req/s: warm-up and {rounds} rounds per path");
        let mut cells: Vec<Cell> = paths.iter().map(|_| Cell::new(tracked.len())).collect();
        for (path, cell) in paths.iter_mut().zip(&mut cells) {
            wait_quiet(&snapshot, tps, &mut budget);
            let warmup = load::run(&mut path.conns, rate, Duration::ZERO, WARMUP, || {});
            cell.warmup.merge(&warmup);
        }
        for round in 0..rounds {
            for j in 0..paths.len() {
                let i = (round + j) % paths.len();
                for attempt in 1..=ATTEMPTS {
                    wait_quiet(&snapshot, tps, &mut budget);
                    let mut snapshots = Vec::with_capacity(2);
                    let outcome = load::run(&mut paths[i].conns, rate, LEAD_IN, ROUND, || {
                        snapshots.push(snapshot())
                    });
                    let foreign = snapshots[1].foreign_percent(&snapshots[0], tps);
                    if foreign < FOREIGN_MAX || attempt == ATTEMPTS || budget.is_zero() {
                        cells[i].add(&outcome, &snapshots, foreign >= FOREIGN_MAX);
                        break;
                    }
                    eprintln!(
                        "[http bench] {} at {rate} req/s: other work used {foreign:.0}% of a \
                         core during the round; redoing it",
                        paths[i].name
                    );
                    cells[i].discard(&outcome);
                }
                if i == 1 {
                    limits.push((rate, runtime.block_on(service_limit(b_admin))));
                }
            }
        }
        let rss = tracked.iter().map(|(_, pid, _)| rss_kib(*pid)).collect();
        results.push(RateResult { rate, cells, rss });
    }
    drop(spinners);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut description = format!(
        "{cpus} CPUs; {haproxy_note}; {CONNECTIONS} keep-alive HTTP/1.1 connections, open loop; \
         per path and rate {rounds} rounds x {} s measured after {} s warm-up, path order \
         rotating; 100-byte answers",
        ROUND.as_secs(),
        WARMUP.as_secs()
    );
    if no_limit {
        description.push_str("; DIAGNOSTIC: node-b adaptive_limit = false");
    }
    if let Ok(n) = std::env::var("HTTP_BENCH_WORKERS") {
        description.push_str(&format!(
            "; DIAGNOSTIC: worker_threads = {n} on both agents"
        ));
    }
    if let Some(binary) = agent_binary::chosen_binary() {
        description.push_str(&format!("; agents: {}", binary.display()));
    }
    if let Ok(n) = std::env::var("HTTP_BENCH_HAPROXY_THREADS") {
        description.push_str(&format!("; DIAGNOSTIC: HAProxy nbthread = {n}"));
    }
    if warm {
        description.push_str("; DIAGNOSTIC: warm (nice 19 spinners on every CPU)");
    }
    let names: Vec<&str> = paths.iter().map(|p| p.name).collect();
    let setup = Setup {
        paths: &names,
        tracked: &tracked,
        idle_rss: &idle_rss,
        ticks_per_second: tps,
        description,
    };
    report::print(&setup, &results);

    let mut notes = Vec::new();
    for rate in RATES.into_iter().filter(|_| !no_limit) {
        let readings: Vec<&str> = limits
            .iter()
            .filter(|(r, _)| *r == rate)
            .map(|(_, reading)| reading.as_str())
            .collect();
        notes.push(format!(
            "node-b adaptive limit at the end of each plexus round at {rate} req/s: {}",
            readings.join("; ")
        ));
    }
    for proc in [&mut node_a, &mut node_b] {
        if let Some(how) = proc.exited() {
            notes.push(format!("{} exited during the run: {how}", proc.name));
        }
    }
    let mut logged: Vec<&Proc> = vec![&node_a, &node_b];
    if let Ok((a, b, _, _)) = &mut haproxy {
        for proc in [&mut *a, &mut *b] {
            if let Some(how) = proc.exited() {
                notes.push(format!("{} exited during the run: {how}", proc.name));
            }
        }
    }
    if let Ok((a, b, _, _)) = &haproxy {
        logged.extend([a, b]);
    }
    for proc in logged {
        let lines = proc.log_lines();
        if let Some(first) = lines.first() {
            notes.push(format!(
                "{} wrote {} lines to stderr; first: {first}",
                proc.name,
                lines.len()
            ));
        }
    }
    for note in &notes {
        println!("NOTE: {note}");
    }
}

/// Waits, in half-second looks, until other processes use under `FOREIGN_MAX` % of one core, spending at most what is left of `budget` (shared by the whole run).
fn wait_quiet(snapshot: &dyn Fn() -> Snapshot, tps: u64, budget: &mut Duration) {
    let mut announced = false;
    while !budget.is_zero() {
        let started = Instant::now();
        let before = snapshot();
        std::thread::sleep(Duration::from_millis(500));
        let foreign = snapshot().foreign_percent(&before, tps);
        if foreign < FOREIGN_MAX {
            return;
        }
        if !announced {
            eprintln!("[http bench] waiting for other work ({foreign:.0}% of a core) to stop");
            announced = true;
        }
        *budget = budget.saturating_sub(started.elapsed());
    }
}

/// node-b's adaptive concurrency limit for `api` from its admin API (`/v1/routes`).
async fn service_limit(admin: SocketAddr) -> String {
    let Ok((200, body)) = plexus_agent::ctl::get(admin, "/v1/routes").await else {
        return "unreadable".to_owned();
    };
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let service = &routes["services"][0];
    let baseline = service["baseline_ms"].as_f64().map(|ms| ms * 1000.0);
    format!(
        "limit {}, baseline {} µs, shed {}",
        service["concurrency_limit"],
        baseline.map_or("-".to_owned(), |us| format!("{us:.0}")),
        service["shed_total"]
    )
}

/// Certificates and configs for the HAProxy pair, and the pair itself:
/// (haproxy-a, haproxy-b, version, haproxy-a's frontend), or why not.
fn start_haproxy(
    dir: &std::path::Path,
    ca_dir: &std::path::Path,
    backend: SocketAddr,
) -> Result<(Proc, Proc, String, SocketAddr), String> {
    let version = procs::haproxy_version()?;
    let ca = ca_dir.join("ca.pem");
    let client = dir.join("haproxy-client.pem");
    let server = dir.join("haproxy-server.pem");
    std::fs::write(&client, procs::haproxy_pem(ca_dir, "haproxy-a", false)).unwrap();
    std::fs::write(&server, procs::haproxy_pem(ca_dir, "haproxy-b", true)).unwrap();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    // Diagnostic variant: `HTTP_BENCH_HAPROXY_THREADS=N` sets `nbthread` (HAProxy's default is
    // one thread per CPU).
    let nbthread = std::env::var("HTTP_BENCH_HAPROXY_THREADS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(String::new(), |n| format!("    nbthread {n}\n"));
    let common = format!(
        "global\n    maxconn 4096\n{nbthread}\
                  defaults\n    mode http\n    option http-keep-alive\n    timeout connect 2s\n    \
                  timeout client 60s\n    timeout server 60s\n    timeout http-keep-alive 60s\n"
    );
    let (ca, client, server) = (ca.display(), client.display(), server.display());
    let config_b = format!(
        "{common}frontend fe\n    bind {tls} ssl crt {server} ca-file {ca} verify required\n    \
         default_backend be\n\
         backend be\n    http-reuse always\n    server app {backend}\n"
    );
    let config_a = format!(
        "{common}frontend fe\n    bind {front}\n    default_backend be\n\
         backend be\n    http-reuse always\n    server b {tls} ssl verify required \
         verifyhost haproxy-b sni str(haproxy-b) ca-file {ca} crt {client}\n"
    );
    let b = procs::spawn_haproxy(dir, "haproxy-b", &config_b, tls)?;
    let a = procs::spawn_haproxy(dir, "haproxy-a", &config_a, front)?;
    Ok((a, b, version, front))
}

impl Path {
    fn new(name: &'static str, addr: SocketAddr) -> Self {
        Self {
            name,
            addr,
            conns: (0..CONNECTIONS).map(|_| Conn::new(addr)).collect(),
        }
    }

    /// Up to 5 s of single GETs until one is answered 200.
    fn wait_until_answering(&self) -> Result<(), String> {
        let mut conn = Conn::new(self.addr);
        let mut last = String::new();
        for _ in 0..100 {
            match conn.get() {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("status {status}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} at {} never answered 200: {last}",
            self.name, self.addr
        ))
    }
}
