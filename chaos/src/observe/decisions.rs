//! An agent's `/v1/decisions`: where it stands in the decision group, the committed releases,
//! and the committed tail of its log.

use std::net::SocketAddr;

use serde_json::Value;

use super::ADMIN_TIMEOUT;
use crate::checks::{AgentConsensus, LogEntry};

/// One answer: the agent's standing, and its committed entries, each with what it decided
/// (`kind: reason`, for the timeline).
pub type Answer = (AgentConsensus, Vec<(LogEntry, String)>);

/// Asks one agent; `None` if it does not answer in time (or not with the expected shape).
pub async fn get(admin: SocketAddr) -> Option<Answer> {
    let answer = tokio::time::timeout(
        ADMIN_TIMEOUT,
        plexus_agent::ctl::get(admin, "/v1/decisions"),
    )
    .await;
    let Ok(Ok((200, body))) = answer else {
        return None;
    };
    parse(&serde_json::from_str(&body).ok()?)
}

/// The status, the releases and the committed entries of a `/v1/decisions` answer.
pub fn parse(json: &Value) -> Option<Answer> {
    let status = json.get("status")?;
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    };
    let canaries = json["state"]["services"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(service, decided)| {
            let canary = decided.get("canary").filter(|c| !c.is_null())?;
            Some((
                service.clone(),
                (
                    canary["phase"].as_str()?.to_owned(),
                    canary["share_percent"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect();
    let agent = AgentConsensus {
        role: status["role"].as_str()?.to_owned(),
        term: status["term"].as_u64().unwrap_or(0),
        leader: status["leader"].as_str().map(str::to_owned),
        is_leader: status["is_leader"].as_bool().unwrap_or(false),
        commit: status["commit"].as_u64().unwrap_or(0),
        applied: status["applied"].as_u64().unwrap_or(0),
        voters: names(&status["voters"]),
        canaries,
    };
    let entries = json["entries"]
        .as_array()?
        .iter()
        .filter_map(|e| {
            let entry = LogEntry {
                index: e["index"].as_u64()?,
                term: e["term"].as_u64()?,
                digest: e["digest"].as_str()?.to_owned(),
            };
            let kind = e["kind"].as_str().unwrap_or("?");
            let what = match e["decision"]["reason"].as_str() {
                Some(reason) if !reason.is_empty() => format!("{kind}: {reason}"),
                _ => kind.to_owned(),
            };
            Some((entry, what))
        })
        .collect();
    Some((agent, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_parses_into_status_releases_and_entries() {
        let json: Value = serde_json::from_str(
            r#"{"status": {"role": "voter", "raft_id": 7, "term": 3, "leader": "node-2",
                 "is_leader": false, "commit": 12, "applied": 12,
                 "voters": ["node-1", "node-2", "node-4"], "learners": [], "proposals": 0},
                "state": {"applied_index": 12, "applied_term": 3, "voters": [],
                  "services": {"echo": {"weights": {}, "weights_epoch": 2,
                    "canary": {"policy": {}, "share_percent": 30, "phase": "Progressing",
                               "last_step_index": 11, "steps": 3}, "scaling": null},
                    "other": {"weights": {}, "weights_epoch": 0, "canary": null}}},
                "entries": [{"index": 11, "term": 3, "digest": "ab", "kind": "canary_step",
                             "decision": null},
                            {"index": 12, "term": 3, "digest": "cd", "kind": "weights",
                             "decision": null}]}"#,
        )
        .unwrap();
        let (agent, entries) = parse(&json).unwrap();
        assert_eq!(agent.role, "voter");
        assert_eq!((agent.term, agent.commit), (3, 12));
        assert_eq!(agent.leader.as_deref(), Some("node-2"));
        assert_eq!(agent.voters, ["node-1", "node-2", "node-4"]);
        assert_eq!(agent.canaries["echo"], ("Progressing".to_owned(), 30));
        assert!(!agent.canaries.contains_key("other"));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0.digest, "cd");
        assert_eq!(entries[1].1, "weights");
        let waiting: Value = serde_json::from_str(
            r#"{"status": {"role": "waiting", "leader": null, "voters": []},
                "state": {"services": {}}, "entries": []}"#,
        )
        .unwrap();
        let (agent, entries) = parse(&waiting).unwrap();
        assert_eq!((agent.role.as_str(), agent.leader), ("waiting", None));
        assert!(entries.is_empty());
    }
}
