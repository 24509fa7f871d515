//! Peers that cannot prove they belong to the mesh are refused, and every refusal is counted.

use std::net::SocketAddr;

use plexus_agent::config::TransportSettings;
use plexus_agent::pki::{self, NodeCredentials, TrustBundle, Validity};
use plexus_agent::telemetry::Telemetry;
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{NodeId, ServiceName, SpiffeId, StreamHeader, TrustDomain};
use plexus_tests::*;
use time::OffsetDateTime;

use crate::PATIENCE;

fn settings() -> TransportSettings {
    TransportSettings {
        idle_timeout: std::time::Duration::from_secs(5),
        keep_alive: std::time::Duration::from_secs(1),
    }
}

/// Dials `target` presenting `node`'s certificate while trusting `trust`, and tries to open a
/// proxied stream. Returns whether the stream was answered.
async fn try_as(node: &NodeFiles, trust: &TrustBundle, target: SocketAddr) -> bool {
    let creds =
        NodeCredentials::load(&node.dir.join("node.pem"), &node.dir.join("node.key")).unwrap();
    let client =
        plexus_agent::transport::client_config(trust, &creds, &settings(), &Telemetry::new())
            .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let attempt = async {
        let connection = endpoint.connect(target, "plexus.mesh").ok()?.await.ok()?;
        let (mut send, mut recv) = connection.open_bi().await.ok()?;
        let header = StreamHeader {
            service: ServiceName::new("echo").unwrap(),
        };
        send.write_all(&header.to_frame_bytes()).await.ok()?;
        let mut reply = [0u8; 8];
        recv.read_exact(&mut reply).await.ok()
    };
    let answered = tokio::time::timeout(PATIENCE, attempt)
        .await
        .expect("attempt ends")
        .is_some();
    endpoint.close(0u32.into(), b"done");
    answered
}

fn inbound_failures(agent: &plexus_agent::RunningAgent, reason: &str) -> f64 {
    agent_metric(
        agent,
        &format!("plexus_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}"),
    )
}

/// A leaf signed by the mesh's own CA but naming another trust domain.
fn leaf_of_other_domain(mesh: &Mesh) -> NodeFiles {
    let ca_pem = std::fs::read_to_string(mesh.ca_dir().join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(mesh.ca_dir().join("ca.key")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let spiffe = SpiffeId::new(
        TrustDomain::new("other.domain").unwrap(),
        NodeId::new("intruder").unwrap(),
    );
    let validity = Validity::starting_now(hours(1));
    let (cert, key) = pki::node_certificate(&issuer, &spiffe, validity).unwrap();
    let dir = mesh.path().join("other-domain-leaf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.pem"), cert).unwrap();
    std::fs::write(dir.join("node.key"), key).unwrap();
    NodeFiles {
        id: "intruder".into(),
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_bad_certificates_are_refused_and_counted() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let b = mesh
        .agent(&mesh.node("node-b"), &service("echo", echo))
        .await;
    let trust = TrustBundle::load(&mesh.ca_dir().join("ca.pem")).unwrap();

    // Control: a good certificate is answered.
    assert!(try_as(&mesh.node("node-a"), &trust, b.quic_addr).await);

    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = mesh.node_valid(
        "expired",
        Validity {
            not_before: now - day * 2,
            not_after: now - day,
        },
    );
    let not_yet = mesh.node_valid(
        "not-yet",
        Validity {
            not_before: now + day,
            not_after: now + day * 2,
        },
    );
    let foreign_mesh = Mesh::with_trust_domain(TRUST_DOMAIN); // same name, different CA
    let foreign = foreign_mesh.node("impostor");
    let other_domain = leaf_of_other_domain(&mesh);

    for (node, reason) in [
        (&expired, "expired"),
        (&not_yet, "not_yet_valid"),
        (&foreign, "unknown_ca"),
        (&other_domain, "wrong_trust_domain"),
    ] {
        assert!(
            !try_as(node, &trust, b.quic_addr).await,
            "{reason}: should be refused"
        );
        assert!(
            eventually(PATIENCE, async || inbound_failures(&b, reason) == 1.0).await,
            "{reason}: refusal not counted:\n{}",
            b.telemetry.render()
        );
    }
    let completed =
        "plexus_streams_total{direction=\"inbound\",service=\"echo\",outcome=\"completed\"}";
    assert!(
        agent_metric(&b, completed) <= 1.0,
        "no bad peer got a stream through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_to_dial_into_another_mesh() {
    let mesh = Mesh::new();
    let other = Mesh::with_trust_domain("elsewhere.plexus");
    let echo = echo_server().await;
    let stranger = other
        .agent(&other.node("stranger"), &service("echo", echo))
        .await;
    let a = mesh
        .agent(
            &mesh.node("node-a"),
            &upstream("echo", &[stranger.quic_addr], "1s"),
        )
        .await;

    let reply = exchange(a.upstream_addr("echo").unwrap(), b"secret").await;
    assert!(
        reply.is_err() || reply.unwrap().is_empty(),
        "nothing may reach the stranger"
    );
    let refused = "plexus_handshake_failures_total{direction=\"outbound\",reason=\"unknown_ca\"}";
    assert_eq!(agent_metric(&a, refused), 1.0);
    let strangers_view =
        "plexus_streams_total{direction=\"inbound\",service=\"echo\",outcome=\"completed\"}";
    assert_eq!(agent_metric(&stranger, strangers_view), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_udp_senders_are_refused_and_counted() {
    let mesh = Mesh::new();
    let b = mesh.agent(&mesh.node("node-b"), "").await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut fake_long_header = vec![0xc3, 0xde, 0xad, 0xbe, 0xef];
    fake_long_header.resize(1300, 7);
    for datagram in [
        &b"hello, is this thing on?"[..],
        &[0u8; 1400][..],
        &fake_long_header[..],
    ] {
        socket.send_to(datagram, b.quic_addr).unwrap();
    }
    assert!(eventually(PATIENCE, async || inbound_failures(&b, "not_quic") == 3.0).await);
    // The agent is unharmed: metrics still answer and a real peer still gets through.
    let (code, _) = admin_get(b.admin_addr, "/healthz").await;
    assert_eq!(code, 200);
    let trust = TrustBundle::load(&mesh.ca_dir().join("ca.pem")).unwrap();
    assert!(try_as(&mesh.node("node-a"), &trust, b.quic_addr).await);
}
