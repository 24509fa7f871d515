//! `plexus demo`: a five-agent mesh on this machine, with nothing to prepare, and its feedback
//! loops at work.
//!
//! It makes a CA and certificates in a temporary directory, starts three voters (`node-1..3`,
//! each hosting `api` in front of a built-in backend) and two callers (`node-4`, `node-5`)
//! that send steady app traffic to `api`. Then one backend starts failing every request, and
//! the demo narrates what the mesh does on its own: the callers eject the endpoint, the Raft
//! leader commits a lower weight and quarantines the node on the callers' reports; then the
//! backend is repaired, the operator releases the node and traffic returns to it. The admin
//! API (and `plexus ctl`) of every agent can be used while it runs; `--hold` keeps it up.

pub mod backend;
mod load;
mod narrate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use plexus_protocol::{NodeId, TrustDomain};

use crate::config::AgentConfig;
use crate::pki::{self, IssueOptions, Validity};
use crate::RunningAgent;
use backend::DemoBackend;

const TRUST_DOMAIN: &str = "demo.plexus";
/// App traffic per caller.
const RATE: u32 = 50;
/// The longest the demo lets traffic run (it stops earlier when the story is told), and with
/// `--hold`.
const LOAD_LIMIT: Duration = Duration::from_secs(300);
const HOLD_LIMIT: Duration = Duration::from_secs(3600);

/// The mesh the demo runs.
struct DemoMesh {
    voters: Vec<RunningAgent>,
    callers: Vec<RunningAgent>,
    backends: Vec<DemoBackend>,
}

/// Runs the walk-through; with `hold`, keeps the mesh up until Ctrl-C.
pub async fn run(hold: bool) -> Result<(), String> {
    // A fresh private directory (mode 0700, unpredictable name), removed when the demo ends.
    let temp = tempfile::Builder::new()
        .prefix("plexus-demo-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let dir = temp.path().to_owned();
    let mesh = start_mesh(&dir).await?;
    let targets: Vec<SocketAddr> = mesh
        .callers
        .iter()
        .filter_map(|c| c.upstream_addr("api"))
        .collect();
    print_addresses(&mesh);
    let limit = if hold { HOLD_LIMIT } else { LOAD_LIMIT };
    let load = load::Load::start(&targets, RATE, limit);
    println!(
        "      app traffic: {RATE} requests/s through each of node-4 and node-5 to \"api\" \
         (served by node-1, node-2 and node-3)"
    );
    let story = narrate::Story::new(&mesh.voters, &mesh.callers, &mesh.backends, &load.tally);
    let outcome = story.tell(&dir).await;
    let (ok, failed) = load.tally.read();
    if hold {
        print_addresses(&mesh);
        println!("the mesh keeps running with its traffic; Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    load.stop().await;
    for agent in mesh.callers.into_iter().chain(mesh.voters) {
        agent.shutdown().await;
    }
    let total = ok + failed;
    println!(
        "done: {total} app requests, {ok} answered ({:.2} %), five agents stopped cleanly.",
        100.0 * ok as f64 / total.max(1) as f64
    );
    outcome
}

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}/6] {}", text.as_ref());
}

async fn start_mesh(dir: &Path) -> Result<DemoMesh, String> {
    step(
        1,
        format!("making a mesh CA for spiffe://{TRUST_DOMAIN} and certificates for node-1..5"),
    );
    let options = IssueOptions {
        validity: Validity::starting_now(Duration::from_secs(3600)),
        force: true,
    };
    let domain = TrustDomain::new(TRUST_DOMAIN).map_err(|e| e.to_string())?;
    pki::init_ca(&domain, &dir.join("ca"), options).map_err(|e| e.to_string())?;
    for i in 1..=5 {
        let id = NodeId::new(format!("node-{i}")).map_err(|e| e.to_string())?;
        pki::issue_node(&dir.join("ca"), &id, &dir.join(id.as_str()), options)
            .map_err(|e| e.to_string())?;
    }

    step(
        2,
        "starting node-1, node-2, node-3 (Raft voters), each hosting \"api\" in front of a demo backend",
    );
    let mut backends = Vec::new();
    let mut voters: Vec<RunningAgent> = Vec::new();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    for i in 1..=3 {
        let backend = DemoBackend::start(loopback, &format!("backend-{i}")).await?;
        let extra = format!(
            "[consensus]\nbootstrap_expect = 3\nelection_timeout = \"1s\"\nweights_window = \"2s\"\n\
             [quarantine]\nprobation = \"20s\"\n\
             [[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n\
             health = {{ http = \"/healthz\", interval = \"1s\" }}\n",
            backend.addr
        );
        let seed = voters.first().map(|v| v.quic_addr);
        voters.push(start_node(dir, &format!("node-{i}"), seed, &extra).await?);
        backends.push(backend);
    }
    step(
        3,
        "starting node-4 and node-5, which call \"api\" (HTTP, balanced, retried, ejecting)",
    );
    let mut callers = Vec::new();
    for i in 4..=5 {
        let extra =
            "[[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
                     try_timeout = \"500ms\"\noutlier = { base_ejection = \"3s\" }\n";
        callers
            .push(start_node(dir, &format!("node-{i}"), Some(voters[0].quic_addr), extra).await?);
    }
    let mesh = DemoMesh {
        voters,
        callers,
        backends,
    };
    narrate::wait_until_formed(&mesh.voters, &mesh.callers).await?;
    Ok(mesh)
}

async fn start_node(
    dir: &Path,
    node: &str,
    seed: Option<SocketAddr>,
    extra: &str,
) -> Result<RunningAgent, String> {
    let config_path = dir.join(format!("{node}.toml"));
    let seeds = seed
        .map(|s| format!("seeds = [\"{s}\"]\n"))
        .unwrap_or_default();
    let text = format!(
        "node_id = \"{node}\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         data_dir = \"{node}-data\"\n{seeds}\n\
         [tls]\nca = \"{node}/ca.pem\"\ncert = \"{node}/node.pem\"\nkey = \"{node}/node.key\"\n\n\
         [gossip]\ninterval = \"200ms\"\n\n{extra}"
    );
    std::fs::write(&config_path, text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = AgentConfig::load(&config_path).map_err(|e| e.to_string())?;
    crate::start(config).await.map_err(|e| e.to_string())
}

fn print_addresses(mesh: &DemoMesh) {
    println!("      admin APIs (try `plexus ctl --admin ADDR routes|decisions|quarantine|peers`):");
    for agent in mesh.voters.iter().chain(&mesh.callers) {
        println!(
            "        {}  http://{}/v1/status",
            agent.node_id, agent.admin_addr
        );
    }
}
