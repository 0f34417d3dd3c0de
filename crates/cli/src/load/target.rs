//! The servers a load run talks to and the devices that talk to them.
//!
//! * [`InProcess`]: the example app built with `oversync_example::build` over a pool on a
//!   throwaway PostgreSQL database, served on `127.0.0.1:0` inside this process, with the
//!   watch listener running — the default target.
//! * [`ChildServer`]: `oversync serve` started as a child process of this binary on a
//!   database of ours, so its memory can be read apart from the client's (`/proc/<pid>`).
//! * [`Device`]: one SQLite file with the example's client schema and an
//!   `oversync_sqlite::Client` over real HTTP, signed in through `/dummy-signin`.

use std::future::IntoFuture as _;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_example::config::ExampleConfig;
use oversync_server::SyncService;
use oversync_sqlite::transport::http::TokenError;
use oversync_sqlite::{
    AttachOutcome, AttachStatus, Client, Config, HttpOptions, HttpTransport, SyncTable,
    TokenProvider,
};
use rusqlite::Connection;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use oversync_example::schema::{CLIENT_SCHEMA, REGISTERED_TABLES};

/// A pool over `url` of at most `size` connections.
pub(crate) fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse().context("parse the database URL")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .context("build a connection pool")
}

/// One dedicated (non-pooled) connection to `url`, driven on its own task.
pub(crate) async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "raw PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The example server inside this process.
#[derive(Debug)]
pub(crate) struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base_url: String,
    service: Arc<SyncService>,
    serve: JoinHandle<()>,
    watch_listener: JoinHandle<()>,
}

impl InProcess {
    /// Builds the example over `database_url` (creating its business schema) and serves it.
    pub(crate) async fn start(database_url: &str) -> anyhow::Result<InProcess> {
        let config = ExampleConfig::default();
        let pool = pool(database_url, config.pool_max_conns)?;
        let example = oversync_example::build(pool, &config, None)
            .await
            .context("build the example server")?;
        let pg_config: tokio_postgres::Config =
            database_url.parse().context("parse the database URL")?;
        let watch_listener = example.service.spawn_watch_listener(pg_config, NoTls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listen on 127.0.0.1:0")?;
        let addr = listener.local_addr().context("local address")?;
        let router = example.router;
        let serve = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).into_future().await {
                tracing::error!(error = %e, "in-process server failed");
            }
        });
        Ok(InProcess {
            base_url: format!("http://{addr}"),
            service: example.service,
            serve,
            watch_listener,
        })
    }

    /// Closes the service (ending watch streams) and stops serving.
    pub(crate) async fn stop(self) {
        if let Err(e) = self.service.close(Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "closing the in-process service timed out");
        }
        self.serve.abort();
        let _ = self.serve.await;
        let _ = self.watch_listener.await;
    }
}

/// `oversync serve` as a child process.
#[derive(Debug)]
pub(crate) struct ChildServer {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base_url: String,
    child: Child,
}

