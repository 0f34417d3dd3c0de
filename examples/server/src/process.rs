//! The process around the example app, shared by the `oversync-example` binary and
//! `oversync serve`: the environment's database or a throwaway PostgreSQL, the Prometheus
//! recorder, listening, the watch listener and sweeper, and graceful shutdown on SIGINT/SIGTERM.
//!
//! Once listening, [`run`] prints one line to stdout that starts with [`READY_PREFIX`]
//! followed by the base URL (`http://127.0.0.1:<port>`); harnesses wait for it.

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use metrics_exporter_prometheus::PrometheusBuilder;
use oversync_pgcluster::{Cluster, ClusterOptions};
use tokio_postgres::NoTls;

use crate::config::{DEFAULT_JWT_SECRET, ExampleConfig};

/// How long open requests may take to finish after SIGINT/SIGTERM (the reference's 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The start of the line printed to stdout once the server listens.
pub const READY_PREFIX: &str = "oversync example server ready: ";

/// Installs the JSON log subscriber of the binaries (`RUST_LOG`, default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn")),
        )
        .init();
}

/// Serves the example with `config` until SIGINT/SIGTERM, on its own runtime; a throwaway
/// PostgreSQL started here (when `DATABASE_URL` is unset) is stopped after the runtime.
///
/// # Errors
/// When the database, the listener or the app cannot be set up, or open requests outlive the
/// shutdown grace period.
pub fn run(config: ExampleConfig) -> anyhow::Result<()> {
    if config.jwt_secret == DEFAULT_JWT_SECRET {
        tracing::warn!("JWT_SECRET is not set: using the insecure default secret");
    }
    // The throwaway cluster (if any) must outlive the runtime so that it is stopped last.
    let (database_url, cluster) = database(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(serve(config, database_url));
    drop(runtime);
    if let Some(cluster) = cluster {
        tracing::info!("stopping the throwaway PostgreSQL");
        if let Err(e) = cluster.stop() {
            tracing::warn!(error = %e, "stopping the throwaway PostgreSQL failed");
        }
    }
    result
}

/// `DATABASE_URL` verbatim, or a throwaway cluster with a fresh database.
fn database(config: &ExampleConfig) -> anyhow::Result<(String, Option<Cluster>)> {
    if let Some(url) = &config.database_url {
        tracing::info!(database_url = %url, "using DATABASE_URL");
        return Ok((url.clone(), None));
    }
    let options = ClusterOptions::default().missing_binaries_hint(
        "install postgresql (Debian: apt-get install postgresql) or set DATABASE_URL",
    );
    let cluster = Cluster::start(&options).context("start a throwaway PostgreSQL")?;
    let url = cluster.url("postgres");
    tracing::info!(
        database_url = %url,
        data_dir = %cluster.data_dir().display(),
        "DATABASE_URL not set: started a throwaway PostgreSQL from the local binaries; its data directory is removed on exit"
    );
    Ok((url, Some(cluster)))
}

async fn serve(config: ExampleConfig, database_url: String) -> anyhow::Result<()> {
    let pg_config: tokio_postgres::Config = database_url.parse().context("parse DATABASE_URL")?;
    let manager = Manager::from_config(
        pg_config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_max_conns)
        .build()
        .context("build the connection pool")?;
    pool.get()
        .await
        .context("connect to PostgreSQL")?
        .simple_query("SELECT 1")
        .await
        .context("ping PostgreSQL")?;

    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("install the metrics recorder")?;
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || prometheus.render());
    let example = crate::build(pool, &config, Some(render))
        .await
        .context("build the example server")?;
    // One dedicated LISTEN connection feeds every /sync/watch stream of this process; the
    // sweeper deletes expired sessions. Both stop when the service closes.
    let watch_listener = example.service.spawn_watch_listener(pg_config, NoTls);
    let sweeper = example.service.spawn_sweeper(Duration::from_secs(60));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener.local_addr().context("local address")?;
    tracing::info!(
        listen = %addr,
        "oversync example server listening; point a client at http://127.0.0.1:{}  (sign in: POST /dummy-signin {{\"user\":\"alice\",\"password\":\"x\"}})",
        addr.port()
    );
    println!(
        "{READY_PREFIX}http://127.0.0.1:{} (POST /dummy-signin, /sync/*, /syncx/health, /metrics)",
        addr.port()
    );

    // After the signal, open requests get SHUTDOWN_GRACE to finish; past that the process
    // exits with an error (an open /sync/watch stream can keep a connection busy), as the
    // reference does.
    let (signalled_tx, mut signalled) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, example.router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(true);
    });
    let mut served = tokio::spawn(server.into_future());
    tokio::select! {
        joined = &mut served => joined.context("server task")?.context("serve HTTP")?,
        () = async {
            while !*signalled.borrow() {
                if signalled.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => anyhow::bail!("open requests did not finish within {} s of the shutdown signal", SHUTDOWN_GRACE.as_secs()),
    }
    if let Err(e) = example.service.close(Duration::from_secs(5)).await {
        tracing::warn!(error = %e, "closing the sync service timed out");
    }
    let _ = tokio::join!(watch_listener, sweeper);
    tracing::info!("oversync example server stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing open requests");
}
