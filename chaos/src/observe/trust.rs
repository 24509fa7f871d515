//! An agent's `/v1/quarantine` (the committed quarantines and, on the leader, the nodes under
//! suspicion) and `/v1/certs` (its leaf, the roots it trusts, where the mesh CA stands).

use std::net::SocketAddr;

use serde_json::Value;

use super::ADMIN_TIMEOUT;
use crate::checks::CertsLook;

/// One agent's `/v1/quarantine`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuarantineAnswer {
    /// Whether the agent leads (only the leader's suspicions mean anything).
    pub leader: bool,
    /// The committed quarantines: (node, since when, Unix ms).
    pub quarantined: Vec<(String, u64)>,
    /// (node, observers, observers needed, why held back).
    pub suspicions: Vec<(String, Vec<String>, usize, Option<String>)>,
}

async fn get(admin: SocketAddr, path: &str) -> Option<Value> {
    let answer = tokio::time::timeout(ADMIN_TIMEOUT, plexus_agent::ctl::get(admin, path)).await;
    let Ok(Ok((200, body))) = answer else {
        return None;
    };
    serde_json::from_str(&body).ok()
}

/// Asks one agent; `None` if it does not answer in time (or not with the expected shape).
pub async fn quarantine(admin: SocketAddr) -> Option<QuarantineAnswer> {
    parse_quarantine(&get(admin, "/v1/quarantine").await?)
}

/// Asks one agent; `at` and `node` of the look are left for the caller.
pub async fn certs(admin: SocketAddr) -> Option<CertsLook> {
    parse_certs(&get(admin, "/v1/certs").await?)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

pub fn parse_quarantine(json: &Value) -> Option<QuarantineAnswer> {
    let quarantined = json["quarantined"]
        .as_array()?
        .iter()
        .filter_map(|q| {
            Some((
                q["node"].as_str()?.to_owned(),
                q["since_ms"].as_u64().unwrap_or(0),
            ))
        })
        .collect();
    let suspicions = json["suspicions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["node"].as_str()?.to_owned(),
                strings(&s["observers"]),
                usize::try_from(s["needed"].as_u64().unwrap_or(0)).unwrap_or(usize::MAX),
                s["held"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    Some(QuarantineAnswer {
        leader: json["leader"].as_bool().unwrap_or(false),
        quarantined,
        suspicions,
    })
}

pub fn parse_certs(json: &Value) -> Option<CertsLook> {
    let leaf = json.get("leaf")?;
    let ca = json.get("ca")?;
    Some(CertsLook {
        leaf_serial: leaf["serial"].as_str()?.to_owned(),
        issued_by: leaf["issued_by"].as_str().map(str::to_owned),
        issuer: ca["issuer"].as_str().map(str::to_owned),
        rotations: ca["rotations"].as_u64().unwrap_or(0),
        bundle: json["trust_bundle"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["serial"].as_str().map(str::to_owned))
            .collect(),
        ..CertsLook::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantine_answer_parses_into_verdicts_and_suspicions() {
        let json: Value = serde_json::from_str(
            r#"{"enabled": true, "leader": true,
                "settings": {"min_observers": null, "window_ms": 30000},
                "quarantined": [{"node": "node-5", "since_ms": 1700000000000, "index": 42,
                                 "observers": ["node-1", "node-2"], "evidence": []}],
                "reports": [],
                "suspicions": [{"node": "node-4", "observers": ["node-3"], "reports": [],
                                "needed": 2, "talking": 3, "held": null}]}"#,
        )
        .unwrap();
        let q = parse_quarantine(&json).unwrap();
        assert!(q.leader);
        assert_eq!(q.quarantined, [("node-5".to_owned(), 1_700_000_000_000)]);
        assert_eq!(
            q.suspicions,
            [("node-4".to_owned(), vec!["node-3".to_owned()], 2, None)]
        );
        let follower: Value =
            serde_json::from_str(r#"{"leader": false, "quarantined": [], "suspicions": []}"#)
                .unwrap();
        assert_eq!(
            parse_quarantine(&follower).unwrap(),
            QuarantineAnswer::default()
        );
        assert_eq!(parse_quarantine(&serde_json::json!({"error": "x"})), None);
    }

    #[test]
    fn a_certs_answer_parses_into_leaf_issuer_and_bundle() {
        let json: Value = serde_json::from_str(
            r#"{"leaf": {"spiffe_id": "spiffe://chaos.plexus/node/node-1", "serial": "0a",
                         "not_after": 1, "issued_by": "b2"},
                "trust_bundle": [{"serial": "a1", "issuer": false, "retire_at_ms": 5},
                                 {"serial": "b2", "issuer": true, "retire_at_ms": null}],
                "ca": {"in_decision_log": true, "issuer": "b2", "rotations": 1,
                       "rotation_in_progress": true}}"#,
        )
        .unwrap();
        let look = parse_certs(&json).unwrap();
        assert_eq!(look.leaf_serial, "0a");
        assert_eq!(look.issued_by.as_deref(), Some("b2"));
        assert_eq!(look.issuer.as_deref(), Some("b2"));
        assert_eq!(look.rotations, 1);
        assert_eq!(look.bundle, ["a1", "b2"]);
        let before: Value = serde_json::from_str(
            r#"{"leaf": {"serial": "0a", "issued_by": null}, "trust_bundle": [],
                "ca": {"in_decision_log": false, "issuer": null, "rotations": 0}}"#,
        )
        .unwrap();
        let look = parse_certs(&before).unwrap();
        assert_eq!((look.issued_by, look.issuer), (None, None));
    }
}
