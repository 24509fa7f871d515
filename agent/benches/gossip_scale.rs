//! Gossip scale benchmark: N chitchat 0.13 nodes in one process, over chitchat's in-memory
//! transport (`ChannelTransport::with_mtu(65_507)`, which encodes and decodes every message as
//! UDP would, counts messages and bytes, and refuses anything larger than the MTU).
//!
//! ```text
//! cargo bench -p plexus-agent --bench gossip_scale              # default plan, < 6 min
//! cargo bench -p plexus-agent --bench gossip_scale -- 100 300   # only these sizes
//! cargo bench -p plexus-agent --bench gossip_scale -- 1000 --modes flat-v0,flat-v1 --budget-secs 1500
//! ```
//!
//! Options: sizes as bare numbers; `--modes a,b` (below); `--intervals 500,1000` (ms);
//! `--zone-size 40`; `--dilate D`; `--budget-secs 330`. Other arguments (`--bench`) are ignored.
//!
//! Every node has a realistic id (`node-0042`), a millisecond-timestamp generation id, its own
//! `10.0.x.y:7946` address, three pseudo-random seeds, the agent's failure-detector settings
//! (phi 8, `max_interval` 4 intervals; sampling window 100 instead of 1 000 to fit 1 000 nodes in
//! one process), and a ~600-byte JSON `summary` (services, ports, certificate fingerprint) in
//! its state. Nodes start spread over one interval, so their rounds are out of phase. For each
//! configuration, size and interval the bench measures:
//!
//! 1. **membership**: time from the first spawn until every node sees every other node as live
//!    (polled every 100 ms, bounded; if the bound passes, how far it got);
//! 2. **propagation**: one node sets `summary` to a new value; time until 99 % and 100 % of all
//!    nodes see it (polled every 20 ms through `with_chitchat`, bounded);
//! 3. **steady state**: `ChannelTransport::statistics()` before and after a window of at least
//!    5 s (and 3 rounds), per node and second. A socket wrapper also records the largest Syn /
//!    SynAck / Ack, sends the MTU refused, and messages sent but never received (the channel
//!    transport drops them when a node's 100-message queue is full).
//!
//! Configurations (`--modes`; default plan: all four at 500 ms, `flat-v1` and `zoned-v1-push`
//! again at 1 s; flat modes at 1 000 nodes only when named, see below):
//! - `flat-v0`, `flat-v1`: one plain chitchat cluster of N nodes, digests uncompressed (V0) or
//!   zstd-compressed (V1, what the agent uses).
//! - `zoned-v1`: zones of about `--zone-size` nodes, each its own chitchat cluster (own
//!   `cluster_id`). The first two nodes of each zone are representatives: they also run a second
//!   chitchat instance in one cross-zone cluster, publish there a summarised zone state
//!   (`node-0042=REV:HASH;` per zone member), and copy every other zone's summary into their own
//!   zone state (`remote:zone-NN`), merged by highest revision; woken by chitchat key-change
//!   listeners, with a 1 s fallback tick. A node of zone B sees a change made in zone A when a
//!   representative of B carries, in B's cluster, A's summary with the new revision and hash.
//!   Membership here means every zone cluster and the cross-zone cluster fully live and every
//!   node seeing a summary of every other zone. Bytes count both clusters, divided by N; the
//!   representatives' extra traffic is shown separately.
//! - `-push` suffix: a node that changes its own state (the changed node, a representative that
//!   republishes) at once sends a Syn to three random live peers (`ChitchatHandle::gossip`).
//!
//! Simulated time: all N nodes share this machine's cores, real nodes each have their own, and
//! a flat cluster's work grows as N² (every message carries an N-entry digest). A CPU-starved
//! simulator slows the rounds down and every timing with them, so each run stretches all chitchat
//! durations by a dilation factor chosen from the expected CPU (see `Sim`) and divides measured
//! times by it; rates are per simulated second. The diagnostics table shows the CPU and timer lag
//! each phase actually had, and a run whose rounds fell behind is flagged CPU-starved. Flat
//! clusters of 1 000 nodes need ×26 (V0) to ×36 (V1) on 2 cores, about 4 to 5 minutes each, so
//! the default plan lists them as skipped; name them with `--modes` to run them.
//!
//! Every wait is bounded; the plan stops starting runs when `--budget-secs` is spent and reports
//! the rest as skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{ChannelTransport, RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
    FailureDetectorConfig, ListenerHandle, ProtocolVersion,
};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const MTU: usize = 65_507;
const KEY: &str = "summary";
const SUMMARY_LEN: usize = 600;
const SEEDS_PER_NODE: usize = 3;
const REPS_PER_ZONE: usize = 2;
const PUSH_FANOUT: usize = 3;
const MEMBERSHIP_POLL: Duration = Duration::from_millis(100);
const PROPAGATION_POLL: Duration = Duration::from_millis(20);
const PROPAGATION_BOUND: Duration = Duration::from_secs(20);
const STEADY_WINDOW: Duration = Duration::from_secs(5);
const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);
const GENERATION_BASE: u64 = 1_764_000_000_000;
const SAMPLING_WINDOW: usize = 100;

// ---------------------------------------------------------------------------------------------
// Transport metering

#[derive(Default)]
struct Meter {
    syn_sent: AtomicU64,
    received: AtomicU64,
    mtu_refused: AtomicU64,
    max_syn: AtomicUsize,
    max_syn_ack: AtomicUsize,
    max_ack: AtomicUsize,
}

impl Meter {
    fn reset_max(&self) {
        self.max_syn.store(0, Ordering::Relaxed);
        self.max_syn_ack.store(0, Ordering::Relaxed);
        self.max_ack.store(0, Ordering::Relaxed);
    }
}

/// `ChannelTransport` plus a per-socket wrapper that records message kinds and sizes.
#[derive(Clone)]
struct Net {
    channel: ChannelTransport,
    meter: Arc<Meter>,
}