impl ChildServer {
    /// Starts this binary's `serve` on `database_url` and waits (up to 60 s) for its ready
    /// line.
    pub(crate) fn start(database_url: &str) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("locate the oversync binary")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("OVERSYNC_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start `oversync serve`")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the child never blocks on it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent
                    && let Some(rest) = line.strip_prefix(oversync_example::process::READY_PREFIX)
                {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base_url) if !base_url.is_empty() => Ok(ChildServer { base_url, child }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`oversync serve` did not report readiness within 60 s")
            }
        }
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child (its database is ours; nothing to shut down gracefully).
    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` of process `pid` (`None` = this process), in KiB.
pub(crate) fn rss_kib(pid: Option<u32>) -> anyhow::Result<(u64, u64)> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{name} missing from {path}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak RSS (`VmHWM`) of process `pid` to its current RSS, so the next read
/// measures what happened since.
pub(crate) fn reset_peak(pid: Option<u32>) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/clear_refs"),
        None => "/proc/self/clear_refs".to_owned(),
    };
    if let Err(e) = std::fs::write(&path, "5") {
        tracing::warn!(error = %e, path, "cannot reset the peak RSS; the figure includes earlier peaks");
    }
}

/// `POST /dummy-signin` for `user`; the token lives five minutes.
pub(crate) async fn sign_in(
    http: &reqwest::Client,
    base_url: &str,
    user: &str,
) -> anyhow::Result<String> {
    let body = serde_json::json!({ "user": user, "password": "x" }).to_string();
    let response = http
        .post(format!("{base_url}/dummy-signin"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("sign in at {base_url}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .context("read the sign-in response")?;
    if !status.is_success() {
        bail!(
            "sign-in answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).context("sign-in response is not JSON")?;
    value["token"]
        .as_str()
        .map(str::to_owned)
        .context("sign-in response has no token")
}

/// A token provider that signs in again when its token is four minutes old (tokens of the
/// example live five).
#[derive(Debug, Clone)]
pub(crate) struct SignIn {
    http: reqwest::Client,
    base_url: String,
    user: String,
    cached: Arc<Mutex<Option<(String, Instant)>>>,
}

impl SignIn {
    /// Signs `user` in once (so a bad server fails here) and keeps the token.
    pub(crate) async fn new(
        http: &reqwest::Client,
        base_url: &str,
        user: &str,
    ) -> anyhow::Result<SignIn> {
        let token = sign_in(http, base_url, user).await?;
        Ok(SignIn {
            http: http.clone(),
            base_url: base_url.to_owned(),
            user: user.to_owned(),
            cached: Arc::new(Mutex::new(Some((token, Instant::now())))),
        })
    }
}

impl TokenProvider for SignIn {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + '_>> {
        Box::pin(async move {
            {
                let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((token, at)) = cached.as_ref()
                    && at.elapsed() < Duration::from_secs(240)
                {
                    return Ok(token.clone());
                }
            }
            let token = sign_in(&self.http, &self.base_url, &self.user)
                .await
                .map_err(|e| -> TokenError { e.into() })?;
            *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((token.clone(), Instant::now()));
            Ok(token)
        })
    }
}

/// An HTTP transport to `base_url` authenticated as `user`.
pub(crate) async fn transport(
    http: &reqwest::Client,
    base_url: &str,
    user: &str,
) -> anyhow::Result<HttpTransport> {
    let token = SignIn::new(http, base_url, user).await?;
    HttpTransport::new(base_url, Arc::new(token), &HttpOptions::default())
        .context("build the HTTP transport")
}

/// One synced SQLite database of one user.
#[derive(Debug)]
pub(crate) struct Device {
    /// The sync client over the file.
    pub(crate) client: Client<HttpTransport>,
}

impl Device {
    /// Creates `dir/name.sqlite` with the example's client schema, builds and opens a client
    /// over it (not attached).
    pub(crate) async fn open(
        http: &reqwest::Client,
        base_url: &str,
        dir: &Path,
        name: &str,
        user: &str,
    ) -> anyhow::Result<Device> {
        let path = dir.join(format!("{name}.sqlite"));
        let conn = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(CLIENT_SCHEMA)
            .context("create the client schema")?;
        let transport = transport(http, base_url, user).await?;
        let config = Config::new(
            "business",
            REGISTERED_TABLES
                .iter()
                .map(|t| SyncTable::new(*t, "id"))
                .collect(),
        );
        let client = Client::new(conn, transport, config)
            .await
            .context("build the sync client")?;
        client.open().await.context("open the sync client")?;
        Ok(Device { client })
    }

    /// Attaches to `user` and returns how (retrying while another device initialises).
    pub(crate) async fn attach(&self, user: &str) -> anyhow::Result<oversync_sqlite::AttachResult> {
        for _ in 0..100 {
            let result = self.client.attach(user).await.context("attach")?;
            if result.status == AttachStatus::Connected {
                return Ok(result);
            }
            tokio::time::sleep(result.retry_after.unwrap_or(Duration::from_millis(100))).await;
        }
        bail!("attach kept answering retry-later")
    }

    /// Attaches and checks the device started from an empty scope or the server's state.
    pub(crate) async fn attach_any(&self, user: &str) -> anyhow::Result<AttachOutcome> {
        self.attach(user)
            .await?
            .outcome
            .context("connected attach without an outcome")
    }

    /// Writes `rows` through the client's connection (captured by its triggers).
    pub(crate) async fn write(&self, rows: Arc<super::rows::Rows>) -> anyhow::Result<()> {
        self.client
            .with_connection(move |conn| super::rows::insert_sqlite(conn, &rows))
            .await
            .context("database thread")?
            .context("write rows locally")
    }

    /// Pushes everything pending and checks a bundle was committed.
    pub(crate) async fn push(&self) -> anyhow::Result<()> {
        let report = self.client.push_pending().await.context("push")?;
        if report.outcome != oversync_sqlite::PushOutcome::Committed {
            bail!("push did not commit: {:?}", report.outcome);
        }
        Ok(())
    }

    /// Closes the client (its database thread stops).
    pub(crate) async fn close(self) {
        self.client.close().await;
    }
}
