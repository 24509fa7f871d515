//! What an app sees when its connection cannot be carried: a prompt close, and a counted reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plexus_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::PATIENCE;

/// Connects to `app` and returns how long until the connection was closed on us (EOF or reset).
async fn closed_within(app: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut stream = match TcpStream::connect(app).await {
        Ok(stream) => stream,
        // Refused so fast that the reset arrived before connect() returned.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
        Err(e) => panic!("connect to {app}: {e}"),
    };
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("unexpected {n} bytes from a connection that should be refused"),
        Err(_) => panic!("the client connection was not closed within {PATIENCE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_refused_and_counted_on_both_sides() {
    let mesh = Mesh::new();
    let b = mesh.agent(&mesh.node("node-b"), "").await;
    let a = mesh
        .agent(
            &mesh.node("node-a"),
            &upstream("ghost", &[b.quic_addr], "2s"),
        )
        .await;
    let took = closed_within(a.upstream_addr("ghost").unwrap()).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let refused = "plexus_streams_refused_total{direction=\"outbound\",service=\"ghost\",reason=\"unknown_service\"}";
    assert_eq!(agent_metric(&a, refused), 1.0);
    let no_endpoint =
        "plexus_streams_total{direction=\"outbound\",service=\"ghost\",outcome=\"no_endpoint\"}";
    assert_eq!(agent_metric(&a, no_endpoint), 1.0);
    let served = "plexus_streams_refused_total{direction=\"inbound\",service=\"ghost\",reason=\"unknown_service\"}";
    assert!(eventually(PATIENCE, async || agent_metric(&b, served) == 1.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_local_connection_is_refused_and_counted() {
    let mesh = Mesh::new();
    let closed_port: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let b = mesh
        .agent(&mesh.node("node-b"), &service("down", closed_port))
        .await;
    let a = mesh
        .agent(
            &mesh.node("node-a"),
            &upstream("down", &[b.quic_addr], "2s"),
        )
        .await;
    let took = closed_within(a.upstream_addr("down").unwrap()).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let served = "plexus_streams_refused_total{direction=\"inbound\",service=\"down\",reason=\"local_connect_refused\"}";
    assert!(eventually(PATIENCE, async || agent_metric(&b, served) == 1.0).await);
    let refused = "plexus_streams_refused_total{direction=\"outbound\",service=\"down\",reason=\"local_connect_refused\"}";
    assert_eq!(agent_metric(&a, refused), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_closes_the_client_within_the_timeout_then_backs_off() {
    let mesh = Mesh::new();
    let nobody: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
    let a = mesh
        .agent(&mesh.node("node-a"), &upstream("echo", &[nobody], "500ms"))
        .await;
    let app = a.upstream_addr("echo").unwrap();
    let took = closed_within(app).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let failed = "plexus_streams_refused_total{direction=\"outbound\",service=\"echo\",reason=\"dial_failed\"}";
    assert_eq!(agent_metric(&a, failed), 1.0);
    // Right after a failed dial the peer is in backoff: the next client is closed at once.
    let took = closed_within(app).await;
    assert!(took < Duration::from_millis(300), "{took:?}");
    let backoff =
        "plexus_streams_refused_total{direction=\"outbound\",service=\"echo\",reason=\"backoff\"}";
    assert_eq!(agent_metric(&a, backoff), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_skipped_for_the_next_one() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let without = mesh.agent(&mesh.node("node-c"), "").await;
    let with = mesh
        .agent(&mesh.node("node-b"), &service("echo", echo))
        .await;
    let a = mesh
        .agent(
            &mesh.node("node-a"),
            &upstream("echo", &[without.quic_addr, with.quic_addr], "2s"),
        )
        .await;
    let app = a.upstream_addr("echo").unwrap();
    let refused = "plexus_streams_refused_total{direction=\"inbound\",service=\"echo\",reason=\"unknown_service\"}";
    // Every exchange succeeds. Two endpoints that have not answered yet are equal guesses, so
    // the refusing one is drawn sooner or later, and its refusal sends the exchange on.
    let mut i = 0u8;
    while agent_metric(&without, refused) < 1.0 && i < 40 {
        assert_eq!(exchange(app, &[i; 10]).await.unwrap(), vec![i; 10]);
        i += 1;
    }
    assert!(eventually(PATIENCE, async || agent_metric(&without, refused) >= 1.0).await);
    // The balancer then prefers the endpoint that answers.
    let before = agent_metric(&without, refused);
    for i in 0..4u8 {
        assert_eq!(exchange(app, &[i; 10]).await.unwrap(), vec![i; 10]);
    }
    assert!(agent_metric(&without, refused) <= before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_admin_client_is_cut_off_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let mesh = Mesh::new();
    let b = mesh.agent(&mesh.node("node-b"), "").await;
    let mut stalled = TcpStream::connect(b.admin_addr).await.unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap(); // never finished
    let (code, _) = admin_get(b.admin_addr, "/healthz").await;
    assert_eq!(code, 200, "another client is served meanwhile");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // hyper may answer 408 before closing
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled admin connection was never closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
