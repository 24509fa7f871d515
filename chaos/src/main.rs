//! `plexus-chaos`: the chaos harness. A skeleton until the chaos issue: it parses its command
//! line and says plainly that scenarios cannot run yet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run a scenario file.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// List the scenarios in the catalogue.
    List,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { scenario, .. } => {
            eprintln!(
                "{}: the chaos harness cannot run scenarios yet (planned: scenarios, faults, checks, reports)",
                scenario.display()
            );
            ExitCode::from(1)
        }
        Command::List => {
            println!("no scenarios yet");
            ExitCode::SUCCESS
        }
    }
}
