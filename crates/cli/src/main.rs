//! `oversync`: the project's command line. A thin binary over the library crates:
//!
//! * `oversync serve` runs the example server (`oversync_example::process`, the same
//!   environment variables as the `oversync-example` binary);
//! * `oversync load` runs the benchmark scenarios (push, pull + apply, hydrate, many users,
//!   watch) against an in-process example server on a throwaway PostgreSQL, or against
//!   `--server-url`, next to the raw PostgreSQL and SQLite baselines of the same rows, and
//!   prints a table (and optionally JSON and an SVG chart).

mod load;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The `oversync` command line.
#[derive(Debug, Parser)]
#[command(
    name = "oversync",
    version,
    about = "oversync: serve and load-test the sync server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the example server (environment: DATABASE_URL, JWT_SECRET, OVERSYNC_LISTEN,
    /// OVERSYNC_DB_POOL_MAX_CONNS, OVERSYNC_DB_POOL_MIN_CONNS, OVERSYNC_LOG_STAGE_TIMINGS).
    Serve,
    /// Runs the load scenarios and their raw baselines and prints the results table.
    Load(Box<load::LoadArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => serve(),
        Command::Load(args) => load::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oversync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> anyhow::Result<()> {
    oversync_example::process::init_tracing();
    let config =
        oversync_example::config::ExampleConfig::from_env().context("invalid environment")?;
    oversync_example::process::run(config)
}
