//! `plexus ctl certs|tokens|ca rotate`, and the authenticated POST that every mutating `ctl`
//! command sends (with the agent's local admin token).

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;

/// Where `ctl` looks for the admin token unless told: the agent's default data directory.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/plexus/admin.token";

/// POSTs `body` (JSON) to `path` with the admin token read from `token_file`: (status, body).
pub async fn post(
    admin: SocketAddr,
    path: &str,
    body: serde_json::Value,
    token_file: &Path,
) -> Result<(u16, String), String> {
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        format!(
            "{}: {e} (mutating calls need the agent's admin token; pass --token-file)",
            token_file.display()
        )
    })?;
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, admin.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("admin API at {admin}: {e}"))?;
    let exchange = super::exchange(admin, request);
    // Operator actions wait for a commit through the leader: allow more than a GET.
    tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| Err(format!("admin API at {admin}: no answer within 20s")))
}

/// Runs a mutating call and prints the operator's line (or the JSON answer).
pub async fn operate(
    admin: SocketAddr,
    json: bool,
    path: &str,
    body: serde_json::Value,
    token_file: &Path,
) -> Result<(), String> {
    let (code, answer) = post(admin, path, body, token_file).await?;
    if json {
        print!("{answer}");
    }
    let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    match (code, parsed["detail"].as_str(), parsed["error"].as_str()) {
        (200, Some(detail), _) => {
            if !json {
                println!("{detail}");
            }
            Ok(())
        }
        (_, _, Some(error)) => Err(format!("refused: {error}")),
        _ => Err(format!(
            "admin API at {admin} answered {code}: {}",
            answer.trim()
        )),
    }
}

/// `plexus ctl certs`.
pub async fn print_certs(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, certs) = super::get_json(admin, "/v1/certs").await?;
    if json {
        print!("{body}");
        return Ok(());
    }
    let leaf = &certs["leaf"];
    println!("leaf        {}", leaf["spiffe_id"].as_str().unwrap_or("?"));
    println!(
        "            serial {}  expires at unix {}  renews in {}s",
        leaf["serial"].as_str().unwrap_or("?"),
        leaf["not_after"],
        leaf["renew_in_secs"]
    );
    let ca = &certs["ca"];
    println!(
        "mesh CA     {}  (rotations {}, rotation in progress: {}, key held here: {})",
        if ca["in_decision_log"].as_bool() == Some(true) {
            "in the decision log"
        } else {
            "not in the decision log (operator-issued certificates)"
        },
        ca["rotations"],
        ca["rotation_in_progress"],
        ca["key_held_here"]
    );
    println!();
    println!(
        "{:<34} {:>12} {:<8} {:<14} SOURCE",
        "ROOT SERIAL", "EXPIRES", "ISSUER", "RETIRES (ms)"
    );
    for root in certs["trust_bundle"].as_array().into_iter().flatten() {
        println!(
            "{:<34} {:>12} {:<8} {:<14} {}",
            root["serial"].as_str().unwrap_or("?"),
            root["not_after"],
            if root["issuer"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            root["retire_at_ms"]
                .as_u64()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            root["source"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// `plexus ctl tokens`.
pub async fn print_tokens(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, tokens) = super::get_json(admin, "/v1/tokens").await?;
    if json {
        print!("{body}");
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:>5} {:<16} CREATED BY",
        "ID", "STATE", "USES", "EXPIRES (ms)"
    );
    for t in tokens["tokens"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<9} {:>5} {:<16} {}",
            t["id"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            t["uses"],
            t["expires_ms"]
                .as_u64()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "never".into()),
            t["created_by"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
