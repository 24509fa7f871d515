//! The simulated cluster: node setup, zoned topology with representatives, cluster-wide queries.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ListenerHandle, ProtocolVersion,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net::{Meter, Net, Snapshot};
use crate::plan::{Mode, Topology};
use crate::relay::relay_loop;
use crate::sim::Sim;
use crate::summary::{node_ip, node_name, summary, zone_name, Rng};

pub(crate) const KEY: &str = "summary";
const SEEDS_PER_NODE: usize = 3;
const REPS_PER_ZONE: usize = 2;
pub(crate) const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);
const GENERATION_BASE: u64 = 1_764_000_000_000;
const SAMPLING_WINDOW: usize = 100;

pub(crate) struct Node {
    pub(crate) zone: usize,
    pub(crate) id: ChitchatId,
    pub(crate) handle: Arc<ChitchatHandle>,
}

pub(crate) struct Rep {
    global: Arc<ChitchatHandle>,
    relay: JoinHandle<()>,
    _listeners: Vec<ListenerHandle>,
}

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) reps: Vec<Rep>,
    /// For each zone, the chitchat ids (in the zone cluster) of its representatives.
    pub(crate) zone_reps: Vec<Vec<ChitchatId>>,
    pub(crate) zone_members: Vec<Vec<usize>>,
    zone_net: Net,
    pub(crate) global_net: Option<Net>,
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

pub(crate) async fn build_cluster(
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

impl Cluster {
    pub(crate) fn zones(&self) -> usize {
        self.zone_members.len()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let zone = self.zone_net.snapshot();
        match &self.global_net {
            Some(global) => zone.add(global.snapshot()),
            None => zone,
        }
    }

    pub(crate) fn meters(&self) -> Vec<&Meter> {
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
    pub(crate) async fn membership(&self, deadline: Instant) -> (usize, usize) {
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

    pub(crate) async fn shutdown(self) {
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
