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
        #[command(subcommand)]
        command: CtlCommand,
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
    /// Create a mesh CA: DIR/ca.pem and DIR/ca.key (0600).
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
    /// The dependency map: which service calls which, with request and error rates.
    Graph {
        /// Output format (ignored with --json).
        #[arg(long, value_enum, default_value = "text")]
        format: crate::ctl::GraphFormat,
    },
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

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent { config, check } => {
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
            runtime()?.block_on(run_agent(loaded))
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
            println!("mesh CA for {root} written to {}", out.display());
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
                }
            })
            .map_err(Failure::runtime),
        Command::Demo { hold } => runtime()?
            .block_on(crate::demo::run(hold))
            .map_err(Failure::runtime),
    }
}

async fn run_agent(config: AgentConfig) -> Result<(), Failure> {
    let agent = crate::agent::start(config)
        .await
        .map_err(Failure::runtime)?;
    wait_for_stop_signal().await.map_err(Failure::runtime)?;
    tracing::info!("stop signal received; shutting down");
    agent.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
