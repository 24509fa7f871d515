//! `plexus-chaos`: run chaos scenarios against real Plexus agents.
//!
//! ```text
//! plexus-chaos run SCENARIO.toml... [--seed N] [--report DIR] [--quick] [--plexus PATH]
//! plexus-chaos list [DIR]
//! plexus-chaos liar --config FILE --about NODE     (hidden: the lying-observer fault's agent)
//! ```
//!
//! Exit codes: 0 every scenario passed, 1 a check failed or the harness could not run,
//! 2 bad usage or a bad scenario file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plexus_chaos::record::CheckStatus;
use plexus_chaos::run::{run, RunOptions};
use plexus_chaos::scenario::Scenario;
use plexus_chaos::{catalogue, report};

#[derive(Debug, Parser)]
#[command(
    name = "plexus-chaos",
    version,
    about = "Start real Plexus agents, inject faults, check promises"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenario files, one after the other.
    Run {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Replaces each scenario's own seed (fixes the fault schedule and random choices).
        #[arg(long)]
        seed: Option<u64>,
        /// Where reports go: DIR/NAME/{verdict.json,report.md,timeline.svg,logs/} (default:
        /// chaos-reports).
        #[arg(long, default_value = "chaos-reports")]
        report: PathBuf,
        /// Only the scenarios tagged `quick` (the CI subset).
        #[arg(long)]
        quick: bool,
        /// The `plexus` binary the agents run (default: next to this one, else on PATH).
        #[arg(long)]
        plexus: Option<PathBuf>,
        /// No per-second progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// List the scenarios of a catalogue directory with their purpose.
    List {
        #[arg(default_value = "chaos/scenarios")]
        dir: PathBuf,
    },
    /// Runs an agent that lies to its quarantine book about one node (the `lying-observer`
    /// fault starts it; not for people).
    #[command(hide = true)]
    Liar {
        #[arg(long)]
        config: PathBuf,
        /// The node it claims fails every request.
        #[arg(long)]
        about: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List { dir } => match catalogue::list(&dir) {
            Ok(entries) => {
                for e in entries {
                    let quick = if e.quick { " [quick]" } else { "" };
                    println!("{:<32} {}{quick}", e.name, e.purpose);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            scenarios,
            seed,
            report,
            quick,
            plexus,
            quiet,
        } => run_all(&scenarios, seed, &report, quick, plexus, quiet),
        Command::Liar { config, about } => {
            plexus_chaos::liar::init_logging();
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|r| r.block_on(plexus_chaos::liar::run(&config, &about)));
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn run_all(
    paths: &[PathBuf],
    seed: Option<u64>,
    report_dir: &Path,
    quick: bool,
    plexus: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    let mut loaded = Vec::new();
    let mut bad = false;
    for path in paths {
        match Scenario::load(path) {
            Ok(s) if quick && !s.quick => {}
            Ok(s) => loaded.push(s),
            Err(e) => {
                eprintln!("{e}");
                bad = true;
            }
        }
    }
    if bad {
        return ExitCode::from(2);
    }
    if loaded.is_empty() {
        eprintln!("no scenario to run (with --quick, none of them is tagged `quick = true`)");
        return ExitCode::from(2);
    }
    let plexus = match plexus.map(Ok).unwrap_or_else(find_plexus) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut failed = Vec::new();
    for scenario in &loaded {
        let dir = report_dir.join(&scenario.name);
        let _ = std::fs::remove_dir_all(dir.join("logs"));
        let options = RunOptions {
            seed,
            plexus: plexus.clone(),
            progress: !quiet,
            work_dir: Some(dir.join("logs")),
        };
        eprintln!(
            "== {} ({}): {}",
            scenario.name,
            scenario.source.display(),
            scenario.purpose
        );
        // Ctrl-C or SIGTERM: dropping the run kills its agents (a stopped one is continued
        // first) and the relay, so nothing outlives the harness.
        let outcome = runtime.block_on(async {
            tokio::select! {
                outcome = run(scenario, &options) => Some(outcome),
                _ = interrupted() => None,
            }
        });
        let Some(outcome) = outcome else {
            eprintln!(
                "interrupted: agents stopped, no verdict for {}",
                scenario.name
            );
            drop(runtime);
            return ExitCode::from(130);
        };
        let (record, verdict) = match outcome {
            Ok(done) => done,
            Err(e) => {
                eprintln!(
                    "{}: the harness could not run it: {e}",
                    scenario.source.display()
                );
                failed.push(scenario.name.clone());
                continue;
            }
        };
        if let Err(e) = report::write(&dir, &record, &verdict) {
            eprintln!("{}: cannot write the report: {e}", dir.display());
        }
        for c in &verdict.checks {
            let status = match c.status {
                CheckStatus::Pass => "pass",
                CheckStatus::Fail => "FAIL",
                CheckStatus::NotEvaluated => "n/a ",
            };
            let measured = c.measured.map_or("-".to_owned(), |m| format!("{m:.4}"));
            eprintln!(
                "  {status}  {:<44} measured {measured} {}  threshold {}  {}",
                c.name, c.unit, c.threshold, c.detail
            );
        }
        if verdict.passed {
            eprintln!(
                "PASS {} (seed {}); report in {}",
                scenario.name,
                verdict.seed,
                dir.display()
            );
        } else {
            eprintln!(
                "FAIL {} (seed {}{}); report in {}\n  replay: {}",
                scenario.name,
                verdict.seed,
                if verdict.aborted { ", aborted" } else { "" },
                dir.display(),
                verdict.replay
            );
            failed.push(scenario.name.clone());
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} of {} scenarios failed: {}",
            failed.len(),
            loaded.len(),
            failed.join(", ")
        );
        ExitCode::from(1)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `plexus` next to this executable, else on PATH.
fn find_plexus() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("plexus")))
        .filter(|p| p.is_file());
    if let Some(p) = beside {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("plexus"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "cannot find the `plexus` binary next to plexus-chaos or on PATH; build both with \
             `cargo build --release -p plexus-agent -p plexus-chaos`, or pass --plexus PATH"
                .into()
        })
}
