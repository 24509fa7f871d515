//! Zone representatives: relaying zone summaries through the cross-zone cluster, and push gossip.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::ChitchatHandle;
use tokio::sync::mpsc;

use crate::cluster::KEY;
use crate::summary::{summary_entry, zone_name, Rng};

const PUSH_FANOUT: usize = 3;

/// Sends a Syn to `PUSH_FANOUT` random live peers now (`ChitchatHandle::gossip`): they answer
/// with a SynAck and receive this node's news in the Ack, without waiting for the next round.
pub(crate) async fn push(handle: &ChitchatHandle, rng: &mut Rng) {
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
pub(crate) async fn relay_loop(
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
