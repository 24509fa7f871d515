//! Watching the agents through their admin API while a run goes on: members each agent sees
//! dead or alive (`/v1/peers`), endpoints ejected from its routes (`/v1/routes`), counters
//! from `/metrics`, and each process's RSS. Changes become timeline events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::record::{CounterReading, Event, EventKind, Observation};

pub mod decisions;
pub mod trust;

/// Counters read from every agent's `/metrics` (sums over all label sets).
pub const COUNTERS: [&str; 3] = [
    "plexus_handshake_failures_total",
    "plexus_retries_total",
    "plexus_requests_total",
];
const ADMIN_TIMEOUT: Duration = Duration::from_millis(800);

/// What one look at one running agent found.
#[derive(Debug, Default, Clone)]
pub struct Look {
    /// Member node ID → state (`alive`, `suspected`, `dead`, `left`).
    pub members: BTreeMap<String, String>,
    /// Endpoint node IDs this agent's routes hold ejected (or probing).
    pub ejected: BTreeSet<String>,
    /// Endpoint node IDs present in its routes at all.
    pub routed: BTreeSet<String>,
    pub counters: BTreeMap<String, f64>,
}

/// Asks one agent; `None` if it does not answer in time.
pub async fn look(admin: SocketAddr, with_counters: bool) -> Option<Look> {
    let get = |path: &'static str| async move {
        match tokio::time::timeout(ADMIN_TIMEOUT, plexus_agent::ctl::get(admin, path)).await {
            Ok(Ok((200, body))) => Some(body),
            _ => None,
        }
    };
    let peers: serde_json::Value = serde_json::from_str(&get("/v1/peers").await?).ok()?;
    let routes: serde_json::Value = serde_json::from_str(&get("/v1/routes").await?).ok()?;
    let mut out = Look::default();
    for member in peers["members"].as_array().into_iter().flatten() {
        if let (Some(id), Some(state)) = (member["node_id"].as_str(), member["state"].as_str()) {
            out.members.insert(id.to_owned(), state.to_owned());
        }
    }
    for upstream in routes["upstreams"].as_array().into_iter().flatten() {
        for endpoint in upstream["endpoints"].as_array().into_iter().flatten() {
            let state = endpoint["state"].as_str().unwrap_or("healthy");
            if let Some(id) = endpoint["node_id"].as_str() {
                out.routed.insert(id.to_owned());
                if state != "healthy" {
                    out.ejected.insert(id.to_owned());
                }
            }
        }
    }
    if with_counters {
        let text = get("/metrics").await?;
        for name in COUNTERS {
            out.counters
                .insert(name.to_owned(), sum_series(&text, name));
        }
    }
    Some(out)
}

/// The sum of every series of `name` in Prometheus text.
pub fn sum_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if let Some(labels) = rest.strip_prefix('{') {
                labels.rsplit_once('}')?.1
            } else {
                rest
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Turns successive looks into events.
#[derive(Debug, Default)]
pub struct Watcher {
    members: BTreeMap<(String, String), String>,
    ejected: BTreeMap<String, BTreeSet<String>>,
}

impl Watcher {
    /// Compares `look` (by `observer` at `at`) with the last one and returns what changed.
    pub fn update(&mut self, observer: &str, at: Duration, look: &Look) -> Vec<Event> {
        let mut events = Vec::new();
        for (member, state) in &look.members {
            let key = (observer.to_owned(), member.clone());
            let before = self.members.insert(key, state.clone());
            let was_down = before.as_deref().is_some_and(is_down);
            let known = before.is_some();
            if known && is_down(state) && !was_down {
                events.push(Event {
                    at,
                    kind: EventKind::MemberDown,
                    subject: Some(member.clone()),
                    observer: Some(observer.to_owned()),
                    detail: format!("{observer} sees {member} {state}"),
                });
            } else if known && was_down && !is_down(state) {
                events.push(Event {
                    at,
                    kind: EventKind::MemberUp,
                    subject: Some(member.clone()),
                    observer: Some(observer.to_owned()),
                    detail: format!("{observer} sees {member} {state} again"),
                });
            }
        }
        let before = self.ejected.entry(observer.to_owned()).or_default();
        for node in look.ejected.difference(before) {
            events.push(Event {
                at,
                kind: EventKind::Ejection,
                subject: Some(node.clone()),
                observer: Some(observer.to_owned()),
                detail: format!("{observer} ejected {node}"),
            });
        }
        for node in before
            .difference(&look.ejected)
            .filter(|n| look.routed.contains(*n))
        {
            events.push(Event {
                at,
                kind: EventKind::Return,
                subject: Some(node.clone()),
                observer: Some(observer.to_owned()),
                detail: format!("{observer} returned {node} to its route"),
            });
        }
        *before = look.ejected.clone();
        events
    }
}

fn is_down(state: &str) -> bool {
    state == "dead" || state == "left"
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One observation row.
pub fn observation(at: Duration, node: &str, running: bool, pid: Option<u32>) -> Observation {
    Observation {
        at,
        node: node.to_owned(),
        running,
        rss_kib: pid.and_then(rss_kib),
    }
}

/// Counter readings of one look.
pub fn readings(at: Duration, node: &str, look: &Look) -> Vec<CounterReading> {
    look.counters
        .iter()
        .map(|(name, value)| CounterReading {
            at,
            node: node.to_owned(),
            name: name.clone(),
            value: *value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_labels() {
        let text = "# TYPE x counter\nplexus_handshake_failures_total{direction=\"inbound\",reason=\"unknown_ca\"} 2\n\
                    plexus_handshake_failures_total{direction=\"outbound\",reason=\"expired\"} 3\nplexus_handshake_failures_totals 9\n";
        assert_eq!(sum_series(text, "plexus_handshake_failures_total"), 5.0);
        assert_eq!(
            sum_series("plexus_retries_total 4\n", "plexus_retries_total"),
            4.0
        );
    }

    #[test]
    fn changes_become_events() {
        let mut w = Watcher::default();
        let mut look = Look::default();
        look.members.insert("node-3".into(), "alive".into());
        assert!(w.update("node-1", Duration::ZERO, &look).is_empty());
        look.members.insert("node-3".into(), "dead".into());
        look.ejected.insert("node-3".into());
        look.routed.insert("node-3".into());
        let events = w.update("node-1", Duration::from_secs(1), &look);
        let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(kinds, [EventKind::MemberDown, EventKind::Ejection]);
        look.members.insert("node-3".into(), "alive".into());
        look.ejected.clear();
        let kinds: Vec<_> = w
            .update("node-1", Duration::from_secs(2), &look)
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, [EventKind::MemberUp, EventKind::Return]);
    }
}
