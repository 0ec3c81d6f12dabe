//! Tries the load generator's CLI before `shardlog load` / `shardlog hist` are wired into
//! `src/main.rs`: `cargo run --release --example load -- load --workload ... ` or
//! `cargo run --example load -- hist compare A.json B.json --svg out.svg`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "load", about = "shardlog load generator (example harness)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a broker.
    Load(shardlog_tools::load::LoadArgs),
    /// Show, compare or merge RUN.json files.
    Hist(shardlog_tools::hist::HistArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Load(args) => shardlog_tools::load::run_cli(args)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Command::Hist(args) => shardlog_tools::hist::run_cli(args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: {e}");
            ExitCode::FAILURE
        }
    }
}
