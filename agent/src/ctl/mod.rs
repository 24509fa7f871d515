//! `plexus ctl`: a small HTTP client of an agent's admin API.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// How long one admin request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// GETs `path` from the admin API at `admin`: (status code, body), within 5 s.
pub async fn get(admin: SocketAddr, path: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(REQUEST_TIMEOUT, get_unbounded(admin, path))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "admin API at {admin}: no answer within {REQUEST_TIMEOUT:?}"
            ))
        })
}

async fn get_unbounded(admin: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("admin API at {admin}: {e}"))?;
    exchange(admin, request).await
}

/// Sends one request to the admin API at `admin` on a new connection: (status code, body).
pub(crate) async fn exchange<B>(
    admin: SocketAddr,
    request: hyper::Request<B>,
) -> Result<(u16, String), String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let fail = |e: &dyn std::fmt::Display| format!("admin API at {admin}: {e}");
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `plexus ctl status`.
pub async fn print_status(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (code, body) = get(admin, "/v1/status").await?;
    if code != 200 {
        return Err(format!("admin API at {admin} answered {code}: {body}"));
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let status: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("admin API at {admin}: bad JSON: {e}"))?;
    let s = |key: &str| {
        status[key]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status[key].to_string())
    };
    println!("node        {}  ({})", s("node_id"), s("spiffe_id"));
    println!("ready       {}", s("ready"));
    println!("version     {}", s("version"));
    println!(
        "quic        {}  (advertised {})",
        s("listen"),
        s("advertise")
    );
    println!("uptime      {}s", s("uptime_seconds"));
    let cert = &status["certificate"];
    println!(
        "certificate serial {}  expires at unix {}",
        cert["serial"].as_str().unwrap_or("?"),
        cert["not_after"]
    );
    let rows = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    println!("peers       {}", rows("peers").len());
    for p in rows("peers") {
        println!(
            "  {:<24} {:<22} {}",
            p["node_id"].as_str().unwrap_or("?"),
            p["address"].as_str().unwrap_or("?"),
            p["direction"].as_str().unwrap_or("?")
        );
    }
    println!("services    {}", rows("services").len());
    for svc in rows("services") {
        println!(
            "  {:<24} {:<22} {}",
            svc["name"].as_str().unwrap_or("?"),
            svc["address"].as_str().unwrap_or("?"),
            svc["protocol"].as_str().unwrap_or("?")
        );
    }
    println!("upstreams   {}", rows("upstreams").len());
    for u in rows("upstreams") {
        println!(
            "  {:<24} {:<22} -> {}",
            u["service"].as_str().unwrap_or("?"),
            u["listen"].as_str().unwrap_or("?"),
            u["endpoints"]
        );
    }
    Ok(())
}

mod decisions;
mod mesh;
mod policy;
mod quarantine;
mod routes;
mod trust;
pub use decisions::{canary_table, decisions_table};
pub use mesh::{graph_dot, graph_text, peers_table, services_table, GraphFormat};
pub use policy::{policy_table, print_policy};
pub use quarantine::{print_quarantine, quarantine_table};
pub use routes::routes_table;
pub use trust::{operate, post, print_certs, print_tokens, DEFAULT_TOKEN_FILE};

/// GETs a JSON document from the admin API.
async fn get_json(admin: SocketAddr, path: &str) -> Result<(String, serde_json::Value), String> {
    let (code, body) = get(admin, path).await?;
    if code != 200 {
        return Err(format!("admin API at {admin} answered {code}: {body}"));
    }
    let value =
        serde_json::from_str(&body).map_err(|e| format!("admin API at {admin}: bad JSON: {e}"))?;
    Ok((body, value))
}

/// `plexus ctl peers`.
pub async fn print_peers(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = get_json(admin, "/v1/peers").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", peers_table(&value));
    }
    Ok(())
}

/// `plexus ctl services`.
pub async fn print_services(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = get_json(admin, "/v1/services").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", services_table(&value));
    }
    Ok(())
}

/// `plexus ctl graph`.
pub async fn print_graph(admin: SocketAddr, json: bool, format: GraphFormat) -> Result<(), String> {
    let (body, value) = get_json(admin, "/v1/graph").await?;
    match (json, format) {
        (true, _) => print!("{body}"),
        (false, GraphFormat::Text) => print!("{}", graph_text(&value)),
        (false, GraphFormat::Dot) => print!("{}", graph_dot(&value)),
    }
    Ok(())
}

/// `plexus ctl routes`.
/// `plexus ctl decisions`.
pub async fn print_decisions(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = get_json(admin, "/v1/decisions").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", decisions_table(&value));
    }
    Ok(())
}

/// `plexus ctl canary SERVICE`.
pub async fn print_canary(admin: SocketAddr, json: bool, service: &str) -> Result<(), String> {
    let (_, value) = get_json(admin, "/v1/decisions").await?;
    if json {
        let canary = &value["state"]["services"][service]["canary"];
        println!(
            "{}",
            serde_json::to_string_pretty(canary).unwrap_or_default()
        );
    } else {
        print!("{}", canary_table(&value, service)?);
    }
    Ok(())
}

pub async fn print_routes(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = get_json(admin, "/v1/routes").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", routes_table(&value));
    }
    Ok(())
}
