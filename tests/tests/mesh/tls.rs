//! Peers that cannot prove they belong to the mesh are refused, and every refusal is counted.

use std::net::SocketAddr;

use plexus_agent::config::TransportSettings;
use plexus_agent::pki::{self, NodeCredentials, TrustBundle, Validity};
use plexus_agent::telemetry::Telemetry;
use plexus_protocol::frame::FrameMessage;
use plexus_protocol::{NodeId, ServiceName, SpiffeId, StreamHeader, TrustDomain};
use plexus_tests::*;
use std::sync::Arc;
use time::OffsetDateTime;

use crate::PATIENCE;

fn settings() -> TransportSettings {
    TransportSettings {
        idle_timeout: std::time::Duration::from_secs(5),
        keep_alive: std::time::Duration::from_secs(1),
    }
}

/// The client side of a test peer: plexus's own client config for `node`, trusting `trust`.
fn client_as(node: &NodeFiles, trust: &TrustBundle) -> quinn::ClientConfig {
    let creds =
        NodeCredentials::load(&node.dir.join("node.pem"), &node.dir.join("node.key")).unwrap();
    let creds = pki::LiveCredentials::new(&creds).unwrap();
    plexus_agent::transport::client_config(&trust.live(), &creds, &settings(), &Telemetry::new())
        .unwrap()
}

