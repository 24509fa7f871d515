//! Readable renderings of the mesh views the admin API returns: tables for peers and
//! services, and the dependency map as text or Graphviz dot.

use std::fmt::Write as _;

use serde_json::Value;

/// How `ctl graph` prints the dependency map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("-")
}

fn num(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(0.0)
}

fn rows(value: &Value, key: &str) -> Vec<Value> {
    value[key].as_array().cloned().unwrap_or_default()
}

/// `/v1/peers` as a table, one member per line.
pub fn peers_table(peers: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<22} {:<10} {:<10} {:>8} {:>6} {:>6} SERVICES",
        "NODE", "ADDRESS", "STATE", "ZONE", "HB AGE", "CPU%", "MEM%"
    );
    for member in rows(peers, "members") {
        let summary = &member["summary"];
        let services: Vec<String> = rows(summary, "services")
            .iter()
            .map(|s| {
                let ready = if s["ready"].as_bool() == Some(true) {
                    ""
                } else {
                    " (unready)"
                };
                format!("{}{}", str_of(s, "name"), ready)
            })
            .collect();
        let name = if member["local"].as_bool() == Some(true) {
            format!("{} *", str_of(&member, "node_id"))
        } else {
            str_of(&member, "node_id").to_owned()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:<10} {:<10} {:>6}ms {:>6.1} {:>6.1} {}",
            name,
            str_of(&member, "address"),
            str_of(&member, "state"),
            str_of(summary, "zone"),
            num(&member, "heartbeat_age"),
            num(summary, "host_cpu_permille") / 10.0,
            num(summary, "host_memory_permille") / 10.0,
            if services.is_empty() {
                "-".to_owned()
            } else {
                services.join(", ")
            }
        );
    }
    out
}

/// `/v1/services` as a table, one endpoint per line.
pub fn services_table(services: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<20} {:<22} {:<8} {:<6} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "SERVICE",
        "NODE",
        "ADDRESS",
        "VERSION",
        "ROUTE",
        "REQ/S",
        "ERR/S",
        "P50",
        "P99",
        "INFLIGHT"
    );
    let Some(map) = services["services"].as_object() else {
        return out;
    };
    for (name, endpoints) in map {
        for e in endpoints.as_array().into_iter().flatten() {
            let route = if e["routable"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            };
            let _ = writeln!(
                out,
                "{:<16} {:<20} {:<22} {:<8} {:<6} {:>8.1} {:>8.1} {:>7}us {:>7}us {:>4}/{:<4}",
                name,
                str_of(e, "node_id"),
                str_of(e, "address"),
                str_of(e, "version"),
                route,
                num(e, "requests_per_sec"),
                num(e, "errors_per_sec"),
                num(e, "p50_us"),
                num(e, "p99_us"),
                num(e, "in_flight"),
                num(e, "capacity"),
            );
        }
    }
    out
}

/// `/v1/graph` as lines `caller -> callee  rate  errors`.
pub fn graph_text(graph: &Value) -> String {
    let edges = rows(graph, "edges");
    if edges.is_empty() {
        return "no traffic between services in the last window\n".into();
    }
    let mut out = String::new();
    for e in edges {
        let _ = writeln!(
            out,
            "{} -> {}  {:.1} req/s  {:.1} err/s  ({} reporting agents)",
            str_of(&e, "caller"),
            str_of(&e, "callee"),
            num(&e, "requests_per_sec"),
            num(&e, "errors_per_sec"),
            num(&e, "reporters"),
        );
    }
    out
}

/// `/v1/graph` as a Graphviz digraph; edges with errors are drawn red.
pub fn graph_dot(graph: &Value) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph plexus {\n  rankdir=LR;\n  node [shape=box];\n");
    for e in rows(graph, "edges") {
        let errors = num(&e, "errors_per_sec");
        let color = if errors > 0.0 { ", color=red" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label=\"{:.1} req/s, {:.1} err/s\"{}];",
            quote(str_of(&e, "caller")),
            quote(str_of(&e, "callee")),
            num(&e, "requests_per_sec"),
            errors,
            color
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_graph_renders_as_text_and_dot() {
        let graph = json!({"edges": [
            {"caller": "web", "callee": "payments", "requests_per_sec": 12.5,
             "errors_per_sec": 0.5, "reporters": 2},
            {"caller": "we\"b", "callee": "db", "requests_per_sec": 1.0,
             "errors_per_sec": 0.0, "reporters": 1}
        ]});
        let text = graph_text(&graph);
        assert!(text.contains("web -> payments  12.5 req/s  0.5 err/s  (2 reporting agents)"));
        let dot = graph_dot(&graph);
        assert!(dot.starts_with("digraph plexus {"));
        assert!(
            dot.contains("\"web\" -> \"payments\" [label=\"12.5 req/s, 0.5 err/s\", color=red];")
        );
        assert!(dot.contains("\"we\\\"b\" -> \"db\""));
        assert_eq!(
            graph_text(&json!({"edges": []})),
            "no traffic between services in the last window\n"
        );
    }

    #[test]
    fn tables_show_one_line_per_member_and_endpoint() {
        let peers = json!({"members": [
            {"node_id": "a", "address": "127.0.0.1:1", "state": "alive", "local": true,
             "heartbeat_age": 12, "summary": {"zone": "z1", "host_cpu_permille": 250,
             "host_memory_permille": 500, "services": [{"name": "api", "ready": false}]}},
            {"node_id": "b", "address": "127.0.0.1:2", "state": "dead", "local": false,
             "heartbeat_age": 9000, "summary": null}
        ]});
        let table = peers_table(&peers);
        assert_eq!(table.lines().count(), 3);
        assert!(table.contains("a *") && table.contains("api (unready)") && table.contains("dead"));
        let services = json!({"services": {"api": [
            {"node_id": "a", "address": "127.0.0.1:1", "version": "v1", "routable": true,
             "requests_per_sec": 3.0, "errors_per_sec": 0.0, "p50_us": 100, "p99_us": 900,
             "in_flight": 1, "capacity": 1024}
        ]}});
        let table = services_table(&services);
        assert_eq!(table.lines().count(), 2);
        assert!(table.contains("api") && table.contains("yes"));
    }
}
