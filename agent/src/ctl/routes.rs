//! `plexus ctl routes`: `/v1/routes` as tables, one endpoint per line per upstream, then the
//! adaptive limits of the hosted services.

use std::fmt::Write as _;

use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn rows(value: &Value, key: &str) -> Vec<Value> {
    value[key].as_array().cloned().unwrap_or_default()
}

/// The routes document as text.
pub fn routes_table(routes: &Value) -> String {
    let mut out = String::new();
    for upstream in rows(routes, "upstreams") {
        let budget = &upstream["retry_budget"];
        let _ = writeln!(
            out,
            "{} ({}, {} endpoints, listening on {})  retry budget: {} available, {} retries / {} requests in the last 10 s",
            text(&upstream["service"]),
            text(&upstream["protocol"]),
            text(&upstream["discovery"]),
            text(&upstream["listen"]),
            text(&budget["available"]),
            text(&budget["retries"]),
            text(&budget["requests"]),
        );
        let _ = writeln!(
            out,
            "  {:<22} {:<16} {:>9} {:>9} {:>6} {:<8} {:>9} {:>9}",
            "ENDPOINT", "NODE", "EWMA ms", "IN FLIGHT", "WEIGHT", "STATE", "EJECT s", "EJECTIONS"
        );
        for e in rows(&upstream, "endpoints") {
            let _ = writeln!(
                out,
                "  {:<22} {:<16} {:>9} {:>9} {:>6} {:<8} {:>9} {:>9}",
                text(&e["address"]),
                text(&e["node_id"]),
                text(&e["ewma_ms"]),
                text(&e["in_flight"]),
                text(&e["weight"]),
                text(&e["state"]),
                text(&e["ejected_for_s"]),
                text(&e["ejections"]),
            );
        }
    }
    let services = rows(routes, "services");
    if !services.is_empty() {
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:>8} {:>8} {:>9} {:>8} {:>11}",
            "HOSTED SERVICE", "PROTOCOL", "CAPACITY", "LIMIT", "IN FLIGHT", "SHED", "BASELINE ms"
        );
        for s in services {
            let _ = writeln!(
                out,
                "{:<24} {:<8} {:>8} {:>8} {:>9} {:>8} {:>11}",
                text(&s["service"]),
                text(&s["protocol"]),
                text(&s["capacity"]),
                text(&s["concurrency_limit"]),
                text(&s["in_flight"]),
                text(&s["shed_total"]),
                text(&s["baseline_ms"]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_endpoint_and_per_hosted_service() {
        let routes = serde_json::json!({
            "upstreams": [{
                "service": "api", "protocol": "http", "discovery": "gossip",
                "listen": "127.0.0.1:15001",
                "retry_budget": {"available": 98, "retries": 2, "requests": 40},
                "endpoints": [
                    {"address": "10.0.0.1:4433", "node_id": "n1", "ewma_ms": 1.25, "in_flight": 0,
                     "weight": 1.0, "state": "healthy", "ejected_for_s": null, "ejections": 0},
                    {"address": "10.0.0.2:4433", "node_id": "n2", "ewma_ms": 30.0, "in_flight": 1,
                     "weight": 1.0, "state": "ejected", "ejected_for_s": 12.5, "ejections": 1}
                ]
            }],
            "services": [{"service": "web", "protocol": "http", "capacity": 1024,
                          "concurrency_limit": 37, "in_flight": 2, "shed_total": 5, "baseline_ms": 1.5}]
        });
        let table = routes_table(&routes);
        assert_eq!(table.lines().count(), 6, "{table}");
        assert!(table.contains("98 available"));
        assert!(table
            .lines()
            .any(|l| l.contains("10.0.0.2:4433") && l.contains("ejected") && l.contains("12.50")));
        assert!(table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("37")));
    }
}
