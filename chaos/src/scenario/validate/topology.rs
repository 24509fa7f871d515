//! Validating the topology, the agents' settings and the workload.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use plexus_protocol::{NodeId, ServiceName};

use super::super::raw::{RawAgent, RawNodeList, RawNodes, RawService, RawWorkload};
use super::{Names, Validator, MAX_NODES, MAX_RATE};
use crate::scenario::*;

impl Validator<'_> {
    pub(super) fn nodes(
        &mut self,
        raw: &RawNodes,
        zones: &[String],
    ) -> Option<(Vec<NodeSpec>, Names)> {
        let names: Vec<String> = match raw {
            RawNodes::Count(n) if (1..=MAX_NODES as i64).contains(n) => {
                (1..=*n).map(|i| format!("node-{i}")).collect()
            }
            RawNodes::Count(n) => {
                self.error(
                    "topology.nodes",
                    format!("{n} nodes; 1 to {MAX_NODES} can run on one machine"),
                );
                return None;
            }
            RawNodes::Names(list) => list.clone(),
        };
        if names.is_empty() || names.len() > MAX_NODES {
            self.error("topology.nodes", format!("1 to {MAX_NODES} nodes"));
            return None;
        }
        let mut unique = BTreeSet::new();
        for name in &names {
            if let Err(e) = NodeId::new(name) {
                self.error("topology.nodes", format!("`{name}`: {e}"));
            }
            if !unique.insert(name) {
                self.error("topology.nodes", format!("`{name}` appears twice"));
            }
        }
        for zone in zones {
            if zone.is_empty() || zone.contains(char::is_whitespace) {
                self.error("topology.zones", format!("`{zone}` is not a zone name"));
            }
        }
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeSpec {
                name: name.clone(),
                zone: (!zones.is_empty()).then(|| zones[i % zones.len()].clone()),
            })
            .collect();
        Some((
            nodes,
            Names {
                nodes: names,
                zones: zones.iter().cloned().collect(),
            },
        ))
    }

    fn node_list(
        &mut self,
        key: &str,
        raw: Option<&RawNodeList>,
        names: &Names,
        default: Vec<String>,
    ) -> Vec<String> {
        let list = match raw {
            None => return default,
            Some(RawNodeList::One(s)) if s == "all" => return names.nodes.clone(),
            Some(RawNodeList::One(s)) => vec![s.clone()],
            Some(RawNodeList::Many(v)) => v.clone(),
        };
        for n in &list {
            if !names.nodes.contains(n) {
                self.error(key, format!("`{n}` is not a node of the topology"));
            }
        }
        list
    }

    pub(super) fn services(&mut self, raw: &[RawService], names: &Names) -> Vec<ServiceSpec> {
        if raw.is_empty() {
            self.error(
                "topology.services",
                "at least one service is needed for the workload",
            );
        }
        let mut out = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("topology.services[{i}]");
            if let Err(e) = ServiceName::new(&s.name) {
                self.error(format!("{key}.name"), e.to_string());
            }
            let protocol = match s.protocol.as_deref() {
                None | Some("http") => Protocol::Http,
                Some("tcp") => Protocol::Tcp,
                Some(other) => {
                    self.error(
                        format!("{key}.protocol"),
                        format!("`{other}`: use \"http\" or \"tcp\""),
                    );
                    Protocol::Http
                }
            };
            let on = self.node_list(
                &format!("{key}.on"),
                s.on.as_ref(),
                names,
                names.nodes.clone(),
            );
            let base = s.version.clone().unwrap_or_else(|| "v1".into());
            let mut versions: BTreeMap<String, String> =
                on.iter().map(|n| (n.clone(), base.clone())).collect();
            for (node, version) in &s.versions {
                if !on.contains(node) {
                    self.error(
                        format!("{key}.versions.{node}"),
                        "not a node this service is on",
                    );
                } else {
                    versions.insert(node.clone(), version.clone());
                }
            }
            let latency = self.opt_duration(
                &format!("{key}.latency"),
                s.latency.as_deref(),
                Duration::ZERO,
                Duration::from_secs(10),
            );
            out.push(ServiceSpec {
                name: s.name.clone(),
                protocol,
                on,
                versions,
                latency,
            });
        }
        out
    }

    pub(super) fn agent(&mut self, raw: &RawAgent) -> AgentSettings {
        let day = Duration::from_secs(3600);
        AgentSettings {
            gossip_interval: raw.gossip_interval.as_deref().and_then(|v| {
                self.duration("agent.gossip_interval", v, Duration::from_millis(50), day)
            }),
            phi_threshold: raw.phi_threshold,
            health_interval: self.opt_duration(
                "agent.health_interval",
                raw.health_interval.as_deref(),
                Duration::from_secs(1),
                day,
            ),
            upstream: raw.upstream.clone().unwrap_or_default(),
            service: raw.service.clone().unwrap_or_default(),
        }
    }

    pub(super) fn workload(
        &mut self,
        raw: &RawWorkload,
        names: &Names,
        services: &[ServiceSpec],
    ) -> Option<Workload> {
        let service = services.iter().find(|s| s.name == raw.service);
        if service.is_none() {
            self.error(
                "workload.service",
                format!("`{}` is not a service of the topology", raw.service),
            );
        }
        let protocol = match raw.kind.as_deref() {
            None => service.map_or(Protocol::Http, |s| s.protocol),
            Some("http") => Protocol::Http,
            Some("tcp") => Protocol::Tcp,
            Some(other) => {
                self.error(
                    "workload.kind",
                    format!("`{other}`: use \"http\" or \"tcp\""),
                );
                Protocol::Http
            }
        };
        if let Some(s) = service {
            if s.protocol != protocol {
                self.error(
                    "workload.kind",
                    format!(
                        "`{}` but service `{}` is {}",
                        protocol.as_str(),
                        s.name,
                        s.protocol.as_str()
                    ),
                );
            }
        }
        if !(1..=MAX_RATE).contains(&raw.rate) {
            self.error(
                "workload.rate",
                format!("{} requests/s; 1 to {MAX_RATE}", raw.rate),
            );
        }
        let from = self.node_list(
            "workload.from",
            raw.from.as_ref(),
            names,
            vec![names.nodes[0].clone()],
        );
        let max_in_flight = raw.max_in_flight.unwrap_or(1024);
        if !(1..=10_000).contains(&max_in_flight) {
            self.error(
                "workload.max_in_flight",
                format!("{max_in_flight}; 1 to 10000"),
            );
        }
        let method = raw.method.clone().unwrap_or_else(|| "GET".into());
        if !["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"].contains(&method.as_str()) {
            self.error(
                "workload.method",
                format!("`{method}`: GET, HEAD, PUT, DELETE, POST or PATCH"),
            );
        }
        Some(Workload {
            protocol,
            rate: u32::try_from(raw.rate.clamp(1, MAX_RATE)).unwrap_or(1),
            from,
            service: raw.service.clone(),
            timeout: self.opt_duration(
                "workload.timeout",
                raw.timeout.as_deref(),
                Duration::from_secs(2),
                Duration::from_secs(60),
            ),
            max_in_flight: usize::try_from(max_in_flight.clamp(1, 10_000)).unwrap_or(1),
            method,
        })
    }
}

/// The first `count` voters, taking zones in turn so voters spread across them.
pub(super) fn spread_voters(nodes: &[NodeSpec], count: usize) -> Vec<String> {
    let mut by_zone: BTreeMap<Option<&String>, Vec<&String>> = BTreeMap::new();
    let mut order: Vec<Option<&String>> = Vec::new();
    for n in nodes {
        if !by_zone.contains_key(&n.zone.as_ref()) {
            order.push(n.zone.as_ref());
        }
        by_zone.entry(n.zone.as_ref()).or_default().push(&n.name);
    }
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < count {
        let before = out.len();
        for zone in &order {
            if let Some(name) = by_zone[zone].get(round) {
                if out.len() < count {
                    out.push((*name).clone());
                }
            }
        }
        if out.len() == before {
            break;
        }
        round += 1;
    }
    out
}
