//! Run with `cargo run --release -p oversync-example`.
//!
//! The example sync server: go-oversync's example rebuilt on axum. With `DATABASE_URL` unset
//! it starts a throwaway PostgreSQL from the locally installed binaries (removed on exit), so
//! one command gives a working server on a fresh machine. The process logic lives in
//! `oversync_example::process`, shared with `oversync serve`.

use anyhow::Context as _;
use oversync_example::config::ExampleConfig;

fn main() -> anyhow::Result<()> {
    oversync_example::process::init_tracing();
    let config = ExampleConfig::from_env().context("invalid environment")?;
    oversync_example::process::run(config)
}
