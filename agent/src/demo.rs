//! `plexus demo`: a two-agent mesh on this machine, with nothing to prepare.
//!
//! It makes a CA and two node certificates in a temporary directory, starts an echo service,
//! starts `node-a` hosting it and `node-b` with an upstream to it, carries a request from an app
//! through `node-b`, over QUIC with mutual TLS, to `node-a` and back, and narrates each step.

pub mod backend;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_protocol::{NodeId, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::AgentConfig;
use crate::pki::{self, IssueOptions, Validity};

const TRUST_DOMAIN: &str = "demo.plexus";

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}/5] {}", text.as_ref());
}

/// Runs the walk-through; with `hold`, keeps the mesh up until Ctrl-C.
pub async fn run(hold: bool) -> Result<(), String> {
    // A fresh private directory (mode 0700, unpredictable name), removed when the demo ends.
    let temp = tempfile::Builder::new()
        .prefix("plexus-demo-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let dir = temp.path().to_owned();

    step(
        1,
        format!(
            "making a mesh CA for spiffe://{TRUST_DOMAIN} and certificates for node-a and node-b"
        ),
    );
    let options = IssueOptions {
        validity: Validity::starting_now(Duration::from_secs(3600)),
        force: true,
    };
    let domain = TrustDomain::new(TRUST_DOMAIN).map_err(|e| e.to_string())?;
    pki::init_ca(&domain, &dir.join("ca"), options).map_err(|e| e.to_string())?;
    for node in ["node-a", "node-b"] {
        let id = NodeId::new(node).map_err(|e| e.to_string())?;
        pki::issue_node(&dir.join("ca"), &id, &dir.join(node), options)
            .map_err(|e| e.to_string())?;
    }

    let backend = start_echo().await?;
    step(
        2,
        format!("starting an echo service on {backend} and node-a, which hosts it as \"echo\""),
    );
    let a = start_node(
        &dir,
        "node-a",
        &format!("[[service]]\nname = \"echo\"\naddress = \"{backend}\"\n"),
    )
    .await?;

    step(
        3,
        format!(
            "starting node-b with an upstream \"echo\" whose endpoint is node-a at {}",
            a.quic_addr
        ),
    );
    let b = start_node(
        &dir,
        "node-b",
        &format!(
            "[[upstream]]\nservice = \"echo\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"{}\"]\n",
            a.quic_addr
        ),
    )
    .await?;
    let app_addr = b
        .upstream_addr("echo")
        .ok_or("node-b has no echo listener")?;

    step(
        4,
        format!("an app connects to node-b's local listener {app_addr} and sends a line"),
    );
    let message = b"hello through the mesh\n";
    let started = Instant::now();
    let reply = round_trip(app_addr, message).await?;
    let first = started.elapsed();
    let started = Instant::now();
    let _ = round_trip(app_addr, message).await?;
    let second = started.elapsed();
    println!("      sent     {:?}", String::from_utf8_lossy(message));
    println!("      received {:?}", String::from_utf8_lossy(&reply));
    println!(
        "      path: app -> node-b -> QUIC + mTLS (TLS 1.3, ALPN plexus/1) -> node-a -> echo, and back"
    );
    println!("      first exchange {first:?} (includes the QUIC handshake), second {second:?} (connection reused)");
    if reply != message {
        return Err("the echo did not come back intact".into());
    }

    step(5, "what node-a's admin API reports:");
    let (_, metrics) = crate::ctl::get(a.admin_addr, "/metrics").await?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("plexus_streams_total") || l.starts_with("plexus_connections_total")
    }) {
        println!("      {line}");
    }
    println!(
        "      node-a admin: http://{}/v1/status   node-b admin: http://{}/v1/status",
        a.admin_addr, b.admin_addr
    );

    if hold {
        println!("the mesh keeps running; try `nc {app_addr}` and type lines. Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    b.shutdown().await;
    a.shutdown().await;
    println!("done: one request carried end to end over mutual TLS, both agents stopped cleanly.");
    Ok(())
}

async fn start_node(dir: &Path, node: &str, extra: &str) -> Result<crate::RunningAgent, String> {
    let config_path = dir.join(format!("{node}.toml"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[tls]\nca = \"{node}/ca.pem\"\ncert = \"{node}/node.pem\"\nkey = \"{node}/node.key\"\n\n{extra}"
    );
    std::fs::write(&config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = AgentConfig::load(&config_path).map_err(|e| e.to_string())?;
    crate::start(config).await.map_err(|e| e.to_string())
}

async fn start_echo() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

async fn round_trip(addr: SocketAddr, message: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(message).await?;
        stream.shutdown().await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no reply within 10s".to_string())?
        .map_err(|e| format!("exchange through {addr} failed: {e}"))
}
