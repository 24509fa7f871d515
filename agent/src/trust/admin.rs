//! What the admin API shows about trust (`/v1/certs`, `/v1/tokens`), and the local admin token
//! that mutating calls present.

use std::path::Path;

use serde_json::json;

use crate::config::PkiSettings;
use crate::pki::{LiveCredentials, LiveTrust};
use plexus_protocol::TrustState;

/// The file mutating admin calls read their secret from: `<data_dir>/admin.token`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token of the agent keeping state in `state_dir`: read, or made (0600) on first
/// start. `None` when it can be neither read nor written (mutations are then refused).
pub fn admin_token(state_dir: &Path) -> Option<String> {
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if token.len() >= 32 {
            return Some(token);
        }
    }
    let made = crate::pki::ca::new_token("admin", 0, None).ok()?.text;
    let written = std::fs::create_dir_all(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::pki::write_secret(&path, &format!("{made}\n")).map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => Some(made),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "no admin token: mutating admin calls are refused");
            None
        }
    }
}

/// `/v1/certs`: this node's leaf, the roots it trusts, and where the mesh CA stands.
pub fn certs(
    credentials: &LiveCredentials,
    trust: &LiveTrust,
    committed: &TrustState,
    pki: &PkiSettings,
) -> serde_json::Value {
    let leaf = credentials.info();
    let renew_in = super::renew::renew_at(&leaf, (super::unix_ms() / 1000) as i64);
    let issuer = committed.issuer().map(|r| r.serial.clone());
    let roots: Vec<serde_json::Value> = trust
        .view()
        .root_ders
        .iter()
        .filter_map(|der| crate::pki::ca::root_facts(der).ok())
        .map(|(serial, not_after, _)| {
            let entry = committed.roots.iter().find(|r| r.serial == serial);
            json!({
                "serial": serial,
                "not_after": not_after,
                "issuer": issuer.as_deref() == Some(serial.as_str()),
                "retire_at_ms": entry.and_then(|r| r.retire_at_ms),
                "source": if entry.is_some() { "decision log" } else { "tls.ca" },
            })
        })
        .collect();
    json!({
        "leaf": {
            "spiffe_id": leaf.spiffe_id,
            "serial": leaf.serial,
            "not_before": leaf.not_before,
            "not_after": leaf.not_after,
            "renew_in_secs": renew_in.as_secs(),
            "chain_length": credentials.chain().len(),
            "issued_by": committed
                .roots
                .iter()
                .find(|r| super::renew::chains_to(&credentials.chain()[0], &r.der))
                .map(|r| r.serial.clone()),
        },
        "trust_bundle": roots,
        "ca": {
            "in_decision_log": !committed.roots.is_empty(),
            "key_held_here": committed.has_ca(),
            "issuer": issuer,
            "rotations": committed.rotations,
            "rotation_in_progress": committed.roots.len() > 1,
            "leaf_lifetime_secs": pki.leaf_lifetime.as_secs(),
        },
        "deny_list": committed.quarantined.keys().collect::<Vec<_>>(),
    })
}

/// `/v1/tokens`: join tokens as committed (never their secrets).
pub fn tokens(committed: &TrustState) -> serde_json::Value {
    let now = super::unix_ms();
    let tokens: Vec<serde_json::Value> = committed
        .tokens
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id,
                "created_by": t.created_by,
                "created_ms": t.created_ms,
                "expires_ms": t.expires_ms,
                "revoked": t.revoked,
                "usable": t.usable(now).is_ok(),
                "state": match t.usable(now) { Ok(()) => "usable", Err(why) => why },
                "uses": t.uses,
            })
        })
        .collect();
    json!({ "tokens": tokens })
}
