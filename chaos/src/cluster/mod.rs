//! The agents of a run as real `plexus agent` processes: their certificates (good and the bad
//! kinds the certificate faults need), their configuration files, and the process faults:
//! kill -9, stop and continue, graceful restart, restart with another certificate or a
//! skewed clock.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use plexus_agent::pki::{self, IssueOptions, Validity};
use plexus_protocol::{NodeId, TrustDomain};
use rustix::process::{kill_process, Pid, Signal};

mod config;

use config::{bad_config, config_text};

use crate::scenario::{CertFlaw, PolicySpec, Protocol, Scenario};

pub const TRUST_DOMAIN: &str = "chaos.plexus";
const OTHER_TRUST_DOMAIN: &str = "elsewhere.plexus";
const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What a node's process is doing, as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// SIGSTOP: alive to the kernel, silent to peers.
    Stopped,
    /// Killed, or exited.
    Down,
}

/// How a node is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    Good,
    BadCert(CertFlaw),
    /// Clock shifted by this many seconds (libfaketime).
    Skewed(i64),
    /// The harness's own binary runs the agent (`plexus-chaos liar`) and lies to its
    /// quarantine book that requests to this node fail.
    Liar(String),
}

/// One node: its addresses, files and process.
pub struct NodeProc {
    pub name: String,
    /// The agent's own QUIC address (what the relay forwards to).
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The workload's upstream listener, on source nodes.
    pub upstream: Option<SocketAddr>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub state: ProcState,
    pub variant: Variant,
    /// Set when it exited without the harness asking; taken by the observer.
    pub unexpected_exit: Option<ExitStatus>,
    /// The harness sent SIGTERM (a graceful restart): the exit that follows was asked for.
    terminating: bool,
}

/// The mesh CA and every node of the run.
pub struct Cluster {
    bin: PathBuf,
    /// This harness's executable, which runs lying observers.
    harness: Option<PathBuf>,
    dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    faketime: Option<PathBuf>,
    /// Each node's QUIC port, held open until its agent first starts, so that no other
    /// socket (the relay's, say) is given the port in between.
    reserved: std::collections::HashMap<String, std::net::UdpSocket>,
    /// Its admin and upstream ports, likewise (an agent's outbound connections take ephemeral
    /// ports that could otherwise land on them).
    reserved_tcp: std::collections::HashMap<String, Vec<std::net::TcpListener>>,
}

/// A service a node hosts: the harness's backend for it.
#[derive(Debug, Clone)]
pub struct Hosted {
    pub service: String,
    pub protocol: Protocol,
    pub version: String,
    pub address: SocketAddr,
}

/// Where each node's peers reach it, and where its local services are.
pub struct Wiring<'a> {
    pub advertise: &'a dyn Fn(&str) -> SocketAddr,
    pub services: &'a dyn Fn(&str) -> Vec<Hosted>,
}