/// A client that checks the server like an agent does but is built by hand: with no client
/// certificate, or with a certificate and rustls's default session resumption left on.
fn custom_client(trust: &TrustBundle, creds: Option<&NodeCredentials>) -> quinn::ClientConfig {
    let (_, verifier) = pki::peer_verifiers(&trust.live(), &Telemetry::new());
    let builder = rustls::ClientConfig::builder_with_provider(pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match creds {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![plexus_agent::transport::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(quic))
}

/// Dials `target` from `endpoint` with `client` and tries to open a proxied stream to `echo`.
/// Returns whether the stream was answered.
async fn try_stream(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    target: SocketAddr,
) -> bool {
    let attempt = async {
        let connection = endpoint
            .connect_with(client, target, "plexus.mesh")
            .ok()?
            .await
            .ok()?;
        let (mut send, mut recv) = connection.open_bi().await.ok()?;
        let header = StreamHeader {
            service: ServiceName::new("echo").unwrap(),
            open_budget_ms: 2000,
            protocol: plexus_protocol::AppProtocol::Tcp,
        };
        send.write_all(&header.to_frame_bytes()).await.ok()?;
        let mut reply = [0u8; 8];
        let answered = recv.read_exact(&mut reply).await.ok();
        connection.close(0u32.into(), b"done");
        answered
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .expect("attempt ends")
        .is_some()
}

/// Dials `target` presenting `node`'s certificate while trusting `trust`, from a fresh endpoint.
async fn try_as(node: &NodeFiles, trust: &TrustBundle, target: SocketAddr) -> bool {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let answered = try_stream(&endpoint, client_as(node, trust), target).await;
    endpoint.close(0u32.into(), b"done");
    answered
}

/// A mesh with node-b serving `echo`, and the mesh's trust bundle for test clients.
async fn serving_echo() -> (Mesh, plexus_agent::RunningAgent, TrustBundle) {
    let mesh = Mesh::new();
    let b = mesh
        .agent(&mesh.node("node-b"), &service("echo", echo_server().await))
        .await;
    let trust = TrustBundle::load(&mesh.ca_dir().join("ca.pem")).unwrap();
    (mesh, b, trust)
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
    let (mesh, b, trust) = serving_echo().await;

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
        &b"GET /healthz HTTP/1.1\r\nHost: plexus.example\r\n\r\n"[..], // long plain text
        &[0u8; 1400][..],
        &fake_long_header[..],
    ] {
        socket.send_to(datagram, b.quic_addr).unwrap();
    }
    assert!(eventually(PATIENCE, async || inbound_failures(&b, "not_quic") == 4.0).await);
    // The agent is unharmed: metrics still answer and a real peer still gets through.
    let (code, _) = admin_get(b.admin_addr, "/healthz").await;
    assert_eq!(code, 200);
    let trust = TrustBundle::load(&mesh.ca_dir().join("ca.pem")).unwrap();
    assert!(try_as(&mesh.node("node-a"), &trust, b.quic_addr).await);
    // Real QUIC traffic adds nothing: the classifier and the endpoint share one key.
    assert_eq!(inbound_failures(&b, "not_quic"), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_is_refused_and_counted() {
    let (_mesh, b, trust) = serving_echo().await;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(!try_stream(&endpoint, custom_client(&trust, None), b.quic_addr).await);
    assert!(
        eventually(PATIENCE, async || inbound_failures(&b, "no_certificate")
            == 1.0)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_cannot_ride_on_a_resumed_session() {
    let (mesh, b, trust) = serving_echo().await;
    let now = OffsetDateTime::now_utc();
    let short = mesh.node_valid(
        "short-lived",
        Validity {
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::seconds(6),
        },
    );
    let creds =
        NodeCredentials::load(&short.dir.join("node.pem"), &short.dir.join("node.key")).unwrap();
    // This client keeps rustls's default resumption: were the agent to issue session tickets,
    // the second connection would resume and skip certificate verification.
    let client = custom_client(&trust, Some(&creds));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(
        try_stream(&endpoint, client.clone(), b.quic_addr).await,
        "valid at first"
    );

    let expiry = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(creds.info.not_after as u64 + 1);
    assert!(eventually(PATIENCE, async || std::time::SystemTime::now() > expiry).await);
    assert!(
        !try_stream(&endpoint, client, b.quic_addr).await,
        "refused once expired"
    );
    assert!(eventually(PATIENCE, async || inbound_failures(&b, "expired") == 1.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refused_by_its_peer_backs_off_instead_of_redialing_every_connection() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let b = mesh
        .agent(&mesh.node("node-b"), &service("echo", echo))
        .await;
    // node-a holds a certificate from another CA: it accepts node-b, node-b refuses it, after
    // quinn on node-a already considers the handshake done.
    let other = Mesh::new();
    let impostor = other.node("node-a");
    let top = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
    let path = mesh.path().join("impostor.toml");
    let d = impostor.dir.display();
    // Its bundle trusts both CAs: its own certificate checks out locally, and node-b's too.
    let ca = mesh.path().join("both-cas.pem");
    let bundle = [mesh.ca_dir().join("ca.pem"), other.ca_dir().join("ca.pem")]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(&ca, bundle).unwrap();
    std::fs::write(
        &path,
        format!(
            "{top}[tls]\nca = \"{}\"\ncert = \"{d}/node.pem\"\nkey = \"{d}/node.key\"\n{}",
            ca.display(),
            upstream("echo", &[b.quic_addr], "2s")
        ),
    )
    .unwrap();
    let a = start(&path).await;
    let app = a.upstream_addr("echo").unwrap();
    // App connections keep coming until the agent is seen backing off (bounded).
    let backoff =
        "plexus_streams_refused_total{direction=\"outbound\",service=\"echo\",reason=\"backoff\"}";
    let mut attempts = 0.0;
    while agent_metric(&a, backoff) == 0.0 && attempts < 50.0 {
        attempts += 1.0;
        let reply = tokio::time::timeout(PATIENCE, exchange(app, b"hello"))
            .await
            .unwrap();
        assert!(
            reply.map(|r| r.is_empty()).unwrap_or(true),
            "nothing may get through"
        );
    }
    assert!(agent_metric(&a, backoff) >= 1.0, "{}", a.telemetry.render());
    let refused =
        "plexus_handshake_failures_total{direction=\"outbound\",reason=\"refused_by_peer\"}";
    assert!(agent_metric(&a, refused) >= 1.0, "{}", a.telemetry.render());
    // Refused app connections cost node-b fewer handshakes than there were connections.
    let handshakes = inbound_failures(&b, "unknown_ca");
    assert!(
        handshakes >= 1.0 && handshakes < attempts,
        "{handshakes} handshakes for {attempts} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_stream_header_is_refused_and_the_connection_still_serves() {
    let (mesh, b, trust) = serving_echo().await;
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = client_as(&mesh.node("node-a"), &trust);
    let connection = endpoint
        .connect_with(client, b.quic_addr, "plexus.mesh")
        .unwrap()
        .await
        .unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],                        // not a frame
        &[b'P', b'X', 1, 1, 0x7f, 0xff, 0xff, 0xff][..],       // declares 2 GiB
        &[b'P', b'X', 9, 1, 0, 0, 0, 0][..],                   // unknown version
        &[b'P', b'X', 1, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff][..], // undecodable payload
    ] {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(garbage).await.unwrap();
        send.finish().unwrap();
        let mut buf = [0u8; 8];
        assert!(
            recv.read_exact(&mut buf).await.is_err(),
            "the stream is reset, not answered"
        );
    }
    let bad =
        "plexus_streams_refused_total{direction=\"inbound\",service=\"\",reason=\"bad_header\"}";
    assert!(eventually(PATIENCE, async || agent_metric(&b, bad) == 4.0).await);
    // The same connection still carries a well-formed stream.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let header = StreamHeader {
        service: ServiceName::new("echo").unwrap(),
        open_budget_ms: 2000,
        protocol: plexus_protocol::AppProtocol::Tcp,
    };
    send.write_all(&header.to_frame_bytes()).await.unwrap();
    let mut reply = [0u8; 8];
    recv.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..2], b"PX");
}

/// A reload (SIGHUP) serves a leaf the operator renewed for the same key from the next
/// handshake on, keeps established connections, and refuses a leaf for a new key (the key
/// seals gossip and derives endpoint keys: that needs a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_renewed_leaf_without_dropping_connections() {
    use plexus_agent::config::AgentConfig;
    use plexus_protocol::{CommittedState, Decision, DecisionKind};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    let (mesh, serving, _) = serving_echo().await;
    let b = mesh.node("caller");
    let caller = mesh
        .agent(&b, &upstream("echo", &[serving.quic_addr], "2s"))
        .await;
    let app = caller.upstream_addr("echo").unwrap();
    assert!(echoes_within(app, b"before", PATIENCE).await);
    let opened = agent_metric(&serving, "plexus_connections_total{direction=\"inbound\"}");

    // The operator renews node-b's leaf for its key, as `plexus pki` would with the CA.
    let node = NodeId::new("node-b").unwrap();
    let ca = mesh.ca_dir();
    let (root, key) = pki::ca::root_from_files(&ca.join("ca.pem"), &ca.join("ca.key")).unwrap();
    let mut state = CommittedState::default();
    state.apply(
        1,
        1,
        &Decision {
            kind: DecisionKind::TrustInit {
                root,
                key,
                tokens: vec![],
            },
            reason: "test".into(),
            evidence: vec![],
            proposer: node.clone(),
            proposed_at_ms: 0,
        },
    );
    let dir = mesh.path().join("node-b");
    let node_key = PrivateKeyDer::from_pem_file(dir.join("node.key")).unwrap();
    let csr = pki::ca::make_request(&node_key, &node).unwrap();
    let leaf = pki::ca::sign_request(
        &state.trust,
        &TrustDomain::new("test.plexus").unwrap(),
        &node,
        &csr,
        std::time::Duration::from_secs(7200),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let renewed = pki::cert_info(&leaf).unwrap().serial;
    let pem = |der: &[u8]| {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(dir.join("node.pem"), pem(&leaf)).unwrap();
    let config = AgentConfig::load(&mesh.path().join("node-b.toml")).unwrap();
    let applied = serving.reload(&config);
    assert!(
        applied.contains(&format!("certificate reloaded (serial {renewed}")),
        "{applied}"
    );
    // The established connection carries on; a new one sees the renewed leaf.
    assert!(echoes_within(app, b"after", PATIENCE).await);
    assert_eq!(
        agent_metric(&serving, "plexus_connections_total{direction=\"inbound\"}"),
        opened,
        "the caller's connection was kept"
    );
    let (_, certs) = admin_get(serving.admin_addr, "/v1/certs").await;
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs["leaf"]["serial"], renewed.as_str());
    let (peer, _) = {
        let trust = TrustBundle::load(&ca.join("ca.pem")).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client_as(&b, &trust));
        let connection = endpoint
            .connect(serving.quic_addr, "plexus")
            .unwrap()
            .await
            .unwrap();
        let identity = connection.peer_identity().unwrap();
        let chain = identity
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .unwrap();
        (pki::cert_info(&chain[0]).unwrap().serial, endpoint)
    };
    assert_eq!(peer, renewed, "a new handshake sees the renewed leaf");

    // A leaf for another key is refused, and the renewed one stays.
    let other = mesh.node_valid("node-b", Validity::starting_now(hours(3)));
    let config = AgentConfig::load(&mesh.path().join("node-b.toml")).unwrap();
    assert_eq!(other.id, "node-b");
    let applied = serving.reload(&config);
    assert!(applied.contains("a new key needs a restart"), "{applied}");
    let (_, certs) = admin_get(serving.admin_addr, "/v1/certs").await;
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs["leaf"]["serial"], renewed.as_str());
}
