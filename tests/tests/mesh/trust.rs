//! Trust on the decision log with in-process agents: a voter brings the mesh CA into the log,
//! a new node joins with a token, leaves renew at two thirds of their life (also while the
//! leader is down), and a CA rotation completes under traffic without a failed request.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_agent::config::AgentConfig;
use plexus_agent::pki::{self, Validity};
use plexus_agent::RunningAgent;
use plexus_tests::http::{Backend, Client};
use plexus_tests::{admin_get, eventually, Mesh};
use serde_json::Value;

/// Leaves in these tests live 12 s: renewal comes due after 8.
const LEAF: &str = "12s";

async fn json(admin: std::net::SocketAddr, path: &str) -> Value {
    let (code, body) = admin_get(admin, path).await;
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn certs(agent: &RunningAgent) -> Value {
    json(agent.admin_addr, "/v1/certs").await
}

/// POSTs with the agent's admin token from its data directory.
async fn post(agent: &RunningAgent, data_dir: &Path, path: &str, body: Value) -> (u16, Value) {
    let token_file = data_dir.join("admin.token");
    let (code, text) = plexus_agent::ctl::post(agent.admin_addr, path, body, &token_file)
        .await
        .unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Three voters holding the CA key (`tls.ca_key`), each hosting `api`, with 12 s leaves.
struct Cell {
    mesh: Mesh,
    voters: Vec<Option<RunningAgent>>,
    data_dirs: Vec<PathBuf>,
    _backends: Vec<Backend>,
}

impl Cell {
    async fn start() -> Self {
        let mesh = Mesh::new();
        // `plexus pki init` writes a join token beside the CA key; the voter that brings the
        // CA into the log brings the token too.
        pki::ca::write_token_file(&mesh.ca_dir(), true).unwrap();
        let mut voters: Vec<Option<RunningAgent>> = Vec::new();
        let mut data_dirs = Vec::new();
        let mut backends = Vec::new();
        for i in 0..3 {
            let backend = Backend::start(&format!("b{i}")).await;
            let node = format!("srv-{i}");
            let files = mesh.node_valid(&node, Validity::starting_now(Duration::from_secs(12)));
            let data = mesh.path().join(format!("{node}-data"));
            let seeds = match voters.first() {
                Some(Some(first)) => format!("seeds = [\"{}\"]\n", first.quic_addr),
                _ => String::new(),
            };
            let top = format!(
                "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{seeds}",
                data.display()
            );
            let extra = format!(
                "[gossip]\ninterval = \"100ms\"\n[consensus]\nbootstrap_expect = 3\n\
                 [[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n",
                backend.addr
            );
            let path = mesh.config(&node, &files, &top, &extra);
            // The CA key and leaf lifetime go into [tls], which `Mesh::config` writes.
            let text = std::fs::read_to_string(&path).unwrap().replace(
                "[tls]\n",
                &format!(
                    "[tls]\nca_key = \"{}/ca.key\"\nleaf_lifetime = \"{LEAF}\"\n",
                    mesh.ca_dir().display()
                ),
            );
            std::fs::write(&path, text).unwrap();
            voters.push(Some(plexus_tests::start(&path).await));
            data_dirs.push(data);
            backends.push(backend);
        }
        let cell = Self {
            mesh,
            voters,
            data_dirs,
            _backends: backends,
        };
        let in_log = eventually(Duration::from_secs(30), async || {
            for agent in cell.running() {
                if certs(agent).await["ca"]["in_decision_log"] != true {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(in_log, "the mesh CA never reached the decision log");
        cell
    }

    fn running(&self) -> impl Iterator<Item = &RunningAgent> {
        self.voters.iter().flatten()
    }

    fn voter(&self, i: usize) -> &RunningAgent {
        self.voters[i].as_ref().unwrap()
    }

    /// A config for a node that only has a join token (no certificate), calling `api`.
    fn joiner_config(&self, node: &str, token_file: &Path) -> PathBuf {
        let path = self.mesh.path().join(format!("{node}.toml"));
        let text = format!(
            "node_id = \"{node}\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             data_dir = \"{data}\"\nseeds = [\"{seed}\"]\n\n[tls]\nca = \"{ca}/ca.pem\"\n\
             join_token_file = \"{token}\"\n\n[gossip]\ninterval = \"100ms\"\n\
             [[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n",
            data = self.mesh.path().join(format!("{node}-data")).display(),
            seed = self.voter(0).quic_addr,
            ca = self.mesh.ca_dir().display(),
            token = token_file.display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn leader(&self) -> usize {
        (0..3)
            .find(|&i| {
                self.voters[i]
                    .as_ref()
                    .is_some_and(|v| v.consensus.status().is_leader)
            })
            .expect("a leader")
    }
}

/// Bounded load through `app`: 2 clients, a request every 10 ms each, for at most 120 s or
/// until stopped; counts successes and failures.
fn load(
    app: std::net::SocketAddr,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    tokio::task::JoinSet<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            let mut client = Client::h1(app).await;
            for _ in 0..12_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.get("/work").await {
                    Ok(answer) if answer.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(answer) => {
                        eprintln!("failed request: {} {:?}", answer.status, answer.body);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(error) => {
                        eprintln!("failed request: {error}");
                        client = Client::h1(app).await;
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    (stop, ok, failed, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_join_renewals_and_a_ca_rotation_under_traffic_fail_no_request() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("plexus_agent::trust=debug,warn")
        .try_init();
    let cell = Cell::start().await;
    let token = cell.mesh.ca_dir().join(pki::ca::JOIN_TOKEN_FILE);

    // A new node with nothing but the CA certificate and the token joins and serves traffic.
    let path = cell.joiner_config("joiner", &token);
    let plan = AgentConfig::join_plan(&path).expect("a join is due");
    plexus_agent::trust::join::join(&plan, Duration::from_secs(30))
        .await
        .expect("the token join succeeds");
    assert!(
        AgentConfig::join_plan(&path).is_none(),
        "joined once, never again"
    );
    let joiner = plexus_tests::start(&path).await;
    let leaf = certs(&joiner).await["leaf"].clone();
    assert_eq!(leaf["spiffe_id"], "spiffe://test.plexus/node/joiner");
    let used = eventually(Duration::from_secs(10), async || {
        let tokens = json(cell.voter(0).admin_addr, "/v1/tokens").await;
        tokens["tokens"][0]["uses"] == 1
    })
    .await;
    assert!(used, "the join is recorded against its token");
    let app = joiner.upstream_addr("api").unwrap();
    let routed = eventually(Duration::from_secs(15), async || {
        let mut client = Client::h1(app).await;
        client.get("/x").await.is_ok_and(|a| a.status == 200)
    })
    .await;
    assert!(routed, "the joined node reaches api");

    // Tokens made by an operator can be revoked; revoked and expired tokens are refused.
    let data1 = cell.data_dirs[1].clone();
    let (code, made) = post(cell.voter(1), &data1, "/v1/tokens", serde_json::json!({})).await;
    assert_eq!(code, 200, "{made}");
    let revoked = made["detail"].as_str().unwrap().to_owned();
    let id = revoked.split('.').next().unwrap();
    let (code, _) = post(
        cell.voter(1),
        &data1,
        "/v1/tokens/revoke",
        serde_json::json!({"id": id}),
    )
    .await;
    assert_eq!(code, 200);
    let (code, made) = post(
        cell.voter(2),
        &cell.data_dirs[2],
        "/v1/tokens",
        serde_json::json!({"ttl": "1s"}),
    )
    .await;
    assert_eq!(code, 200, "{made}");
    let expiring = made["detail"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the token's ttl, not a convergence wait
    for (name, text, why) in [
        ("late-1", revoked, "revoked"),
        ("late-2", expiring, "expired"),
    ] {
        let file = cell.mesh.path().join(format!("{name}.token"));
        std::fs::write(&file, text).unwrap();
        let plan = AgentConfig::join_plan(&cell.joiner_config(name, &file)).unwrap();
        let refused = plexus_agent::trust::join::join(&plan, Duration::from_secs(10)).await;
        let error = refused.expect_err("a bad token is refused");
        assert!(error.contains(why), "{name}: {error}");
    }
    let (code, _) = admin_get(cell.voter(0).admin_addr, "/v1/tokens").await;
    assert_eq!(code, 200);
    // A member that does not vote cannot mint tokens, even with its own admin token.
    let joiner_data = cell.mesh.path().join("joiner-data");
    let (code, refused) = post(&joiner, &joiner_data, "/v1/tokens", serde_json::json!({})).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("joiner is not a voter"),
        "{refused}"
    );
    // Without the admin token nothing changes.
    let (code, _) = plexus_agent::ctl::post(
        cell.voter(0).admin_addr,
        "/v1/ca/rotate",
        serde_json::json!({}),
        &cell.mesh.ca_dir().join(pki::ca::JOIN_TOKEN_FILE),
    )
    .await
    .unwrap();
    assert_eq!(code, 401);

    // Continuous traffic from here on: renewals and a full rotation must not fail a request.
    let (stop, ok, failed, mut tasks) = load(app);
    let everyone = || cell.running().chain([&joiner]);
    let mut first_serials = Vec::new();
    for agent in everyone() {
        first_serials.push(certs(agent).await["leaf"]["serial"].clone());
    }
    let renewed = eventually(Duration::from_secs(30), async || {
        for (agent, first) in everyone().zip(&first_serials) {
            if certs(agent).await["leaf"]["serial"] == *first {
                return false;
            }
        }
        true
    })
    .await;
    assert!(renewed, "every agent renews its 12 s leaf");

    let (code, rotated) = post(
        cell.voter(2),
        &cell.data_dirs[2],
        "/v1/ca/rotate",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 200, "{rotated}");
    let issuer = certs(cell.voter(2)).await["ca"]["issuer"].clone();
    let reissued = eventually(Duration::from_secs(20), async || {
        for agent in everyone() {
            let c = certs(agent).await;
            if c["leaf"]["issued_by"] != issuer || c["trust_bundle"].as_array().unwrap().len() != 2
            {
                return false;
            }
        }
        true
    })
    .await;
    if !reissued {
        for agent in everyone() {
            eprintln!("{}: {}", agent.node_id, certs(agent).await);
        }
    }
    assert!(
        reissued,
        "every leaf is reissued under the new root while both are trusted"
    );
    // A second rotation waits for the first to finish.
    let (code, _) = post(
        cell.voter(0),
        &cell.data_dirs[0],
        "/v1/ca/rotate",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 409);
    let retired = eventually(Duration::from_secs(40), async || {
        for agent in everyone() {
            let bundle = certs(agent).await["trust_bundle"].clone();
            if bundle.as_array().unwrap().len() != 1 || bundle[0]["serial"] != issuer {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        retired,
        "the old root retires after the longest leaf lifetime"
    );
    // Traffic keeps flowing under the new root alone.
    let before = ok.load(Ordering::Relaxed);
    let flowing = eventually(Duration::from_secs(10), async || {
        ok.load(Ordering::Relaxed) > before + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    assert!(flowing);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests succeeded",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_while_the_leader_is_down_succeeds_after_election() {
    let mut cell = Cell::start().await;
    let leader = cell.leader();
    let mut serials = Vec::new();
    for agent in cell.running() {
        serials.push(certs(agent).await["leaf"]["serial"].clone());
    }
    // The leader goes away at once (no hand-over): the others' 12 s leaves come due while the
    // group elects a new leader, and their renewals must fail over to it.
    drop(cell.voters[leader].take());
    serials.remove(leader);
    let renewed = eventually(Duration::from_secs(30), async || {
        for (agent, first) in cell.running().zip(&serials) {
            if certs(agent).await["leaf"]["serial"] == *first {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        renewed,
        "both remaining voters renew through the new leader"
    );
    for agent in cell.running() {
        let renewals =
            plexus_tests::agent_metric(agent, "plexus_certificate_renewals_total{outcome=\"ok\"}");
        assert!(renewals >= 1.0);
    }
}
