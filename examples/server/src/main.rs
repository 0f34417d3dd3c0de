//! Run with `cargo run --release -p oversync-example`.
//!
//! The example sync server: go-oversync's example rebuilt on axum. With `DATABASE_URL` unset
//! it starts a throwaway PostgreSQL from the locally installed binaries (removed on exit), so
//! one command gives a working server on a fresh machine.

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use metrics_exporter_prometheus::PrometheusBuilder;
use oversync_example::config::{DEFAULT_JWT_SECRET, ExampleConfig};
use oversync_pgcluster::{Cluster, ClusterOptions};
use tokio_postgres::NoTls;

/// How long open requests may take to finish after SIGINT/SIGTERM (the reference's 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn")),
        )
        .init();
    let config = ExampleConfig::from_env().context("invalid environment")?;
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
    let example = oversync_example::build(pool, &config, Some(render))
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
        "oversync example server ready: http://127.0.0.1:{} (POST /dummy-signin, /sync/*, /syncx/health, /metrics)",
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
