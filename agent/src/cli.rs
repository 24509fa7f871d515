//! The `plexus` command line: `agent`, `pki`, `ctl`, `demo`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use plexus_protocol::{NodeId, TrustDomain};

use crate::config::AgentConfig;
use crate::pki::{self, IssueOptions, Validity};

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How long a first start keeps trying to join with its token.
const JOIN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "plexus",
    version,
    about = "Plexus: a service mesh without a control plane"
)]
pub struct Cli {
    /// Log output format (logs go to standard error).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what systemd starts).
    Agent {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration and certificates, then exit.
        #[arg(long)]
        check: bool,
    },
    /// Make the mesh CA and node certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Ask a running agent through its admin API.
    Ctl {
        /// The agent's admin address.
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN, global = true)]
        admin: SocketAddr,
        /// Print the raw JSON answer.
        #[arg(long, global = true)]
        json: bool,
        /// The agent's admin token (`<data_dir>/admin.token`), for commands that change
        /// something.
        #[arg(long, global = true, env = "PLEXUS_ADMIN_TOKEN_FILE",
              default_value = crate::ctl::DEFAULT_TOKEN_FILE)]
        token_file: PathBuf,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// A small HTTP service answering every request with its name (for demos and the edge
    /// cluster's containers).
    Backend {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The name it answers with.
        #[arg(long, default_value = "backend")]
        name: String,
    },
    /// Start a local two-agent mesh and carry a request through it.
    Demo {
        /// Keep the mesh running until Ctrl-C instead of exiting after the walk-through.
        #[arg(long)]
        hold: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a mesh CA: DIR/ca.pem, DIR/ca.key (0600) and a join token DIR/join-token (0600).
    Init {
        #[arg(long)]
        trust_domain: TrustDomain,
        #[arg(long)]
        out: PathBuf,
        /// CA lifetime.
        #[arg(long, value_parser = parse_lifetime, default_value = "365d")]
        lifetime: Duration,
        /// Replace an existing CA key.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate: DIR/node.pem, DIR/node.key (0600) and DIR/ca.pem.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// Node ID written into spiffe://TRUST_DOMAIN/node/NODE_ID.
        #[arg(long)]
        node: NodeId,
        #[arg(long)]
        out: PathBuf,
        /// Certificate lifetime.
        #[arg(long, value_parser = parse_lifetime, default_value = "24h")]
        lifetime: Duration,
        /// Replace an existing node key.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Identity, addresses, certificate, peers and services of the agent.
    Status,
    /// Every member of the mesh this agent knows: state, zone, load, services.
    Peers,
    /// Every service in the mesh and its endpoints, with readiness and load.
    Services,
    /// Per upstream: endpoints with EWMA latency, in-flight, weight, ejection state, and the
    /// retry budget; per hosted service: the adaptive concurrency limit and shed count.
    Routes,
    /// The decision log: role, term, leader and voters, then the committed decisions with
    /// their reasons.
    Decisions,
    /// The committed access policy: the default, then the rules in the order they decide.
    Policy,
    /// One service's canary release: policy, share, phase and its committed steps.
    Canary {
        /// The service being released.
        service: String,
    },
    /// This agent's certificate, the trust bundle with expiries, and the mesh CA's state.
    Certs,
    /// Join tokens: list them, or make or revoke one.
    Tokens {
        #[command(subcommand)]
        action: Option<TokenAction>,
    },
    /// The mesh CA.
    #[command(subcommand)]
    Ca(CaAction),
    /// Quarantined nodes with the evidence behind each verdict, this agent's own reports about
    /// its peers and, on the leader, the nodes under suspicion; or release a node.
    Quarantine {
        #[command(subcommand)]
        action: Option<QuarantineAction>,
    },
    /// The dependency map: which service calls which, with request and error rates.
    Graph {
        /// Output format (ignored with --json).
        #[arg(long, value_enum, default_value = "text")]
        format: crate::ctl::GraphFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a join token and print it (once: the mesh keeps only its hash).
    Create {
        /// How long it admits joins (e.g. "24h"); without it, until revoked.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Refuse a token from now on.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// End a node's quarantine now (through the leader; needs the admin token).
    Release { node: NodeId },
}

#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Make a new root, cross-signed by the current one; leaves are reissued under it and the
    /// old root retires once every leaf it signed has expired.
    Rotate,
}

/// A certificate lifetime: a duration from one minute to 100 years.
fn parse_lifetime(value: &str) -> Result<Duration, String> {
    let lifetime = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    let (min, max) = (
        Duration::from_secs(60),
        Duration::from_secs(100 * 365 * 24 * 3600),
    );
    if lifetime < min || lifetime > max {
        return Err(format!("must be between 1m and 100y, got {value}"));
    }
    Ok(lifetime)
}

/// The exit code for a PKI failure: bad input is a usage error, failing to write is runtime.
fn pki_failure(error: pki::PkiError) -> Failure {
    match error {
        pki::PkiError::Io { .. } | pki::PkiError::Generate(_) => Failure::runtime(error),
        _ => Failure::usage(error),
    }
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Agent { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(code)
        }
    }
}

/// A failed command: what to print and which exit code to use.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl ToString) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }
    fn runtime(message: impl ToString) -> Self {
        Self {
            code: EXIT_RUNTIME,
            message: message.to_string(),
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

/// The agent's runtime: `worker_threads` threads (multi-threaded even with one, so a disk
/// write can hand the thread's other work to another thread while it waits).
fn agent_runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent { config, check } => {
            if let (Some(plan), false) = (AgentConfig::join_plan(&config), check) {
                // First start with a join token: obtain a certificate before anything else.
                tracing::info!(node = %plan.node_id, "joining the mesh with a token");
                runtime()?
                    .block_on(crate::trust::join::join(&plan, JOIN_LIMIT))
                    .map_err(Failure::runtime)?;
            }
            let loaded = AgentConfig::load(&config).map_err(Failure::usage)?;
            if check {
                println!(
                    "{}: configuration OK (node {}, {} services, {} upstreams)",
                    config.display(),
                    loaded.node_id,
                    loaded.services.len(),
                    loaded.upstreams.len()
                );
                return Ok(());
            }
            agent_runtime(loaded.worker_threads)?.block_on(run_agent(loaded, &config))
        }
        Command::Pki(PkiCommand::Init {
            trust_domain,
            out,
            lifetime,
            force,
        }) => {
            let options = IssueOptions {
                validity: Validity::starting_now(lifetime),
                force,
            };
            let root = pki::init_ca(&trust_domain, &out, options).map_err(pki_failure)?;
            let token = pki::ca::write_token_file(&out, force).map_err(pki_failure)?;
            println!("mesh CA for {root} written to {}", out.display());
            println!(
                "join token written to {} (a voter with tls.ca_key = {}/ca.key brings both \
                 into the decision log)",
                token.display(),
                out.display()
            );
            Ok(())
        }
        Command::Pki(PkiCommand::Issue {
            ca,
            node,
            out,
            lifetime,
            force,
        }) => {
            let options = IssueOptions {
                validity: Validity::starting_now(lifetime),
                force,
            };
            let id = pki::issue_node(&ca, &node, &out, options).map_err(pki_failure)?;
            println!("certificate for {id} written to {}", out.display());
            Ok(())
        }
        Command::Ctl {
            admin,
            json,
            token_file,
            command,
        } => runtime()?
            .block_on(async {
                match command {
                    CtlCommand::Status => crate::ctl::print_status(admin, json).await,
                    CtlCommand::Peers => crate::ctl::print_peers(admin, json).await,
                    CtlCommand::Services => crate::ctl::print_services(admin, json).await,
                    CtlCommand::Routes => crate::ctl::print_routes(admin, json).await,
                    CtlCommand::Decisions => crate::ctl::print_decisions(admin, json).await,
                    CtlCommand::Policy => crate::ctl::print_policy(admin, json).await,
                    CtlCommand::Canary { service } => {
                        crate::ctl::print_canary(admin, json, &service).await
                    }
                    CtlCommand::Graph { format } => {
                        crate::ctl::print_graph(admin, json, format).await
                    }
                    CtlCommand::Certs => crate::ctl::print_certs(admin, json).await,
                    CtlCommand::Tokens { action: None } => {
                        crate::ctl::print_tokens(admin, json).await
                    }
                    CtlCommand::Tokens {
                        action: Some(TokenAction::Create { ttl }),
                    } => {
                        let body = serde_json::json!({ "ttl": ttl });
                        crate::ctl::operate(admin, json, "/v1/tokens", body, &token_file).await
                    }
                    CtlCommand::Tokens {
                        action: Some(TokenAction::Revoke { id }),
                    } => {
                        let body = serde_json::json!({ "id": id });
                        let path = "/v1/tokens/revoke";
                        crate::ctl::operate(admin, json, path, body, &token_file).await
                    }
                    CtlCommand::Quarantine { action: None } => {
                        crate::ctl::print_quarantine(admin, json).await
                    }
                    CtlCommand::Quarantine {
                        action: Some(QuarantineAction::Release { node }),
                    } => {
                        let body = serde_json::json!({ "node": node });
                        let path = "/v1/quarantine/release";
                        crate::ctl::operate(admin, json, path, body, &token_file).await
                    }
                    CtlCommand::Ca(CaAction::Rotate) => {
                        let body = serde_json::json!({});
                        crate::ctl::operate(admin, json, "/v1/ca/rotate", body, &token_file).await
                    }
                }
            })
            .map_err(Failure::runtime),
        Command::Backend { listen, name } => runtime()?
            .block_on(crate::demo::backend::serve(listen, name))
            .map_err(Failure::runtime),
        Command::Demo { hold } => runtime()?
            .block_on(crate::demo::run(hold))
            .map_err(Failure::runtime),
    }
}

async fn run_agent(config: AgentConfig, path: &std::path::Path) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let node = config.node_id.clone();
    // Before READY=1: a reload or stop right after start must find its handler.
    let mut terminate = signal(SignalKind::terminate()).map_err(Failure::runtime)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(Failure::runtime)?;
    let agent = crate::agent::start(config)
        .await
        .map_err(Failure::runtime)?;
    // The certificate is held and the endpoint bound: tell systemd (Type=notify).
    crate::systemd::ready(&format!(
        "serving as {node} on {} (admin {})",
        agent.quic_addr, agent.admin_addr
    ));
    let (watchdog_stop, watchdog_rx) = tokio::sync::watch::channel(false);
    let watchdog = tokio::spawn(crate::systemd::watchdog(watchdog_rx));
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => { result.map_err(Failure::runtime)?; break }
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                crate::systemd::reloading();
                reload(&agent, path);
                crate::systemd::ready("configuration reloaded");
            }
        }
    }
    tracing::info!("stop signal received; draining and shutting down");
    crate::systemd::stopping("draining: requests in flight finish, then the agent stops");
    // The watchdog keeps being fed while the agent drains (it is still alive).
    agent.shutdown().await;
    let _ = watchdog_stop.send(true);
    let _ = watchdog.await;
    Ok(())
}

/// SIGHUP: the configuration file is read and checked again; a valid one is applied where it
/// can be while running (see [`crate::agent::RunningAgent::reload`]), a bad one is logged line
/// by line and changes nothing.
fn reload(agent: &crate::agent::RunningAgent, path: &std::path::Path) {
    match AgentConfig::load(path) {
        Ok(config) => {
            let applied = agent.reload(&config);
            tracing::info!(config = %path.display(), %applied, "configuration reloaded");
        }
        Err(errors) => {
            for line in errors.to_string().lines() {
                tracing::error!(config = %path.display(), "reload refused: {line}");
            }
        }
    }
}
