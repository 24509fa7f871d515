//! `plexus ctl decisions` and `plexus ctl canary SERVICE`: `/v1/decisions` as text.

use std::fmt::Write as _;

use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where the agent stands in the decision group, then the committed tail, newest last.
pub fn decisions_table(doc: &Value) -> String {
    let mut out = String::new();
    let status = &doc["status"];
    let names = |key: &str| {
        status[key]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        "role {}  term {}  leader {}  commit {}  applied {}",
        text(&status["role"]),
        text(&status["term"]),
        text(&status["leader"]),
        text(&status["commit"]),
        text(&status["applied"]),
    );
    let _ = writeln!(out, "voters {}", names("voters"));
    if !names("learners").is_empty() {
        let _ = writeln!(out, "learners {}", names("learners"));
    }
    let _ = writeln!(out, "\n{:>7} {:>5}  {:<13} reason", "index", "term", "kind");
    for entry in doc["entries"].as_array().into_iter().flatten() {
        let reason = entry["decision"]["reason"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "{:>7} {:>5}  {:<13} {reason}",
            text(&entry["index"]),
            text(&entry["term"]),
            text(&entry["kind"]),
        );
    }
    out
}

/// One service's canary release: policy, share and phase, then its steps from the log.
pub fn canary_table(doc: &Value, service: &str) -> Result<String, String> {
    let canary = &doc["state"]["services"][service]["canary"];
    if canary.is_null() {
        return Err(format!("no canary release of {service} has been committed"));
    }
    let policy = &canary["policy"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{service}: canary {} against baseline {}  share {}%  phase {}  steps {}",
        text(&policy["canary"]),
        text(&policy["baseline"]),
        text(&canary["share_percent"]),
        text(&canary["phase"]),
        text(&canary["steps"]),
    );
    let _ = writeln!(
        out,
        "policy: +{}% every {} ms, max error rate +{}, max p99 {}x baseline",
        text(&policy["step_percent"]),
        text(&policy["interval_ms"]),
        text(&policy["max_error_rate_increase"]),
        text(&policy["max_latency_ratio"]),
    );
    for entry in doc["entries"].as_array().into_iter().flatten() {
        let decision = &entry["decision"];
        let kind = text(&entry["kind"]);
        let about = decision["kind"]
            .as_object()
            .and_then(|k| k.values().next())
            .map(|v| v["service"].clone())
            .unwrap_or(Value::Null);
        if (kind == "canary_start" || kind == "canary_step") && about == service {
            let _ = writeln!(
                out,
                "{:>7}  {}",
                text(&entry["index"]),
                decision["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "status": {"role": "voter", "term": 3, "leader": "a", "commit": 9, "applied": 9,
                       "voters": ["a", "b", "c"], "learners": []},
            "state": {"services": {"api": {"canary": {
                "policy": {"baseline": "v1", "canary": "v2", "step_percent": 20,
                           "interval_ms": 30000, "max_error_rate_increase": 0.01,
                           "max_latency_ratio": 1.5},
                "share_percent": 40, "phase": "Progressing", "steps": 2}}}},
            "entries": [
                {"index": 8, "term": 3, "kind": "canary_step",
                 "decision": {"kind": {"CanaryStep": {"service": "api"}}, "reason": "up to 40%"}},
                {"index": 9, "term": 3, "kind": "weights",
                 "decision": {"kind": {"Weights": {"service": "web"}}, "reason": "web slow"}}
            ]
        })
    }

    #[test]
    fn the_log_and_one_canary_read_as_text() {
        let table = decisions_table(&doc());
        assert!(table.contains("leader a"), "{table}");
        assert!(table.contains("web slow"), "{table}");
        let canary = canary_table(&doc(), "api").unwrap();
        assert!(canary.contains("share 40%"), "{canary}");
        assert!(canary.contains("up to 40%"), "{canary}");
        assert!(!canary.contains("web slow"), "{canary}");
        assert!(canary_table(&doc(), "web").is_err());
    }
}
