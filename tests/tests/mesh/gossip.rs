//! Gossip with real agents: five `plexus` processes find each other from one seed, discover
//! each other's services, and drop a node that becomes unready, crashes (kill -9) or leaves
//! (SIGTERM). In-process agents face a peer that lies about its identity and one that sends
//! oversized or malformed gossip.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plexus_agent::config::TransportSettings;
use plexus_agent::gossip::transport as gossip_transport;
use plexus_agent::pki::{NodeCredentials, TrustBundle};
use plexus_agent::telemetry::Telemetry;
use plexus_agent::transport::{bind_endpoint, PeerPool};
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{GossipMessage, NodeId};
use plexus_tests::*;
use serde_json::Value;

use crate::PATIENCE;

/// An echo service that can be stopped (its port then refuses connections).
async fn stoppable_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

async fn json(admin: SocketAddr, path: &str) -> Value {
    let (code, body) = admin_get(admin, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Node IDs routable for `service` in the agent's view.
async fn routable(admin: SocketAddr, service: &str) -> Vec<String> {
    let services = json(admin, "/v1/services").await;
    let mut nodes: Vec<String> = services["services"][service]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["routable"] == true)
        .map(|e| e["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    nodes
}

async fn member_state(admin: SocketAddr, node: &str) -> Option<String> {
    let peers = json(admin, "/v1/peers").await;
    peers["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == node)
        .map(|m| m["state"].as_str().unwrap().to_owned())
}

fn names(ids: &[usize]) -> Vec<String> {
    ids.iter().map(|i| format!("n{i}")).collect()
}

/// Polls every agent in `admins` until `service` routes to exactly `expected`; returns how
/// long that took, or `None` after `limit`.
async fn all_route_to(
    admins: &[SocketAddr],
    service: &str,
    expected: &[String],
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let converged = eventually(limit, async || {
        for admin in admins {
            if routable(*admin, service).await != expected {
                return false;
            }
        }
        true
    })
    .await;
    converged.then(|| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agents_converge_and_drop_unready_crashed_and_leaving_nodes() {
    let mesh = Mesh::new();
    let quic: Vec<SocketAddr> = (0..5)
        .map(|_| format!("127.0.0.1:{}", free_port(true)).parse().unwrap())
        .collect();
    let mut backends = Vec::new();
    let mut agents = Vec::new();
    for i in 0..5 {
        let (echo, task) = stoppable_echo().await;
        backends.push(task);
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
        // Everyone knows only n0; n0 knows nobody.
        let seeds = if i == 0 {
            String::new()
        } else {
            format!("seeds = [\"{}\"]\n", quic[0])
        };
        let top = format!(
            "listen = \"{}\"\nadmin = \"{admin}\"\nzone = \"z{}\"\n{seeds}",
            quic[i],
            i % 2
        );
        let extra = format!(
            "[[service]]\nname = \"echo\"\naddress = \"{echo}\"\nversion = \"v{i}\"\nhealth = {{ tcp = true, interval = \"200ms\" }}\n\
             [[upstream]]\nservice = \"echo\"\nlisten = \"127.0.0.1:0\"\ntimeout = \"1s\"\ncaller = \"web\"\n"
        );
        let node = format!("n{i}");
        let config = mesh.config(&node, &mesh.node(&node), &top, &extra);
        agents.push(AgentProcess::spawn(&config, admin).await);
    }
    let admins: Vec<SocketAddr> = agents.iter().map(|a| a.admin).collect();

    let all = names(&[0, 1, 2, 3, 4]);
    let took = all_route_to(&admins, "echo", &all, PATIENCE).await;
    assert!(
        took.is_some(),
        "the five agents did not converge on each other's services"
    );
    eprintln!("five agents converged in {took:?}");
    let peers = json(admins[2], "/v1/peers").await;
    let member = peers["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "n3")
        .unwrap()
        .clone();
    assert_eq!(member["summary"]["zone"], "z1");
    assert_eq!(member["summary"]["services"][0]["version"], "v3");
    assert!(member["summary"]["agent_rss_kib"].as_u64().unwrap() > 0);
    assert_eq!(
        member["summary"]["cert_serial"].as_array().unwrap().len(),
        16
    );
    let metrics = admin_get(admins[0], "/metrics").await.1;
    assert_eq!(metric(&metrics, "plexus_gossip_live_peers"), 4.0);
    assert!(metric(&metrics, "plexus_gossip_bytes_total{direction=\"in\"}") > 0.0);
    assert!(
        metric(
            &metrics,
            "plexus_gossip_summary_bytes{key=\"plexus:summary\"}"
        ) > 0.0
    );

    // Traffic through discovery (no static endpoints) shows up in the dependency map.
    let (code, status) = admin_get(admins[1], "/v1/status").await;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    let app: SocketAddr = status["upstreams"][0]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(status["upstreams"][0]["endpoint_source"], "gossip");
    for _ in 0..10 {
        assert_eq!(exchange(app, b"ping").await.unwrap(), b"ping");
    }
    let mapped = eventually(PATIENCE, async || {
        let graph = json(admins[4], "/v1/graph").await;
        graph["edges"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["caller"] == "web" && e["callee"] == "echo")
        })
    })
    .await;
    assert!(
        mapped,
        "the web -> echo edge never reached n4's dependency map"
    );
    let (code, out, _) = run_plexus(&[
        "ctl",
        "--admin",
        &admins[4].to_string(),
        "graph",
        "--format",
        "dot",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"web\" -> \"echo\""), "{out}");
    let (code, out, _) = run_plexus(&["ctl", "--admin", &admins[0].to_string(), "peers"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 6, "{out}");

    // n2's service stops answering: n2 stays a live member but leaves every endpoint set.
    backends[2].abort();
    let rest = names(&[0, 1, 3, 4]);
    let took = all_route_to(&admins, "echo", &rest, PATIENCE).await;
    assert!(took.is_some(), "unready n2 stayed in endpoint sets");
    assert_eq!(
        member_state(admins[0], "n2").await.as_deref(),
        Some("alive")
    );

    // n4 crashes: out of every routing table within 5 s (gossip defaults: 500 ms, phi 8).
    agents[4].kill();
    let survivors: Vec<SocketAddr> = admins[..4].to_vec();
    let rest = names(&[0, 1, 3]);
    let took = all_route_to(&survivors, "echo", &rest, Duration::from_secs(10)).await;
    eprintln!("crashed n4 left every routing table in {took:?}");
    let took = took.expect("crashed n4 still routed after 10 s");
    assert!(
        took <= Duration::from_secs(5),
        "crash detection took {took:?}"
    );
    assert_eq!(member_state(admins[0], "n4").await.as_deref(), Some("dead"));

    // n3 leaves gracefully (SIGTERM): peers drop it at once, as left, not dead.
    let sigterm = std::process::Command::new("kill")
        .args(["-TERM", &agents[3].pid().to_string()])
        .status()
        .unwrap();
    assert!(sigterm.success());
    let survivors: Vec<SocketAddr> = admins[..3].to_vec();
    let rest = names(&[0, 1]);
    let took = all_route_to(&survivors, "echo", &rest, PATIENCE).await;
    eprintln!("leaving n3 left every routing table in {took:?}");
    let took = took.expect("leaving n3 still routed");
    assert!(
        took < Duration::from_secs(2),
        "a graceful leave took {took:?}"
    );
    for admin in &survivors {
        assert_eq!(member_state(*admin, "n3").await.as_deref(), Some("left"));
    }
    let metrics = admin_get(admins[0], "/metrics").await.1;
    assert!(
        metric(
            &metrics,
            "plexus_gossip_member_transitions_total{state=\"dead\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "plexus_gossip_member_transitions_total{state=\"left\"}"
        ) >= 1.0
    );
}

/// A raw mesh peer: an endpoint with `node`'s certificate, dialing `target` directly.
async fn raw_peer(mesh: &Mesh, node: &str) -> (quinn::Endpoint, PeerPool) {
    let files = mesh.node(node);
    let trust = TrustBundle::load(&files.dir.join("ca.pem")).unwrap();
    let credentials =
        NodeCredentials::load(&files.dir.join("node.pem"), &files.dir.join("node.key")).unwrap();
    let settings = TransportSettings {
        idle_timeout: Duration::from_secs(10),
        keep_alive: Duration::from_secs(2),
    };
    let telemetry = Telemetry::new();
    let credentials = plexus_agent::pki::LiveCredentials::new(&credentials).unwrap();
    let endpoint = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &trust.live(),
        &credentials,
        &settings,
        &telemetry,
    )
    .unwrap();
    (endpoint.clone(), PeerPool::new(endpoint, telemetry))
}

async fn send_uni(pool: &PeerPool, to: SocketAddr, bytes: &[u8]) {
    let peer = pool.connection(to, Duration::from_secs(5)).await.unwrap();
    let mut send = tokio::time::timeout(Duration::from_secs(5), peer.connection.open_uni())
        .await
        .expect("stream credit within 5 s")
        .unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

fn rejected(agent: &plexus_agent::RunningAgent, reason: &str) -> f64 {
    agent_metric(
        agent,
        &format!("plexus_gossip_rejected_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_gossip_as_another_node() {
    let mesh = Mesh::new();
    let honest = mesh.agent(&mesh.node("honest"), "").await;
    // Make node-b's certificate exist, so only the claim is false.
    let _ = mesh.node("node-b");

    // 1. node-a's certificate, "node-b" in the gossip frame: refused before chitchat sees it.
    let (endpoint, pool) = raw_peer(&mesh, "node-a").await;
    let frame = GossipMessage {
        sender: NodeId::new("node-b").unwrap(),
        generation: 1,
        chitchat: vec![0; 16],
    }
    .to_frame_bytes();
    send_uni(&pool, honest.quic_addr, &frame).await;
    let counted = eventually(PATIENCE, async || {
        rejected(&honest, "node_id_mismatch") == 1.0
    })
    .await;
    assert!(counted, "{}", honest.telemetry.render());

    // 2. A real chitchat speaking as node-b inside frames honestly sent as node-a: its state
    // carries node-a's certificate, which does not prove node-b, so node-b never becomes a
    // member and the refusal is counted.
    let telemetry = Telemetry::new();
    let wire = gossip_transport::wire(
        "127.0.0.1:1".parse().unwrap(),
        NodeId::new("node-a").unwrap(),
        7,
        telemetry.clone(),
    )
    .await
    .unwrap();
    let pool = std::sync::Arc::new(pool);
    // The impostor answers too: replies from the honest agent reach its chitchat.
    let inbox = wire.inbox.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                let remote = connection.remote_address();
                let peer = plexus_agent::transport::peer_node_id(&connection).unwrap();
                while let Ok(recv) = connection.accept_uni().await {
                    inbox.accept_stream(&peer, remote, recv).await;
                }
            });
        }
    });
    tokio::spawn(gossip_transport::decode(
        wire.raw,
        wire.decoded,
        telemetry.clone(),
    ));
    tokio::spawn(gossip_transport::deliver(
        wire.outbound,
        pool.clone(),
        telemetry.clone(),
        Duration::from_secs(2),
    ));
    let a_files = mesh.node("node-a");
    let a_creds =
        NodeCredentials::load(&a_files.dir.join("node.pem"), &a_files.dir.join("node.key"))
            .unwrap();
    let config = chitchat::ChitchatConfig {
        chitchat_id: chitchat::ChitchatId::new("node-b", 7, "127.0.0.1:1".parse().unwrap()),
        cluster_id: TRUST_DOMAIN.into(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: "127.0.0.1:1".parse().unwrap(),
        seed_nodes: vec![honest.quic_addr.to_string()],
        failure_detector_config: chitchat::FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V1,
    };
    let impostor = chitchat::spawn_chitchat(
        config,
        vec![(
            plexus_agent::gossip::seal::CERT_KEY.to_owned(),
            plexus_agent::gossip::seal::cert_value(&a_creds.chain[0]),
        )],
        &wire.transport,
    )
    .await
    .unwrap();
    let counted = eventually(PATIENCE, async || {
        rejected(&honest, "node_id_mismatch") >= 2.0
    })
    .await;
    assert!(counted, "{}", honest.telemetry.render());
    let members = honest.view().borrow().members.clone();
    assert!(
        members.iter().all(|m| m.node_id != "node-b"),
        "the impostor became a member: {members:?}"
    );
    let _ = impostor.shutdown().await;
    honest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_gossip_is_dropped_and_counted() {
    let mesh = Mesh::new();
    let target = mesh.agent(&mesh.node("target"), "").await;
    let (_endpoint, pool) = raw_peer(&mesh, "sender").await;

    // A header announcing 100 MiB: refused from eight bytes.
    let mut oversized = vec![b'P', b'X', 1, 3];
    oversized.extend_from_slice(&(100u32 << 20).to_be_bytes());
    send_uni(&pool, target.quic_addr, &oversized).await;
    // A well-formed frame whose chitchat bytes are garbage.
    let garbage = GossipMessage {
        sender: NodeId::new("sender").unwrap(),
        generation: 1,
        chitchat: b"this is not a chitchat message".to_vec(),
    }
    .to_frame_bytes();
    send_uni(&pool, target.quic_addr, &garbage).await;
    // Random bytes instead of a frame.
    send_uni(&pool, target.quic_addr, b"\x00\x01garbage that is no frame").await;

    let counted = eventually(PATIENCE, async || {
        rejected(&target, "oversized") == 1.0 && rejected(&target, "malformed") == 2.0
    })
    .await;
    assert!(counted, "{}", target.telemetry.render());

    // The agent is unharmed: a real peer still joins and is seen.
    let top = format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
        target.quic_addr
    );
    let friend = start(&mesh.config("friend", &mesh.node("friend"), &top, "")).await;
    let joined = eventually(PATIENCE, async || target.view().borrow().live_peers() == 1).await;
    assert!(joined, "a real peer could not join after the bad input");
    friend.shutdown().await;
    target.shutdown().await;
}