impl Cluster {
    /// Issues certificates and writes a configuration per node under `dir`. `listen` gives
    /// each node's QUIC address (chosen before the relay starts).
    pub fn prepare(
        scenario: &Scenario,
        dir: &Path,
        bin: &Path,
        listen: &[(String, SocketAddr)],
        wiring: &Wiring<'_>,
    ) -> Result<Self, String> {
        let ca = dir.join("ca");
        let domain = TrustDomain::new(TRUST_DOMAIN).map_err(|e| e.to_string())?;
        pki::init_ca(
            &domain,
            &ca,
            options(Validity::starting_now(LEAF_LIFETIME * 30)),
        )
        .map_err(|e| format!("mesh CA: {e}"))?;
        let mut nodes = Vec::new();
        let mut held_tcp = std::collections::HashMap::new();
        for spec in &scenario.topology.nodes {
            let name = &spec.name;
            let node_dir = dir.join(name);
            let id = NodeId::new(name).map_err(|e| e.to_string())?;
            pki::issue_node(
                &ca,
                &id,
                &node_dir.join("certs"),
                options(Validity::starting_now(LEAF_LIFETIME)),
            )
            .map_err(|e| format!("{name}: certificate: {e}"))?;
            let listen = listen
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, a)| *a)
                .ok_or_else(|| format!("{name}: no listen address"))?;
            let (admin_socket, admin) = reserve_tcp()?;
            let mut held = vec![admin_socket];
            let upstream = if scenario.workload.from.contains(name) {
                let (socket, addr) = reserve_tcp()?;
                held.push(socket);
                Some(addr)
            } else {
                None
            };
            let config = config_text(
                scenario,
                spec.zone.as_deref(),
                name,
                &node_dir,
                listen,
                admin,
                upstream,
                wiring,
            );
            std::fs::write(node_dir.join("plexus.toml"), config)
                .map_err(|e| format!("{name}: config: {e}"))?;
            held_tcp.insert(name.clone(), held);
            nodes.push(NodeProc {
                name: name.clone(),
                listen,
                admin,
                upstream,
                log: node_dir.join("agent.log"),
                dir: node_dir,
                child: None,
                state: ProcState::Down,
                variant: Variant::Good,
                unexpected_exit: None,
                terminating: false,
            });
        }
        Ok(Self {
            bin: bin.to_owned(),
            harness: std::env::current_exe().ok(),
            dir: dir.to_owned(),
            nodes,
            faketime: find_faketime(),
            reserved: Default::default(),
            reserved_tcp: held_tcp,
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodeProc> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodeProc, String> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| format!("no node `{name}`"))
    }

    /// Whether clock skew can be injected here.
    pub fn has_faketime(&self) -> bool {
        self.faketime.is_some()
    }

    /// Holds the nodes' QUIC ports (see [`reserve_udp`]) until each agent starts.
    pub fn hold(&mut self, reservations: Vec<(String, std::net::UdpSocket)>) {
        self.reserved.extend(reservations);
    }

    /// Starts `name` as `variant` (its process must be down).
    pub fn start(&mut self, name: &str, variant: Variant) -> Result<(), String> {
        // Its ports are released only now, for the agent to bind.
        self.reserved.remove(name);
        self.reserved_tcp.remove(name);
        let ca = self.dir.join("ca");
        let bin = self.bin.clone();
        let harness = self.harness.clone();
        let faketime = self.faketime.clone();
        let node = self.node_mut(name)?;
        let config = match &variant {
            Variant::BadCert(flaw) => bad_config(node, &ca, *flaw)?,
            _ => node.dir.join("plexus.toml"),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let mut command = match &variant {
            Variant::Liar(about) => {
                let harness = harness.ok_or("cannot find the harness's own executable")?;
                let mut c = Command::new(harness);
                c.args(["liar", "--about", about.as_str(), "--config"]);
                c
            }
            _ => {
                let mut c = Command::new(&bin);
                c.args(["agent", "--config"]);
                c
            }
        };
        command
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Variant::Skewed(offset) = &variant {
            let lib = faketime.ok_or("clock skew needs libfaketime (apt-get install faketime)")?;
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("{offset:+}"))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        // Never two processes for one node: one still running (a fault overlapping another on
        // the same node) is killed first, or it would keep the node's ports.
        if let Some(mut old) = node.child.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{name}: cannot start {}: {e}", bin.display()))?;
        node.child = Some(child);
        node.terminating = false;
        node.state = ProcState::Running;
        node.variant = variant;
        node.unexpected_exit = None;
        Ok(())
    }

    /// Writes `policy` into `name`'s configuration file and, if its agent runs, tells it to
    /// reload (SIGHUP). A stopped agent reloads when continued; one that is down starts with it.
    pub fn set_policy(&mut self, name: &str, policy: &PolicySpec) -> Result<(), String> {
        let node = self.node_mut(name)?;
        let path = node.dir.join("plexus.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let changed = config::with_policy(&text, policy)?;
        // Written aside and renamed: the agent never reads half a file.
        let fresh = node.dir.join("plexus.toml.new");
        std::fs::write(&fresh, changed).map_err(|e| format!("{}: {e}", fresh.display()))?;
        std::fs::rename(&fresh, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let (Some(child), ProcState::Running | ProcState::Stopped) = (&node.child, node.state) {
            signal(child.id(), Signal::HUP)?;
        }
        Ok(())
    }

    /// The file holding `name`'s admin token (what mutating admin calls present).
    pub fn admin_token(&self, name: &str) -> Option<PathBuf> {
        Some(self.node(name)?.dir.join("data").join("admin.token"))
    }

    /// kill -9.
    pub fn kill(&mut self, name: &str) -> Result<(), String> {
        let node = self.node_mut(name)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.state = ProcState::Down;
        self.hold_again(name);
        Ok(())
    }

    /// Holds a node's ports again while its agent is down, so that no other socket (an
    /// ephemeral port of the harness's own admin calls, say) lands on them
    /// before it restarts: a restart once failed with its admin port taken. Best effort: a
    /// port that cannot be held now makes the restart report it.
    fn hold_again(&mut self, name: &str) {
        let Some(node) = self.node(name) else { return };
        let (listen, tcp) = (node.listen, [Some(node.admin), node.upstream]);
        if let Ok(socket) = std::net::UdpSocket::bind(listen) {
            self.reserved.insert(name.to_owned(), socket);
        }
        let held: Vec<std::net::TcpListener> = tcp
            .into_iter()
            .flatten()
            .filter_map(|addr| std::net::TcpListener::bind(addr).ok())
            .collect();
        self.reserved_tcp.insert(name.to_owned(), held);
    }

    /// SIGTERM: the agent drains and announces its leave (a stopped one is continued first).
    pub fn terminate(&mut self, name: &str) -> Result<(), String> {
        let node = self.node_mut(name)?;
        if let Some(child) = &node.child {
            if node.state == ProcState::Stopped {
                signal(child.id(), Signal::CONT)?;
            }
            signal(child.id(), Signal::TERM)?;
            node.terminating = true;
        }
        Ok(())
    }

    /// Whether `name`'s process has exited (or there is none).
    pub fn has_exited(&mut self, name: &str) -> bool {
        let Ok(node) = self.node_mut(name) else {
            return true;
        };
        match &mut node.child {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// SIGSTOP or SIGCONT.
    pub fn pause(&mut self, name: &str, stop: bool) -> Result<(), String> {
        let node = self.node_mut(name)?;
        let Some(child) = &node.child else {
            return Ok(());
        };
        signal(child.id(), if stop { Signal::STOP } else { Signal::CONT })?;
        node.state = if stop {
            ProcState::Stopped
        } else {
            ProcState::Running
        };
        Ok(())
    }

    /// Notes processes that exited on their own (a refused certificate, a crash). One the
    /// harness sent SIGTERM is reaped too, but its clean exit is not news: the restart waiting
    /// for it and this check race for the same exit.
    pub fn reap(&mut self) -> Vec<(String, ExitStatus)> {
        let mut out = Vec::new();
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    node.state = ProcState::Down;
                    exited.push(node.name.clone());
                    let asked = std::mem::take(&mut node.terminating);
                    if !(asked && status.success()) {
                        out.push((node.name.clone(), status));
                    }
                }
            }
        }
        for name in &exited {
            self.hold_again(name);
        }
        out
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.node(name)?.child.as_ref().map(Child::id)
    }

    /// The last lines of a node's log (for failure reports).
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let Some(node) = self.node(name) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills every process (the end of a run, or an abort).
    pub fn shutdown(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if node.state == ProcState::Stopped {
                    let _ = signal(child.id(), Signal::CONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            node.state = ProcState::Down;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn signal(pid: u32, sig: Signal) -> Result<(), String> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("bad pid {pid}"))?;
    kill_process(pid, sig).map_err(|e| format!("signal to {pid:?}: {e}"))
}

fn options(validity: Validity) -> IssueOptions {
    IssueOptions {
        validity,
        force: true,
    }
}

/// A free TCP port on 127.0.0.1, held by the listener until the agent that uses it starts.
fn reserve_tcp() -> Result<(std::net::TcpListener, SocketAddr), String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no free port: {e}"))?;
    Ok((listener, addr))
}

/// A free UDP port on 127.0.0.1 for an agent's QUIC socket, and the socket holding it (give
/// it to [`Cluster::hold`]).
pub fn reserve_udp() -> Result<(std::net::UdpSocket, SocketAddr), String> {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    let addr = socket
        .local_addr()
        .map_err(|e| format!("no free port: {e}"))?;
    Ok((socket, addr))
}

/// libfaketime's preload library, where the distribution puts it.
fn find_faketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}
