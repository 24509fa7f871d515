//! `plexus ctl quarantine`: `/v1/quarantine` as text (quarantined nodes with their evidence,
//! this agent's own reports, the leader's suspicions); `quarantine release NODE` is an
//! operator action (see `ctl::trust::operate`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn names(value: &Value) -> String {
    let list: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

/// Unix milliseconds as an RFC 3339 time (UTC, seconds).
fn when(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "-".into(),
    }
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

/// Quarantined nodes with each verdict's evidence, then this agent's reports, then (on the
/// leader) the nodes under suspicion.
pub fn quarantine_table(doc: &Value) -> String {
    let mut out = String::new();
    let quarantined = doc["quarantined"].as_array().cloned().unwrap_or_default();
    if quarantined.is_empty() {
        let _ = writeln!(out, "no node is quarantined");
    }
    for q in &quarantined {
        let _ = writeln!(
            out,
            "{}  quarantined since {} (log index {})  serials {}",
            text(&q["node"]),
            when(&q["since_ms"]),
            text(&q["index"]),
            names(&q["serials"]),
        );
        let _ = writeln!(out, "  reason: {}", text(&q["reason"]));
        for e in q["evidence"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<24} saw {:<20} {} against {}",
                text(&e["observer"]),
                text(&e["signal"]),
                number(&e["value"]),
                number(&e["reference"]),
            );
        }
    }
    let reports = doc["reports"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "\nthis agent reports {}", reports.len());
    if !reports.is_empty() {
        let _ = writeln!(
            out,
            "  {:<24} {:<20} {:>9} {:>9}  since",
            "subject", "signal", "value", "reference"
        );
    }
    for r in &reports {
        let _ = writeln!(
            out,
            "  {:<24} {:<20} {:>9} {:>9}  {}",
            text(&r["subject"]),
            text(&r["signal"]),
            number(&r["value"]),
            number(&r["reference"]),
            when(&r["since_ms"]),
        );
    }
    if doc["leader"].as_bool() == Some(true) {
        let suspicions = doc["suspicions"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "\nunder suspicion (this agent leads) {}",
            suspicions.len()
        );
        for s in &suspicions {
            let _ = writeln!(
                out,
                "  {:<24} {} of {} observers needed ({} peers talk to it): {}{}",
                text(&s["node"]),
                s["observers"].as_array().map_or(0, Vec::len),
                text(&s["needed"]),
                text(&s["talking"]),
                names(&s["observers"]),
                match s["held"].as_str() {
                    Some(held) => format!("; held: {held}"),
                    None => String::new(),
                },
            );
        }
    }
    out
}

/// `plexus ctl quarantine`.
pub async fn print_quarantine(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = super::get_json(admin, "/v1/quarantine").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", quarantine_table(&value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_verdicts_with_evidence_reports_and_suspicions() {
        let doc: Value = serde_json::from_str(
            r#"{"enabled": true, "leader": true,
                "quarantined": [{"node": "node-5", "since_ms": 0, "index": 42,
                  "reason": "node-5: error_rate reported by 2 distinct observers",
                  "observers": ["node-1", "node-2"], "serials": ["7f3a"],
                  "evidence": [{"observer": "node-1", "subject": "node-5",
                                "signal": "error_rate", "value": 1.0, "reference": 0.0}]}],
                "reports": [{"subject": "node-4", "signal": "error_rate", "value": 0.8,
                             "reference": 0.0, "since_ms": 1000}],
                "suspicions": [{"node": "node-4", "observers": ["node-1"], "needed": 2,
                                "talking": 3, "held": null}]}"#,
        )
        .unwrap();
        let table = quarantine_table(&doc);
        assert!(
            table.contains(
                "node-5  quarantined since 1970-01-01T00:00:00Z (log index 42)  serials 7f3a"
            ),
            "{table}"
        );
        assert!(
            table.contains("node-1                   saw error_rate           1.000 against 0.000"),
            "{table}"
        );
        assert!(table.contains("this agent reports 1"), "{table}");
        assert!(
            table.contains(
                "node-4                   1 of 2 observers needed (3 peers talk to it): node-1"
            ),
            "{table}"
        );
    }

    #[test]
    fn an_empty_answer_says_so() {
        let doc: Value = serde_json::from_str(
            r#"{"leader": false, "quarantined": [], "reports": [], "suspicions": []}"#,
        )
        .unwrap();
        let table = quarantine_table(&doc);
        assert!(table.starts_with("no node is quarantined"));
        assert!(!table.contains("suspicion"));
    }
}
