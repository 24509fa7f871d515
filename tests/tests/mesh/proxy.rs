//! Bytes carried between agents: both ways, large, many at once, across several endpoints.

use std::hash::Hasher;

use plexus_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::PATIENCE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_carry_bytes_both_ways_and_reuse_one_connection() {
    let Pair { a, b, mesh: _mesh } = Pair::start("echo", echo_server().await, "2s").await;
    let app = a.upstream_addr("echo").unwrap();

    for i in 0..5 {
        let message = format!("ping {i}").into_bytes();
        assert_eq!(exchange(app, &message).await.unwrap(), message);
    }
    // Five proxied connections, one QUIC connection between the agents.
    assert_eq!(
        agent_metric(&a, "plexus_connections_total{direction=\"outbound\"}"),
        1.0
    );
    assert_eq!(
        agent_metric(&b, "plexus_connections_total{direction=\"inbound\"}"),
        1.0
    );
    let completed =
        "plexus_streams_total{direction=\"inbound\",service=\"echo\",outcome=\"completed\"}";
    assert!(eventually(PATIENCE, async || agent_metric(&b, completed) == 5.0).await);

    // The caller's identity comes from its certificate.
    let (code, status) = admin_get(b.admin_addr, "/v1/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["node_id"], "node-b");
    assert_eq!(status["peers"][0]["node_id"], "node-a");
    assert_eq!(status["peers"][0]["direction"], "inbound");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_side_can_speak_first_and_half_close_is_carried() {
    // A "banner" service speaks first and closes its side, while the client keeps writing.
    let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let banner_addr = banner.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = banner.accept().await.unwrap();
        s.write_all(b"hello from the service\n").await.unwrap();
        s.shutdown().await.unwrap(); // half-close: no more from the service
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let pair = Pair::start("banner", banner_addr, "2s").await;

    let mut client = TcpStream::connect(pair.app("banner")).await.unwrap();
    let mut greeting = Vec::new();
    client.read_to_end(&mut greeting).await.unwrap(); // EOF arrives while we can still write
    assert_eq!(greeting, b"hello from the service\n");
    client
        .write_all(b"still talking after your FIN")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let received = tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"still talking after your FIN");
}

/// A deterministic byte stream (xorshift64), so both ends can hash what they see.
fn fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_transfer_arrives_intact() {
    const TOTAL: usize = 64 << 20;
    let pair = Pair::start("echo", echo_server().await, "2s").await;
    let client = TcpStream::connect(pair.app("echo")).await.unwrap();
    let (mut reader, mut writer) = client.into_split();

    let send = tokio::spawn(async move {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let (mut state, mut buf, mut sent) = (0x9e37_79b9_7f4a_7c15u64, vec![0u8; 256 * 1024], 0);
        while sent < TOTAL {
            fill(&mut state, &mut buf);
            writer.write_all(&buf).await.unwrap();
            hasher.write(&buf);
            sent += buf.len();
        }
        writer.shutdown().await.unwrap();
        hasher.finish()
    });
    let receive = tokio::spawn(async move {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let (mut buf, mut received) = (vec![0u8; 256 * 1024], 0usize);
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                return (received, hasher.finish());
            }
            hasher.write(&buf[..n]);
            received += n;
        }
    });
    let limit = std::time::Duration::from_secs(120);
    let sent_hash = tokio::time::timeout(limit, send).await.unwrap().unwrap();
    let (received, received_hash) = tokio::time::timeout(limit, receive).await.unwrap().unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(
        received_hash, sent_hash,
        "checksum of the echoed 64 MiB differs"
    );
    let sent = "plexus_proxy_bytes_total{service=\"echo\",direction=\"outbound\",flow=\"sent\"}";
    assert_eq!(agent_metric(&pair.a, sent), TOTAL as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_all_complete() {
    const CONNECTIONS: usize = 200;
    let Pair { a, b, mesh: _mesh } = Pair::start("echo", echo_server().await, "5s").await;
    let app = a.upstream_addr("echo").unwrap();

    // All 200 are open at once: each writes, then waits at a barrier before half-closing.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let message = vec![(i % 251) as u8; 16 * 1024];
                let mut stream = TcpStream::connect(app).await.unwrap();
                stream.write_all(&message).await.unwrap();
                barrier.wait().await;
                stream.shutdown().await.unwrap();
                let mut reply = Vec::new();
                match stream.read_to_end(&mut reply).await {
                    Ok(_) if reply == message => Ok(()),
                    Ok(_) => Err(format!("client {i}: reply differs ({} bytes)", reply.len())),
                    Err(e) => Err(format!("client {i}: {e}")),
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for client in clients {
        if let Err(e) = tokio::time::timeout(PATIENCE, client)
            .await
            .unwrap()
            .unwrap()
        {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} failed: {failures:?}\n--- node-a ---\n{}\n--- node-b ---\n{}",
        failures.len(),
        a.telemetry.render(),
        b.telemetry.render()
    );
    let completed =
        "plexus_streams_total{direction=\"inbound\",service=\"echo\",outcome=\"completed\"}";
    assert!(
        eventually(PATIENCE, async || agent_metric(&b, completed)
            == CONNECTIONS as f64)
        .await
    );
    assert_eq!(
        agent_metric(&a, "plexus_connections_total{direction=\"outbound\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_spread_connections_over_endpoints() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let b = mesh
        .agent(&mesh.node("node-b"), &service("echo", echo))
        .await;
    let c = mesh
        .agent(&mesh.node("node-c"), &service("echo", echo))
        .await;
    let a = mesh
        .agent(
            &mesh.node("node-a"),
            &upstream("echo", &[b.quic_addr, c.quic_addr], "2s"),
        )
        .await;
    let app = a.upstream_addr("echo").unwrap();
    // Ten connections open at once: each open connection counts as load on its endpoint, so
    // the balancer (P2C over latency × open connections) spreads them.
    let mut open = Vec::new();
    for i in 0..10u8 {
        let mut tcp = TcpStream::connect(app).await.unwrap();
        tcp.write_all(&[i; 100]).await.unwrap();
        let mut reply = [0u8; 100];
        tcp.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [i; 100]);
        open.push(tcp);
    }
    drop(open);
    let completed =
        "plexus_streams_total{direction=\"inbound\",service=\"echo\",outcome=\"completed\"}";
    assert!(
        eventually(PATIENCE, async || {
            agent_metric(&b, completed) + agent_metric(&c, completed) == 10.0
        })
        .await
    );
    let (on_b, on_c) = (agent_metric(&b, completed), agent_metric(&c, completed));
    assert!(on_b >= 4.0 && on_c >= 4.0, "b took {on_b}, c took {on_c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_talk_over_ipv6() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let on_v6 = |node: &str, extra: &str| {
        let top = "listen = \"[::1]:0\"\nadmin = \"[::1]:0\"\n";
        mesh.config(node, &mesh.node(node), top, extra)
    };
    let b = start(&on_v6("node-b", &service("echo", echo))).await;
    assert!(b.quic_addr.is_ipv6());
    let upstream_v6 = format!(
        "[[upstream]]\nservice = \"echo\"\nlisten = \"[::1]:0\"\nendpoints = [\"{}\"]\n",
        b.quic_addr
    );
    let a = start(&on_v6("node-a", &upstream_v6)).await;
    let app = a.upstream_addr("echo").unwrap();
    assert!(app.is_ipv6());
    assert_eq!(exchange(app, b"over v6").await.unwrap(), b"over v6");
    let (code, _) = admin_get(a.admin_addr, "/readyz").await;
    assert_eq!(code, 200);
}