impl Net {
    fn new() -> Self {
        Self {
            channel: ChannelTransport::with_mtu(MTU),
            meter: Arc::default(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let stats = self.channel.statistics();
        Snapshot {
            bytes: stats.num_bytes_total,
            messages: stats.num_messages_total,
            syn: self.meter.syn_sent.load(Ordering::Relaxed),
            received: self.meter.received.load(Ordering::Relaxed),
            mtu_refused: self.meter.mtu_refused.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Transport for Net {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.channel.open(listen_addr).await?;
        Ok(Box::new(MeteredSocket {
            inner,
            meter: self.meter.clone(),
        }))
    }
}

struct MeteredSocket {
    inner: Box<dyn Socket>,
    meter: Arc<Meter>,
}

#[async_trait]
impl Socket for MeteredSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let max = match envelope.message {
            ChitchatMessage::Syn { .. } => Some(&self.meter.max_syn),
            ChitchatMessage::SynAck { .. } => Some(&self.meter.max_syn_ack),
            ChitchatMessage::Ack { .. } => Some(&self.meter.max_ack),
            ChitchatMessage::BadCluster => None,
        };
        let is_syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        match self.inner.send(to, envelope).await {
            Ok(outcome) => {
                if let Some(max) = max {
                    max.fetch_max(outcome.num_bytes_sent, Ordering::Relaxed);
                }
                if is_syn {
                    self.meter.syn_sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(outcome)
            }
            Err(error) => {
                self.meter.mtu_refused.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        self.meter.received.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    bytes: u64,
    messages: u64,
    syn: u64,
    received: u64,
    mtu_refused: u64,
}

impl Snapshot {
    fn add(self, other: Snapshot) -> Snapshot {
        Snapshot {
            bytes: self.bytes + other.bytes,
            messages: self.messages + other.messages,
            syn: self.syn + other.syn,
            received: self.received + other.received,
            mtu_refused: self.mtu_refused + other.mtu_refused,
        }
    }

    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            bytes: self.bytes - before.bytes,
            messages: self.messages - before.messages,
            syn: self.syn - before.syn,
            received: self.received - before.received,
            mtu_refused: self.mtu_refused - before.mtu_refused,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn node_name(idx: usize) -> String {
    format!("node-{idx:04}")
}

fn zone_name(zone: usize) -> String {
    format!("zone-{zone:02}")
}

fn node_ip(idx: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (idx / 250) as u8, (idx % 250 + 1) as u8)
}

/// A ~600-byte JSON summary of the kind a Plexus node would publish about itself.
fn summary(idx: usize, zone: usize, rev: u64) -> String {
    let mut rng = Rng((idx as u64) << 20 | rev);
    let services = ["checkout", "payments", "inventory", "search"];
    let mut out = String::with_capacity(SUMMARY_LEN + 64);
    let _ = write!(
        out,
        r#"{{"node":"{}","zone":"{}","rev":{rev},"addr":"{}:7946","spiffe":"spiffe://prod.plexus/node/{}","services":["#,
        node_name(idx),
        zone_name(zone),
        node_ip(idx),
        node_name(idx)
    );
    for (i, name) in services.iter().enumerate() {
        let _ = write!(
            out,
            r#"{}{{"name":"{name}","port":{},"proto":"http","weight":{},"ver":"1.{}.{}"}}"#,
            if i == 0 { "" } else { "," },
            8080 + i,
            rng.below(100) + 1,
            rng.below(50),
            rng.below(10)
        );
    }
    let _ = write!(
        out,
        r#"],"load":{{"cpu":0.{:02},"conns":{}}},"cert_sha256":"{:016x}{:016x}{:016x}{:016x}","pad":""#,
        rng.below(100),
        rng.below(5000),
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    );
    while out.len() < SUMMARY_LEN - 2 {
        let _ = write!(out, "{:x}", rng.next() & 0xf);
    }
    out.push_str("\"}");
    out
}

fn summary_rev(value: &str) -> u64 {
    value
        .split_once("\"rev\":")
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

fn summary_entry(node: &str, value: &str) -> String {
    format!("{node}={}:{:08x};", summary_rev(value), fnv32(value))
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Measures how late a 10 ms tokio sleep wakes up, while it runs.
struct LagProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Histogram<u64>>,
}

impl LagProbe {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)
                .expect("valid histogram bounds");
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let late = start.elapsed().saturating_sub(Duration::from_millis(10));
                let _ = hist.record((late.as_micros() as u64).max(1));
            }
            hist
        });
        Self { stop, task }
    }

    async fn finish(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(hist) if !hist.is_empty() => (
                hist.value_at_quantile(0.99) as f64 / 1000.0,
                hist.max() as f64 / 1000.0,
            ),
            _ => (f64::NAN, f64::NAN),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    Flat,
    Zoned,
}

#[derive(Clone)]
struct Mode {
    name: String,
    topology: Topology,
    protocol: ProtocolVersion,
    push: bool,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        let mut parts = s.split('-');
        let topology = match parts.next()? {
            "flat" => Topology::Flat,
            "zoned" => Topology::Zoned,
            _ => return None,
        };
        let protocol = match parts.next()? {
            "v0" => ProtocolVersion::V0,
            "v1" => ProtocolVersion::V1,
            _ => return None,
        };
        let push = match parts.next() {
            None => false,
            Some("push") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Mode {
            name: s.to_string(),
            topology,
            protocol,
            push,
        })
    }
}

struct Plan {
    sizes: Vec<usize>,
    modes: Vec<Mode>,
    /// Modes were named on the command line: run them whatever dilation they need.
    explicit_modes: bool,
    intervals: Vec<Duration>,
    zone_size: usize,
    budget: Duration,
    /// `--dilate D` forces the time dilation; otherwise it is chosen per run (see `Sim`).
    dilation: Option<u32>,
    /// Default plan: intervals after the first run only `SECONDARY_MODES`.
    secondary_modes_only: bool,
}

/// Configurations the default plan also runs at its second interval (1 s).
const SECONDARY_MODES: [&str; 2] = ["flat-v1", "zoned-v1-push"];

fn parse_list<T>(value: Option<&String>, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    value
        .map(|v| v.split(',').filter_map(|s| parse(s.trim())).collect())
        .unwrap_or_default()
}

fn parse_plan(args: &[String]) -> Plan {
    let mut plan = Plan {
        sizes: Vec::new(),
        modes: Vec::new(),
        explicit_modes: false,
        intervals: Vec::new(),
        zone_size: 40,
        budget: Duration::from_secs(330),
        dilation: None,
        secondary_modes_only: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "--modes" => {
                plan.modes = parse_list(args.get(i + 1), Mode::parse);
                plan.explicit_modes = !plan.modes.is_empty();
                i += 1;
            }
            "--dilate" => {
                plan.dilation = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .filter(|d| *d >= 1);
                i += 1;
            }
            "--intervals" => {
                plan.intervals = parse_list(args.get(i + 1), |s| {
                    s.parse().ok().map(Duration::from_millis)
                });
                i += 1;
            }
            "--zone-size" => {
                plan.zone_size = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(40)
                    .max(4);
                i += 1;
            }
            "--budget-secs" => {
                if let Some(secs) = args.get(i + 1).and_then(|s| s.parse().ok()) {
                    plan.budget = Duration::from_secs(secs);
                }
                i += 1;
            }
            _ => {
                if let Ok(n) = arg.parse::<usize>() {
                    if n >= 4 {
                        plan.sizes.push(n);
                    }
                }
                // Anything else (`--bench`, filters cargo passes) is ignored.
            }
        }
        i += 1;
    }
    if plan.sizes.is_empty() {
        plan.sizes = vec![100, 300, 1000];
    }
    if plan.modes.is_empty() {
        plan.modes = ["flat-v0", "flat-v1", "zoned-v1", "zoned-v1-push"]
            .iter()
            .filter_map(|s| Mode::parse(s))
            .collect();
    }
    if plan.intervals.is_empty() {
        plan.intervals = vec![Duration::from_millis(500), Duration::from_secs(1)];
        plan.secondary_modes_only = !plan.explicit_modes;
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Cluster construction

struct Node {
    zone: usize,
    id: ChitchatId,
    handle: Arc<ChitchatHandle>,
}

struct Rep {
    global: Arc<ChitchatHandle>,
    relay: JoinHandle<()>,
    _listeners: Vec<ListenerHandle>,
}

struct Cluster {
    nodes: Vec<Node>,
    reps: Vec<Rep>,
    /// For each zone, the chitchat ids (in the zone cluster) of its representatives.
    zone_reps: Vec<Vec<ChitchatId>>,
    zone_members: Vec<Vec<usize>>,
    zone_net: Net,
    global_net: Option<Net>,
}

fn chitchat_config(
    id: ChitchatId,
    cluster_id: String,
    sim: &Sim,
    seeds: Vec<String>,
    protocol: ProtocolVersion,
) -> ChitchatConfig {
    let interval = sim.real(sim.interval);
    ChitchatConfig {
        listen_addr: id.gossip_advertise_addr,
        chitchat_id: id,
        cluster_id,
        gossip_interval: interval,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 8.0,
            initial_interval: interval,
            // The agent uses 1 000, which preallocates 8 KB per observed peer: 8 GB for 1 000
            // nodes observing each other in one process. 100 recent intervals is plenty for
            // phi at a fixed gossip interval.
            sampling_window_size: SAMPLING_WINDOW,
            // As the agent sets it (`gossip/mod.rs`).
            max_interval: interval * 4,
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: protocol,
    }
}

fn pick_seeds(rng: &mut Rng, me: usize, members: &[usize], count: usize) -> Vec<usize> {
    let mut seeds = BTreeSet::new();
    let others = members.len().saturating_sub(1);
    let mut attempts = 0;
    while seeds.len() < count.min(others) && attempts < 1000 {
        let candidate = members[rng.below(members.len())];
        if candidate != me {
            seeds.insert(candidate);
        }
        attempts += 1;
    }
    seeds.into_iter().collect()
}

async fn build_cluster(
    n: usize,
    mode: &Mode,
    sim: &Sim,
    zone_size: usize,
) -> anyhow::Result<Cluster> {
    let interval = sim.real(sim.interval);
    let zones = match mode.topology {
        Topology::Flat => 1,
        Topology::Zoned => n.div_ceil(zone_size).max(1),
    };
    let zone_members: Vec<Vec<usize>> = (0..zones)
        .map(|z| (z * n / zones..(z + 1) * n / zones).collect())
        .collect();
    let zone_of: Vec<usize> = {
        let mut v = vec![0; n];
        for (z, members) in zone_members.iter().enumerate() {
            for &m in members {
                v[m] = z;
            }
        }
        v
    };
    let mut rng = Rng(0x5EED ^ n as u64);
    let zone_net = Net::new();
    let mut nodes = Vec::with_capacity(n);
    // Spawn the nodes spread over one gossip interval, so their rounds are out of phase as on
    // real machines rather than all ticking in the same millisecond.
    let spawn_start = Instant::now();
    for (idx, &zone) in zone_of.iter().enumerate().take(n) {
        tokio::time::sleep_until(spawn_start + interval.mul_f64(idx as f64 / n as f64)).await;
        let addr = SocketAddr::new(node_ip(idx).into(), 7946);
        let id = ChitchatId::new(node_name(idx), GENERATION_BASE + idx as u64, addr);
        let seeds = pick_seeds(&mut rng, idx, &zone_members[zone], SEEDS_PER_NODE)
            .into_iter()
            .map(|s| format!("{}:7946", node_ip(s)))
            .collect();
        let cluster_id = match mode.topology {
            Topology::Flat => "plexus-prod".to_string(),
            Topology::Zoned => format!("plexus-prod-{}", zone_name(zone)),
        };
        let config = chitchat_config(id.clone(), cluster_id, sim, seeds, mode.protocol);
        let handle = spawn_chitchat(
            config,
            vec![(KEY.to_string(), summary(idx, zone, 1))],
            &zone_net,
        )
        .await?;
        nodes.push(Node {
            zone,
            id,
            handle: Arc::new(handle),
        });
    }
    let zone_reps: Vec<Vec<ChitchatId>> = zone_members
        .iter()
        .map(|members| {
            members
                .iter()
                .take(REPS_PER_ZONE)
                .map(|&m| nodes[m].id.clone())
                .collect()
        })
        .collect();

    let mut reps = Vec::new();
    let mut global_net = None;
    if mode.topology == Topology::Zoned {
        let net = Net::new();
        let rep_idxs: Vec<usize> = zone_members
            .iter()
            .flat_map(|members| members.iter().take(REPS_PER_ZONE).copied())
            .collect();
        let spawn_start = Instant::now();
        for (k, &idx) in rep_idxs.iter().enumerate() {
            tokio::time::sleep_until(
                spawn_start + interval.mul_f64(k as f64 / rep_idxs.len() as f64),
            )
            .await;
            let zone = zone_of[idx];
            let addr = SocketAddr::new(node_ip(idx).into(), 7947);
            let id = ChitchatId::new(node_name(idx), GENERATION_BASE + idx as u64, addr);
            let seeds = pick_seeds(&mut rng, idx, &rep_idxs, SEEDS_PER_NODE)
                .into_iter()
                .map(|s| format!("{}:7947", node_ip(s)))
                .collect();
            let config = chitchat_config(
                id,
                "plexus-prod-global".to_string(),
                sim,
                seeds,
                mode.protocol,
            );
            let global = Arc::new(spawn_chitchat(config, Vec::new(), &net).await?);
            let (tx, rx) = mpsc::unbounded_channel();
            let mut listeners = Vec::new();
            let zone_tx = tx.clone();
            listeners.push(
                nodes[idx]
                    .handle
                    .with_chitchat(move |c| {
                        let tx = zone_tx.clone();
                        c.subscribe_event(KEY, move |_| {
                            let _ = tx.send(());
                        })
                    })
                    .await,
            );
            let global_tx = tx.clone();
            listeners.push(
                global
                    .with_chitchat(move |c| {
                        let tx = global_tx.clone();
                        c.subscribe_event("zone:", move |_| {
                            let _ = tx.send(());
                        })
                    })
                    .await,
            );
            let relay = tokio::spawn(relay_loop(
                nodes[idx].handle.clone(),
                global.clone(),
                zone,
                rx,
                mode.push,
                sim.real(Duration::from_secs(1)),
            ));
            let _ = tx.send(());
            reps.push(Rep {
                global,
                relay,
                _listeners: listeners,
            });
        }
        global_net = Some(net);
    }
    Ok(Cluster {
        nodes,
        reps,
        zone_reps,
        zone_members,
        zone_net,
        global_net,
    })
}

/// Sends a Syn to `PUSH_FANOUT` random live peers now (`ChitchatHandle::gossip`): they answer
/// with a SynAck and receive this node's news in the Ack, without waiting for the next round.
async fn push(handle: &ChitchatHandle, rng: &mut Rng) {
    let peers: Vec<SocketAddr> = handle
        .with_chitchat(|c| {
            let me = c.self_chitchat_id().clone();
            c.live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        })
        .await;
    let mut chosen = BTreeSet::new();
    for _ in 0..PUSH_FANOUT * 4 {
        if chosen.len() >= PUSH_FANOUT.min(peers.len()) {
            break;
        }
        chosen.insert(peers[rng.below(peers.len())]);
    }
    for addr in chosen {
        let _ = handle.gossip(addr);
    }
}

/// Builds `remote:zone-NN` values from every other zone's published summary, keeping the
/// highest revision per node when the zone's representatives disagree.
fn merge_remote(c: &chitchat::Chitchat, own_key: &str) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<&str, BTreeMap<&str, (u64, &str)>> = BTreeMap::new();
    for state in c.node_states().values() {
        for (key, value) in state.key_values() {
            if key == own_key {
                continue;
            }
            let Some(zone) = key.strip_prefix("zone:") else {
                continue;
            };
            let entries = merged.entry(zone).or_default();
            for entry in value.split(';').filter(|e| !e.is_empty()) {
                let Some((node, rest)) = entry.split_once('=') else {
                    continue;
                };
                let rev: u64 = rest
                    .split_once(':')
                    .and_then(|(r, _)| r.parse().ok())
                    .unwrap_or(0);
                let slot = entries.entry(node).or_insert((0, ""));
                if rev >= slot.0 {
                    *slot = (rev, rest);
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(zone, entries)| {
            let mut out = String::new();
            for (node, (_, rest)) in entries {
                let _ = write!(out, "{node}={rest};");
            }
            (format!("remote:{zone}"), out)
        })
        .collect()
}

/// Representative relay: this zone's state -> a summary in the cross-zone cluster; the other
/// zones' summaries -> this representative's state in its zone cluster. Woken by key-change
/// listeners, with a 1 s fallback tick.
async fn relay_loop(
    zone_handle: Arc<ChitchatHandle>,
    global: Arc<ChitchatHandle>,
    zone: usize,
    mut events: mpsc::UnboundedReceiver<()>,
    push_enabled: bool,
    fallback_tick: Duration,
) {
    let own_key = format!("zone:{}", zone_name(zone));
    let mut tick = tokio::time::interval(fallback_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = Rng(0xAB ^ zone as u64);
    loop {
        tokio::select! {
            event = events.recv() => if event.is_none() { return },
            _ = tick.tick() => {}
        }
        while events.try_recv().is_ok() {}

        let zone_summary = zone_handle
            .with_chitchat(|c| {
                let mut out = String::new();
                for (id, state) in c.node_states() {
                    if let Some(value) = state.get(KEY) {
                        out.push_str(&summary_entry(&id.node_id, value));
                    }
                }
                out
            })
            .await;
        let published = global
            .with_chitchat(|c| {
                let state = c.self_node_state();
                if state.get(&own_key) == Some(zone_summary.as_str()) {
                    return false;
                }
                state.set(&own_key, &zone_summary);
                true
            })
            .await;
        let remote = global.with_chitchat(|c| merge_remote(c, &own_key)).await;
        let relayed = zone_handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let mut changed = false;
                for (key, value) in &remote {
                    if state.get(key) != Some(value.as_str()) {
                        state.set(key, value);
                        changed = true;
                    }
                }
                changed
            })
            .await;
        if push_enabled && published {
            push(&global, &mut rng).await;
        }
        if push_enabled && relayed {
            push(&zone_handle, &mut rng).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

impl Cluster {
    fn zones(&self) -> usize {
        self.zone_members.len()
    }

    fn snapshot(&self) -> Snapshot {
        let zone = self.zone_net.snapshot();
        match &self.global_net {
            Some(global) => zone.add(global.snapshot()),
            None => zone,
        }
    }

    fn meters(&self) -> Vec<&Meter> {
        let mut meters = vec![&*self.zone_net.meter];
        if let Some(global) = &self.global_net {
            meters.push(&*global.meter);
        }
        meters
    }

    /// Does `node` see every member of its cluster as live and (zoned) a summary of every
    /// other zone through its zone's representatives?
    async fn node_complete(&self, node: &Node) -> bool {
        let zone_size = self.zone_members[node.zone].len();
        let reps = &self.zone_reps[node.zone];
        let zones = self.zones();
        node.handle
            .with_chitchat(|c| {
                if c.live_nodes().count() != zone_size {
                    return false;
                }
                if zones == 1 {
                    return true;
                }
                let mut seen = BTreeSet::new();
                for rep in reps {
                    if let Some(state) = c.node_state(rep) {
                        for (key, _) in state.key_values() {
                            if let Some(zone) = key.strip_prefix("remote:") {
                                seen.insert(zone);
                            }
                        }
                    }
                }
                seen.len() == zones - 1
            })
            .await
    }

    /// Number of complete units (nodes, plus representatives in the cross-zone cluster), and
    /// the total. A pass still running at `deadline` stops there (the count is then a lower
    /// bound).
    async fn membership(&self, deadline: Instant) -> (usize, usize) {
        let reps = self.reps.len();
        let total = self.nodes.len() + reps;
        let mut complete = 0;
        for node in &self.nodes {
            if Instant::now() >= deadline {
                return (complete, total);
            }
            if self.node_complete(node).await {
                complete += 1;
            }
        }
        for rep in &self.reps {
            if rep.global.with_chitchat(|c| c.live_nodes().count()).await == reps {
                complete += 1;
            }
        }
        (complete, total)
    }

    async fn shutdown(self) {
        for rep in &self.reps {
            rep.relay.abort();
        }
        let handles: Vec<Arc<ChitchatHandle>> = self
            .nodes
            .iter()
            .map(|n| n.handle.clone())
            .chain(self.reps.iter().map(|r| r.global.clone()))
            .collect();
        for handle in &handles {
            let _ = handle.initiate_shutdown();
        }
        let wait_all = async {
            for handle in &handles {
                let _ = handle.termination_watcher().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_BOUND, wait_all)
            .await
            .is_err()
        {
            for handle in &handles {
                handle.abort();
            }
        }
    }
}

struct Change {
    origin: usize,
    origin_zone: usize,
    value: String,
    remote_key: String,
    needle: String,
}

async fn sees_change(cluster: &Cluster, node: &Node, change: &Change) -> bool {
    let origin_id = &cluster.nodes[change.origin].id;
    if node.zone == change.origin_zone {
        return node
            .handle
            .with_chitchat(|c| {
                c.node_state(origin_id).and_then(|s| s.get(KEY)) == Some(change.value.as_str())
            })
            .await;
    }
    let reps = &cluster.zone_reps[node.zone];
    node.handle
        .with_chitchat(|c| {
            reps.iter().any(|rep| {
                c.node_state(rep)
                    .and_then(|s| s.get(&change.remote_key))
                    .is_some_and(|v| v.contains(&change.needle))
            })
        })
        .await
}

/// Simulated time. All N nodes share this machine's cores, while real nodes each have their
/// own, and chitchat's work grows with N (flat: every message carries an N-entry digest, so the
/// whole cluster costs O(N²) per round). To keep the simulator from being CPU-starved (which
/// would slow the gossip rounds down and make every timing meaningless), every chitchat duration
/// (gossip interval, failure-detector intervals, relay tick) is stretched `dilation` times, and
/// every measured duration is divided by it; rates are per simulated second. Protocol timing is
/// counted in rounds, so this is exact as long as message processing stays small against a
/// round: the diagnostics table shows simulator CPU and timer lag to check that it did.
#[derive(Clone, Copy)]
struct Sim {
    interval: Duration,
    dilation: u32,
}

impl Sim {
    fn real(&self, nominal: Duration) -> Duration {
        nominal * self.dilation
    }

    fn nominal(&self, real: Duration) -> Duration {
        real / self.dilation
    }
}

/// Simulator CPU (cores) that a configuration needs without dilation, fitted to runs on the
/// project's 2-vCPU VM at 500 ms: flat clusters cost about 2.5e-5 core × N² with V1 digests
/// (zstd) and 1.8e-5 × N² with V0; zoned ones about 2e-3 core × N. Only used to pick the
/// dilation; what was actually used is measured and printed.
fn estimated_cores(n: usize, mode: &Mode, interval: Duration) -> f64 {
    let per_round = match (mode.topology, mode.protocol) {
        (Topology::Flat, ProtocolVersion::V0) => 1.8e-5 * (n * n) as f64,
        (Topology::Flat, ProtocolVersion::V1) => 2.5e-5 * (n * n) as f64,
        (Topology::Zoned, _) => 2e-3 * n as f64,
    };
    per_round * 0.5 / interval.as_secs_f64()
}

/// Dilation that keeps the simulator at about a third of the machine's cores.
fn auto_dilation(n: usize, mode: &Mode, interval: Duration) -> u32 {
    let budget = 0.35 * cores() as f64;
    (estimated_cores(n, mode, interval) / budget)
        .ceil()
        .max(1.0) as u32
}

/// Above this, the default plan skips a configuration (it can still be named with `--modes`).
const MAX_AUTO_DILATION: u32 = 8;

struct PhaseStats {
    cpu_pct: f64,
    lag_p99_ms: f64,
}

/// Process CPU and tokio timer lag over one phase of a run.
struct PhaseMeter {
    cpu: f64,
    start: Instant,
    lag: LagProbe,
}

impl PhaseMeter {
    fn start() -> Self {
        Self {
            cpu: cpu_seconds(),
            start: Instant::now(),
            lag: LagProbe::start(),
        }
    }

    async fn finish(self, sim: &Sim) -> (PhaseStats, f64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let cpu = cpu_seconds() - self.cpu;
        let (p99, _max) = self.lag.finish().await;
        (
            PhaseStats {
                cpu_pct: 100.0 * cpu / secs,
                lag_p99_ms: p99 / sim.dilation as f64,
            },
            cpu,
        )
    }
}

enum Membership {
    Done(Duration),
    NotDone {
        after: Duration,
        complete: usize,
        total: usize,
    },
}

struct RunResult {
    n: usize,
    zones: usize,
    sim: Sim,
    membership: Membership,
    t99: Option<Duration>,
    t100: Option<Duration>,
    prop_bound: Duration,
    seen_final: usize,
    bytes_node_s: f64,
    msgs_node_s: f64,
    syn_node_s: f64,
    nominal_syn_node_s: f64,
    rep_extra_bytes_s: Option<f64>,
    steady_max_syn: usize,
    steady_max_syn_ack: usize,
    steady_max_ack: usize,
    run_max_msg: usize,
    mtu_refused: u64,
    undelivered_pct: f64,
    phases: [PhaseStats; 3],
    cpu_ms_per_node_s: f64,
    wall: Duration,
}

impl RunResult {
    /// Did the simulator fall behind (rounds slower than nominal, or timers late by more than a
    /// fifth of a round)?
    fn starved(&self) -> bool {
        let round_ms = self.sim.interval.as_secs_f64() * 1000.0;
        self.syn_node_s < 0.9 * self.nominal_syn_node_s
            || self.phases.iter().any(|p| p.lag_p99_ms > 0.2 * round_ms)
    }
}

enum Outcome {
    Done(Box<RunResult>),
    Skipped(String),
    Failed(String),
}

struct Run {
    mode: Mode,
    n: usize,
    interval: Duration,
    outcome: Outcome,
}

async fn run_one(
    n: usize,
    mode: &Mode,
    sim: Sim,
    zone_size: usize,
    remaining: Duration,
) -> anyhow::Result<RunResult> {
    let wall_start = Instant::now();
    let deadline = wall_start + remaining;
    let steady_real = STEADY_WINDOW.max(sim.real(sim.interval) * 3);
    let membership_meter = PhaseMeter::start();
    let cluster = build_cluster(n, mode, &sim, zone_size).await?;
    let zones = cluster.zones();

    // 1. Membership, from the first spawn (nodes start spread over one interval).
    let reserve =
        steady_real + sim.real(sim.interval * 2 + Duration::from_secs(3)) + SHUTDOWN_BOUND;
    let membership_deadline = (wall_start + sim.real(Duration::from_secs(20 + n as u64 / 40)))
        .min(deadline.checked_sub(reserve).unwrap_or(wall_start));
    let membership = loop {
        let (complete, total) = cluster.membership(membership_deadline).await;
        let elapsed = sim.nominal(wall_start.elapsed());
        if complete == total {
            break Membership::Done(elapsed);
        }
        if Instant::now() >= membership_deadline {
            break Membership::NotDone {
                after: elapsed,
                complete,
                total,
            };
        }
        tokio::time::sleep(MEMBERSHIP_POLL).await;
    };
    let (membership_phase, _) = membership_meter.finish(&sim).await;
    eprintln!(
        "  membership: {}",
        match &membership {
            Membership::Done(d) => format!("{:.2} s", d.as_secs_f64()),
            Membership::NotDone {
                complete, total, ..
            } => format!("not complete ({complete}/{total})"),
        }
    );
    // Let in-flight state exchange settle for two rounds before the change.
    tokio::time::sleep(sim.real(sim.interval * 2)).await;

    // 2. Propagation of one changed value.
    let change_meter = PhaseMeter::start();
    let origin = match mode.topology {
        Topology::Flat => n / 2,
        Topology::Zoned => {
            let members = &cluster.zone_members[0];
            members[members.len() / 2]
        }
    };
    let origin_zone = cluster.nodes[origin].zone;
    let value = summary(origin, origin_zone, 2);
    let change = Change {
        origin,
        origin_zone,
        needle: summary_entry(&node_name(origin), &value),
        remote_key: format!("remote:{}", zone_name(origin_zone)),
        value,
    };
    let prop_deadline = (Instant::now() + sim.real(PROPAGATION_BOUND)).min(
        deadline
            .checked_sub(steady_real + SHUTDOWN_BOUND)
            .unwrap_or(wall_start),
    );
    let prop_bound = sim.nominal(prop_deadline.saturating_duration_since(Instant::now()));
    let need99 = (n * 99).div_ceil(100);
    let origin_handle = cluster.nodes[origin].handle.clone();
    let t0 = Instant::now();
    let new_value = change.value.clone();
    origin_handle
        .with_chitchat(|c| c.self_node_state().set(KEY, &new_value))
        .await;
    if mode.push {
        push(&origin_handle, &mut Rng(7)).await;
    }
    let mut unseen: Vec<usize> = (0..n).filter(|&i| i != origin).collect();
    let (mut t99, mut t100) = (None, None);
    loop {
        let mut still = Vec::with_capacity(unseen.len());
        for &i in &unseen {
            // A pass still running at the bound stops checking (those count as unseen).
            if Instant::now() >= prop_deadline
                || !sees_change(&cluster, &cluster.nodes[i], &change).await
            {
                still.push(i);
            }
        }
        unseen = still;
        let elapsed = sim.nominal(t0.elapsed());
        if t99.is_none() && n - unseen.len() >= need99 {
            t99 = Some(elapsed);
        }
        if unseen.is_empty() {
            t100 = Some(elapsed);
            break;
        }
        if Instant::now() >= prop_deadline {
            break;
        }
        tokio::time::sleep(PROPAGATION_POLL).await;
    }
    let (change_phase, _) = change_meter.finish(&sim).await;
    let seen_final = n - unseen.len();
    eprintln!(
        "  change seen by 99%: {}, 100%: {} ({seen_final}/{n})",
        fmt_opt(t99),
        fmt_opt(t100)
    );

    // 3. Steady state.
    let run_max_msg = cluster
        .meters()
        .iter()
        .map(|m| {
            m.max_syn
                .load(Ordering::Relaxed)
                .max(m.max_syn_ack.load(Ordering::Relaxed))
                .max(m.max_ack.load(Ordering::Relaxed))
        })
        .max()
        .unwrap_or(0);
    for meter in cluster.meters() {
        meter.reset_max();
    }
    let steady_meter = PhaseMeter::start();
    let before = cluster.snapshot();
    let global_before = cluster.global_net.as_ref().map(Net::snapshot);
    let window_start = Instant::now();
    tokio::time::sleep(steady_real).await;
    let real_secs = window_start.elapsed().as_secs_f64();
    let delta = cluster.snapshot().since(before);
    let global_delta = match (&cluster.global_net, global_before) {
        (Some(net), Some(before)) => Some(net.snapshot().since(before)),
        _ => None,
    };
    let (steady_phase, steady_cpu) = steady_meter.finish(&sim).await;
    let secs = real_secs / sim.dilation as f64;
    let meters = cluster.meters();
    let steady_max = |f: fn(&Meter) -> &AtomicUsize| {
        meters
            .iter()
            .map(|m| f(m).load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    };
    let reps = cluster.reps.len();
    let result = RunResult {
        n,
        zones,
        sim,
        membership,
        t99,
        t100,
        prop_bound,
        seen_final,
        bytes_node_s: delta.bytes as f64 / n as f64 / secs,
        msgs_node_s: delta.messages as f64 / n as f64 / secs,
        syn_node_s: delta.syn as f64 / n as f64 / secs,
        nominal_syn_node_s: 3.0 * (n + reps) as f64 / n as f64 / sim.interval.as_secs_f64(),
        rep_extra_bytes_s: global_delta.map(|g| g.bytes as f64 / reps.max(1) as f64 / secs),
        steady_max_syn: steady_max(|m| &m.max_syn),
        steady_max_syn_ack: steady_max(|m| &m.max_syn_ack),
        steady_max_ack: steady_max(|m| &m.max_ack),
        run_max_msg: run_max_msg.max(steady_max(|m| &m.max_syn_ack)),
        mtu_refused: cluster.snapshot().mtu_refused,
        undelivered_pct: if delta.messages == 0 {
            0.0
        } else {
            100.0 * delta.messages.saturating_sub(delta.received) as f64 / delta.messages as f64
        },
        phases: [membership_phase, change_phase, steady_phase],
        cpu_ms_per_node_s: 1000.0 * steady_cpu / n as f64 / secs,
        wall: Duration::ZERO,
    };
    cluster.shutdown().await;
    Ok(RunResult {
        wall: wall_start.elapsed(),
        ..result
    })
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn fmt_interval(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1000.0 {
        format!("{:.1} KB", b / 1000.0)
    } else {
        format!("{b:.0} B")
    }
}

fn config_label(run: &Run) -> String {
    match &run.outcome {
        Outcome::Done(r) if r.zones > 1 => format!("{} ({} zones)", run.mode.name, r.zones),
        _ => run.mode.name.clone(),
    }
}

fn print_results(runs: &[Run]) {
    println!();
    println!("| config | nodes | interval | time to full membership | time to 99% | time to 100% | bytes/node/s | largest msg, steady: Syn / SynAck / Ack (B) | largest msg, whole run (B) | MTU-refused sends | time dilation |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let head = format!(
            "| {} | {} | {} |",
            config_label(run),
            run.n,
            fmt_interval(run.interval)
        );
        let r = match &run.outcome {
            Outcome::Done(r) => r,
            Outcome::Skipped(why) => {
                println!("{head} skipped: {why} | | | | | | | |");
                continue;
            }
            Outcome::Failed(err) => {
                println!("{head} failed: {err} | | | | | | | |");
                continue;
            }
        };
        let membership = match &r.membership {
            Membership::Done(d) => format!("{:.2} s", d.as_secs_f64()),
            Membership::NotDone {
                after,
                complete,
                total,
            } => format!(
                "**not within {:.0} s** ({complete}/{total} complete)",
                after.as_secs_f64()
            ),
        };
        let seen = |t: Option<Duration>| match t {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => format!(
                "**not within {:.0} s** ({}/{} saw it)",
                r.prop_bound.as_secs_f64(),
                r.seen_final,
                r.n
            ),
        };
        let mut bytes = fmt_bytes(r.bytes_node_s);
        if r.syn_node_s < 0.9 * r.nominal_syn_node_s && r.syn_node_s > 0.0 {
            let _ = write!(
                bytes,
                " ({} at the nominal Syn rate)",
                fmt_bytes(r.bytes_node_s * r.nominal_syn_node_s / r.syn_node_s)
            );
        }
        println!(
            "{head} {membership} | {} | {} | {bytes} | {} / {} / {} | {} | {} | ×{}{} |",
            seen(r.t99),
            seen(r.t100),
            r.steady_max_syn,
            r.steady_max_syn_ack,
            r.steady_max_ack,
            r.run_max_msg,
            r.mtu_refused,
            r.sim.dilation,
            if r.starved() { " **CPU-starved**" } else { "" },
        );
    }
}

fn print_diagnostics(runs: &[Run]) {
    println!();
    println!("Diagnostics. Times and rates are per simulated second; CPU is this process's, of {}% ({} cores).", 100 * cores(), cores());
    println!();
    println!("| config | nodes | interval | Syn/node/s (nominal) | msgs/node/s | representative extra bytes/s | sent, not delivered | CPU %: membership / change / steady | timer lag p99 (ms): membership / change / steady | simulator CPU per node (ms/s) | Syn bytes per member (flat) | wall (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let Outcome::Done(r) = &run.outcome else {
            continue;
        };
        println!(
            "| {} | {} | {} | {:.2} ({:.2}) | {:.1} | {} | {:.1}% | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} / {:.1} | {:.2} | {} | {:.0} |",
            config_label(run),
            r.n,
            fmt_interval(run.interval),
            r.syn_node_s,
            r.nominal_syn_node_s,
            r.msgs_node_s,
            r.rep_extra_bytes_s.map_or_else(|| "-".to_string(), fmt_bytes),
            r.undelivered_pct,
            r.phases[0].cpu_pct,
            r.phases[1].cpu_pct,
            r.phases[2].cpu_pct,
            r.phases[0].lag_p99_ms,
            r.phases[1].lag_p99_ms,
            r.phases[2].lag_p99_ms,
            r.cpu_ms_per_node_s,
            if r.zones > 1 {
                "-".to_string()
            } else {
                format!("{:.1}", r.steady_max_syn as f64 / r.n as f64)
            },
            r.wall.as_secs_f64(),
        );
    }
    // Where a flat V0/V1 Syn (one full digest) would stop fitting in one datagram.
    for protocol in ["v0", "v1"] {
        let largest = runs
            .iter()
            .filter_map(|run| match &run.outcome {
                Outcome::Done(r)
                    if run.mode.topology == Topology::Flat
                        && run.mode.name.contains(protocol)
                        && r.steady_max_syn > 0 =>
                {
                    Some(r)
                }
                _ => None,
            })
            .max_by_key(|r| r.n);
        if let Some(r) = largest {
            let per_member = r.steady_max_syn as f64 / r.n as f64;
            println!();
            println!(
                "flat {protocol}: the largest Syn at {} nodes was {} B ({per_member:.1} B per member); at that rate one digest exceeds the {MTU}-byte MTU past about {:.0} members (linear extrapolation).",
                r.n,
                r.steady_max_syn,
                MTU as f64 / per_member
            );
        }
    }
}

fn print_verdicts(runs: &[Run]) {
    println!();
    println!("| target | config | interval | measured | verdict |");
    println!("|---|---|---|---|---|");
    let mut done = BTreeSet::new();
    for run in runs {
        if !done.insert((run.mode.name.clone(), run.interval)) {
            continue;
        }
        let find = |n: usize| {
            runs.iter().find_map(|r| match &r.outcome {
                Outcome::Done(res)
                    if r.n == n && r.mode.name == run.mode.name && r.interval == run.interval =>
                {
                    Some(res)
                }
                _ => None,
            })
        };
        let interval = fmt_interval(run.interval);
        let caveat = |r: &RunResult| {
            if r.starved() {
                " (CPU-starved run)"
            } else {
                ""
            }
        };
        let line = |target: &str, measured: String, verdict: String| {
            println!(
                "| {target} | {} | {interval} | {measured} | {verdict} |",
                run.mode.name
            );
        };
        let target = "99% of 1000 nodes see a change within 3 s";
        match find(1000) {
            Some(r) => line(
                target,
                fmt_opt(r.t99),
                format!(
                    "{}{}",
                    if r.t99.is_some_and(|t| t <= Duration::from_secs(3)) {
                        "met"
                    } else {
                        "**missed**"
                    },
                    caveat(r)
                ),
            ),
            None => line(target, "not run".into(), "-".into()),
        }
        let target = "under 10 KB/s per node at 100 nodes";
        match find(100) {
            Some(r) => line(
                target,
                fmt_bytes(r.bytes_node_s),
                format!(
                    "{}{}",
                    if r.bytes_node_s < 10_000.0 {
                        "met"
                    } else {
                        "**missed**"
                    },
                    caveat(r)
                ),
            ),
            None => line(target, "not run".into(), "-".into()),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn run_plan(plan: Plan) -> Vec<Run> {
    let start = Instant::now();
    let mut runs = Vec::new();
    for (k, &interval) in plan.intervals.iter().enumerate() {
        for &n in &plan.sizes {
            for mode in &plan.modes {
                if k > 0
                    && plan.secondary_modes_only
                    && !SECONDARY_MODES.contains(&mode.name.as_str())
                {
                    continue;
                }
                let auto = auto_dilation(n, mode, interval);
                let sim = Sim {
                    interval,
                    dilation: plan.dilation.unwrap_or(auto),
                };
                let remaining = plan.budget.saturating_sub(start.elapsed());
                let needed = sim.real(Duration::from_secs(12)) + Duration::from_secs(10);
                let outcome = if !plan.explicit_modes
                    && plan.dilation.is_none()
                    && auto > MAX_AUTO_DILATION
                {
                    Outcome::Skipped(format!(
                        "not in the default plan: needs ~{:.0} simulator cores, i.e. time dilation ×{auto}; name it with --modes",
                        estimated_cores(n, mode, interval)
                    ))
                } else if remaining < needed {
                    Outcome::Skipped(format!(
                        "time budget ({:.0} s left, needs ≥ {:.0} s at ×{}; see --budget-secs)",
                        remaining.as_secs_f64(),
                        needed.as_secs_f64(),
                        sim.dilation
                    ))
                } else {
                    eprintln!(
                        "[{:>5.1} s] {} nodes, {}, interval {}, dilation ×{}",
                        start.elapsed().as_secs_f64(),
                        n,
                        mode.name,
                        fmt_interval(interval),
                        sim.dilation
                    );
                    match run_one(n, mode, sim, plan.zone_size, remaining).await {
                        Ok(result) => Outcome::Done(Box::new(result)),
                        Err(error) => Outcome::Failed(format!("{error:#}")),
                    }
                };
                runs.push(Run {
                    mode: mode.clone(),
                    n,
                    interval,
                    outcome,
                });
            }
        }
    }
    eprintln!("[{:>5.1} s] done", start.elapsed().as_secs_f64());
    runs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let plan = parse_plan(&args);
    println!(
        "gossip_scale: chitchat 0.13, ChannelTransport (MTU {MTU}), {} cores, tokio multi-thread runtime ({} workers), {}-byte summary per node, phi threshold 8, zone size {} in zoned modes",
        cores(),
        cores(),
        summary(42, 1, 1).len(),
        plan.zone_size
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs = runtime.block_on(run_plan(plan));
    print_results(&runs);
    print_diagnostics(&runs);
    print_verdicts(&runs);
    runtime.shutdown_timeout(Duration::from_secs(5));
}
