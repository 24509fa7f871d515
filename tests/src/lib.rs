//! Helpers for Plexus's multi-node tests: a PKI fixture, agents in-process and as real
//! processes, an echo service, metric scraping and bounded polling. Everything listens on
//! 127.0.0.1 only.
#![forbid(unsafe_code)]

pub mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plexus_agent::pki::{self, IssueOptions, Validity};
use plexus_agent::{AgentConfig, RunningAgent};
use plexus_protocol::{NodeId, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TRUST_DOMAIN: &str = "test.plexus";

/// A mesh CA in a temporary directory, and node certificates issued from it.
pub struct Mesh {
    dir: tempfile::TempDir,
}

/// A node's certificate directory: `node.pem`, `node.key`, `ca.pem`.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub id: String,
    pub dir: PathBuf,
}

impl Mesh {
    pub fn new() -> Self {
        Self::with_trust_domain(TRUST_DOMAIN)
    }

    pub fn with_trust_domain(trust_domain: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let domain = TrustDomain::new(trust_domain).unwrap();
        pki::init_ca(
            &domain,
            &dir.path().join("ca"),
            options(Validity::starting_now(hours(24))),
        )
        .expect("init CA");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.path().join("ca")
    }

    /// A node certificate valid for the next hour.
    pub fn node(&self, id: &str) -> NodeFiles {
        self.node_valid(id, Validity::starting_now(hours(1)))
    }

    /// A node certificate with the given validity (expired or not yet valid, for tests).
    pub fn node_valid(&self, id: &str, validity: Validity) -> NodeFiles {
        let dir = self.path().join(id);
        pki::issue_node(
            &self.ca_dir(),
            &NodeId::new(id).unwrap(),
            &dir,
            options(validity),
        )
        .expect("issue node certificate");
        NodeFiles {
            id: id.to_owned(),
            dir,
        }
    }

    /// Writes `NAME.toml` for `node` with 127.0.0.1 addresses (ephemeral unless `extra` sets
    /// them) and returns its path.
    pub fn config(&self, name: &str, node: &NodeFiles, top: &str, extra: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.toml"));
        let d = node.dir.display();
        let text = format!(
            "{top}\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/node.pem\"\nkey = \"{d}/node.key\"\n\n{extra}\n"
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts an in-process agent for `node` with ephemeral ports and `extra` config.
    pub async fn agent(&self, node: &NodeFiles, extra: &str) -> RunningAgent {
        let top = "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
        let path = self.config(&node.id, node, top, extra);
        start(&path).await
    }
}

impl Default for Mesh {
    fn default() -> Self {
        Self::new()
    }
}

pub fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn options(validity: Validity) -> IssueOptions {
    IssueOptions {
        validity,
        force: true,
    }
}

/// Loads `path` and starts an in-process agent.
pub async fn start(path: &Path) -> RunningAgent {
    let config =
        AgentConfig::load(path).unwrap_or_else(|e| panic!("config {}: {e}", path.display()));
    plexus_agent::start(config).await.expect("agent starts")
}

/// An upstream block for `service` listening on an ephemeral port with these endpoints.
pub fn upstream(service: &str, endpoints: &[SocketAddr], timeout: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[[upstream]]\nservice = \"{service}\"\nlisten = \"127.0.0.1:0\"\nendpoints = [{}]\ntimeout = \"{timeout}\"\n",
        list.join(", ")
    )
}

/// A service block.
pub fn service(name: &str, address: SocketAddr) -> String {
    format!("[[service]]\nname = \"{name}\"\naddress = \"{address}\"\n")
}

/// A TCP echo service on 127.0.0.1 (echoes until the client half-closes, then closes).
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `message`, half-closes, and reads the reply to its end.
pub async fn exchange(addr: SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(message).await?;
    stream.shutdown().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

/// Whether an exchange of `message` through `addr` succeeds (each try bounded to 2 s) before
/// `limit` passes: for waiting on a path that is healing.
pub async fn echoes_within(addr: SocketAddr, message: &[u8], limit: Duration) -> bool {
    eventually(limit, async || {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), exchange(addr, message)).await,
            Ok(Ok(reply)) if reply == message
        )
    })
    .await
}

/// GETs an admin path: (status, body).
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    plexus_agent::ctl::get(admin, path)
        .await
        .expect("admin API answers")
}

/// The value of one series (`name{labels}` exactly as rendered) in Prometheus text; 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The value of `series` in `agent`'s metrics.
pub fn agent_metric(agent: &RunningAgent, series: &str) -> f64 {
    metric(&agent.telemetry.render(), series)
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
/// A check that hangs counts as not holding once `limit` has passed.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(true) = tokio::time::timeout_at(deadline, check()).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1 (UDP or TCP).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// The `plexus` binary of this build (built by `cargo test --workspace`, or built here).
pub fn plexus_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let bin = profile_dir.join("plexus");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "plexus-agent", "--bin", "plexus"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building the plexus binary failed");
        }
        bin
    })
    .clone()
}

/// Runs `plexus ARGS` to completion: (exit code, stdout, stderr).
pub fn run_plexus(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(plexus_bin())
        .args(args)
        .output()
        .expect("run plexus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `plexus agent` running as a real child process.
pub struct AgentProcess {
    child: Child,
    pub config: PathBuf,
    pub admin: SocketAddr,
}

impl AgentProcess {
    /// Spawns `plexus agent --config CONFIG` and waits (bounded) until `/readyz` answers 200.
    pub async fn spawn(config: &Path, admin: SocketAddr) -> Self {
        let child = Command::new(plexus_bin())
            .args(["agent", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn plexus agent");
        let mut agent = Self {
            child,
            config: config.to_owned(),
            admin,
        };
        let ready = eventually(Duration::from_secs(20), async || {
            // An agent that exits during start-up (say, a port taken meanwhile) fails at once.
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "agent {} exited during start-up: {status}",
                    agent.config.display()
                );
            }
            matches!(plexus_agent::ctl::get(admin, "/readyz").await, Ok((200, _)))
        })
        .await;
        if !ready {
            agent.kill();
            panic!("agent {} did not become ready", config.display());
        }
        agent
    }

    /// SIGTERM, then waits (at most 15 s) for the agent to exit on its own.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// kill -9: no goodbye to peers.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two in-process agents of one mesh: `b` hosts `service` at `backend`, `a` has an upstream to
/// it through `b`. The mesh (its temporary directory) lives as long as the pair.
pub struct Pair {
    pub a: RunningAgent,
    pub b: RunningAgent,
    pub mesh: Mesh,
}

impl Pair {
    pub async fn start(service_name: &str, backend: SocketAddr, timeout: &str) -> Self {
        let mesh = Mesh::new();
        let b = mesh
            .agent(&mesh.node("node-b"), &service(service_name, backend))
            .await;
        let a = mesh
            .agent(
                &mesh.node("node-a"),
                &upstream(service_name, &[b.quic_addr], timeout),
            )
            .await;
        Self { a, b, mesh }
    }

    /// `a`'s local listener for the service.
    pub fn app(&self, service_name: &str) -> SocketAddr {
        self.a
            .upstream_addr(service_name)
            .expect("upstream listener")
    }
}
