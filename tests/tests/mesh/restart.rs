//! A serving agent killed mid-stream: the app's connection is closed, and once the agent is
//! back the caller reconnects on its own. The serving agent is a real `plexus` process.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plexus_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::PATIENCE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_serving_agent_closes_the_client_and_a_restart_is_reconnected() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let quic: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let top = format!(
        "listen = \"{quic}\"\nadmin = \"{admin}\"\n[transport]\nidle_timeout = \"2s\"\nkeep_alive = \"500ms\"\n"
    );
    let b_config = mesh.config("node-b", &mesh.node("node-b"), &top, &service("echo", echo));
    let mut b = AgentProcess::spawn(&b_config, admin).await;
    let a = mesh
        .agent(&mesh.node("node-a"), &upstream("echo", &[quic], "1s"))
        .await;
    let app = a.upstream_addr("echo").unwrap();

    // Mid-stream: the connection is carrying bytes when the serving agent dies.
    let mut client = TcpStream::connect(app).await.unwrap();
    client.write_all(b"first half").await.unwrap();
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"first half");

    b.kill();
    let killed = Instant::now();
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            // Keep the stream busy; the write or the read fails once the agent is known dead.
            if client.write_all(b"more").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the client connection stayed open after its serving agent died"
    );
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "closing took {took:?}; idle timeout is 2s"
    );
    let failed = "plexus_streams_total{direction=\"outbound\",service=\"echo\",outcome=\"failed\"}";
    // The outcome is counted once the proxy has torn down both sides: poll, bounded.
    let counted = eventually(PATIENCE, async || agent_metric(&a, failed) == 1.0).await;
    assert!(counted, "failed streams: {}", agent_metric(&a, failed));

    // Back on the same address: the caller dials again by itself.
    let _b = AgentProcess::spawn(&b_config, admin).await;
    let reconnected = echoes_within(app, b"again", Duration::from_secs(20)).await;
    assert!(
        reconnected,
        "no successful exchange after the serving agent came back"
    );
    assert_eq!(
        agent_metric(&a, "plexus_connections_total{direction=\"outbound\"}"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_says_goodbye_so_callers_notice_at_once() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let quic: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let top = format!("listen = \"{quic}\"\nadmin = \"{admin}\"\n");
    let b_config = mesh.config("node-b", &mesh.node("node-b"), &top, &service("echo", echo));
    let b = AgentProcess::spawn(&b_config, admin).await;
    let a = mesh
        .agent(&mesh.node("node-a"), &upstream("echo", &[quic], "1s"))
        .await;
    let app = a.upstream_addr("echo").unwrap();
    assert_eq!(exchange(app, b"hi").await.unwrap(), b"hi");

    // SIGTERM: the agent closes its connections with a reason before exiting.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status();
    assert!(status.unwrap().success());
    let open = "plexus_connections_open{direction=\"outbound\"}";
    assert!(
        eventually(Duration::from_secs(3), async || agent_metric(&a, open)
            == 0.0)
        .await,
        "the caller did not see the goodbye"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resets_old_connections_so_callers_redial_at_once() {
    // Idle timeouts of 60 s: only a stateless reset from the restarted agent can make the
    // caller drop its old connection within the bound below.
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let quic: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let slow_idle = "[transport]\nidle_timeout = \"60s\"\nkeep_alive = \"1s\"\n";
    let top = format!("listen = \"{quic}\"\nadmin = \"{admin}\"\n{slow_idle}");
    let b_config = mesh.config("node-b", &mesh.node("node-b"), &top, &service("echo", echo));
    let mut b = AgentProcess::spawn(&b_config, admin).await;
    let a_top = format!("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{slow_idle}");
    let a_config = mesh.config(
        "node-a",
        &mesh.node("node-a"),
        &a_top,
        &upstream("echo", &[quic], "1s"),
    );
    let a = start(&a_config).await;
    let app = a.upstream_addr("echo").unwrap();
    assert_eq!(exchange(app, b"before").await.unwrap(), b"before");

    b.kill();
    let _b = AgentProcess::spawn(&b_config, admin).await;
    let restarted = std::time::Instant::now();
    let served = echoes_within(app, b"after", Duration::from_secs(10)).await;
    assert!(
        served,
        "the caller never got through to the restarted agent"
    );
    assert!(restarted.elapsed() < Duration::from_secs(10));
    assert_eq!(
        agent_metric(&a, "plexus_connections_total{direction=\"outbound\"}"),
        2.0
    );
}

/// What SIGTERM does (`RunningAgent::shutdown`): a request in flight through a stopping agent
/// finishes, on the caller's side and on the serving side, and a stopping caller takes no new
/// app connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_agent_lets_requests_in_flight_finish() {
    use plexus_tests::http::{Backend, Client};
    let backend = Backend::start("b").await;
    backend.behaviour.set_delay(Duration::from_millis(700));
    let mesh = Mesh::new();
    let service = format!(
        "[[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n",
        backend.addr
    );
    let b = mesh.agent(&mesh.node("node-b"), &service).await;
    let caller = |node: &str| {
        let config = format!(
            "[[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             endpoints = [\"{}\"]\n",
            b.quic_addr
        );
        let (mesh, files) = (&mesh, mesh.node(node));
        async move { mesh.agent(&files, &config).await }
    };
    // A request in flight while `agent` stops: it is answered, and the stop waited for it.
    async fn in_flight_through(
        app: SocketAddr,
        agent: &plexus_agent::RunningAgent,
    ) -> tokio::task::JoinHandle<Result<plexus_tests::http::Answer, String>> {
        let mut client = Client::h1(app).await;
        let pending = tokio::spawn(async move { client.get("/slow").await });
        let started = eventually(Duration::from_secs(5), async || agent.in_flight() >= 1).await;
        assert!(started, "the request never got in flight");
        pending
    }

    // The caller stops.
    let a = caller("node-a").await;
    let app = a.upstream_addr("api").unwrap();
    let pending = in_flight_through(app, &a).await;
    let stopped_at = Instant::now();
    let stopping = tokio::spawn(a.shutdown());
    let refused = eventually(Duration::from_secs(5), async || {
        TcpStream::connect(app).await.is_err()
    })
    .await;
    assert!(refused, "a draining caller still accepts app connections");
    let answer = pending
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 200);
    stopping.await.unwrap();
    assert!(stopped_at.elapsed() < plexus_agent::agent::DRAIN_DEADLINE);

    // The serving agent stops.
    let a = caller("node-c").await;
    let app = a.upstream_addr("api").unwrap();
    let pending = in_flight_through(app, &b).await;
    b.shutdown().await;
    let answer = pending
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 200);
    assert_eq!(
        backend.behaviour.hits(),
        2,
        "each request reached the backend once"
    );
}
