//! Test fixtures for oversync: a fresh, empty PostgreSQL database per test.
//!
//! [`test_database`] hands every caller its own uniquely named database
//! (`oversync_test_<pid>_<counter>_<random>`), so tests run in parallel without seeing each
//! other's tables. Where the server comes from:
//!
//! * `TEST_DATABASE_URL` set (and not empty): that server. Its URL is the admin connection;
//!   the test database is created next to it and dropped (`WITH (FORCE)`) when the
//!   [`TestDatabase`] is dropped, so a shared server does not fill up.
//! * otherwise: one throwaway cluster per test binary ([`oversync_pgcluster::Cluster`], in
//!   `/dev/shm` when that is a roomy tmpfs), started on first use from the local
//!   `initdb`/`pg_ctl`. It lives in a `static`, so it is never dropped; its watchdog stops it
//!   and deletes its files when the process exits. Databases are created with
//!   `STRATEGY FILE_COPY` (cheap with fsync off, and keeps the WAL small) and dropped in the
//!   background when their handle is dropped, to keep the cluster's footprint flat.
//!
//! Each test binary starts its own cluster (~0.6 s); a runner that runs every test in its own
//! process (nextest) pays that per test, unless `TEST_DATABASE_URL` is set.
//!
//! Invariant: nothing tokio-related is cached across calls. Every `#[tokio::test]` has its own
//! runtime, and a client or connection task created on one runtime dies with it; only the
//! (synchronous) cluster is shared. Each call therefore opens its own short admin connection.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oversync_pgcluster::{Cluster, ClusterError, ClusterOptions};
use postgres_protocol::escape::escape_identifier;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// The environment variable naming an existing server to create test databases on, e.g.
/// `postgres://postgres:secret@localhost:5432/postgres`. The user must be allowed to create
/// databases.
pub const DATABASE_URL_ENV: &str = "TEST_DATABASE_URL";

/// Shown when there is neither a server nor binaries to start one.
const MISSING_POSTGRES_HINT: &str = "install postgresql or set TEST_DATABASE_URL";

/// Prefix of every database this crate creates.
const NAME_PREFIX: &str = "oversync_test_";

/// How often `CREATE DATABASE` is retried when the template is busy (SQLSTATE 55006).
const CREATE_ATTEMPTS: u32 = 5;

/// Why a test database could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// `TEST_DATABASE_URL` is unset and the throwaway cluster could not be started (for
    /// example because PostgreSQL is not installed). Every later call reports the same error.
    #[error("could not start a throwaway PostgreSQL cluster: {0}")]
    Cluster(Arc<ClusterError>),
    /// `TEST_DATABASE_URL` is set but not a connection string tokio-postgres understands.
    #[error("{DATABASE_URL_ENV} is not a valid PostgreSQL connection string: {}", chain(.0))]
    InvalidUrl(tokio_postgres::Error),
    /// The server could not be reached.
    #[error("could not connect to PostgreSQL database {dbname}: {}", chain(error))]
    Connect {
        /// The database we tried to connect to.
        dbname: String,
        /// Why it failed.
        error: tokio_postgres::Error,
    },
    /// `CREATE DATABASE` failed.
    #[error("could not create test database {name}: {}", chain(error))]
    CreateDatabase {
        /// The database we tried to create.
        name: String,
        /// Why it failed.
        error: tokio_postgres::Error,
    },
    /// The blocking task that starts the cluster panicked or was cancelled.
    #[error("starting the throwaway PostgreSQL cluster failed: {0}")]
    StartTask(tokio::task::JoinError),
}

/// A freshly created, empty database that belongs to one test.
///
/// Connect with [`TestDatabase::connect`] (tokio-postgres) or hand [`TestDatabase::url`] /
/// [`TestDatabase::config`] to the code under test. On a `TEST_DATABASE_URL` server the
/// database is dropped when this value is dropped (terminating leftover connections); in the
/// throwaway cluster it is dropped in the background, and the cluster dies with the process
/// anyway.
pub struct TestDatabase {
    name: String,
    url: String,
    config: Config,
    admin: Config,
    server: ServerKind,
}

/// Where the database lives, which decides how it is cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// `TEST_DATABASE_URL`: drop synchronously, a leftover would outlive us.
    External,
    /// The per-binary throwaway cluster: drop in the background to free disk space early.
    Throwaway,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `url`: it may carry the password of a TEST_DATABASE_URL server (Config redacts it).
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Creates a fresh, empty, uniquely named database for one test; see the [crate docs](crate)
/// for where it lives.
pub async fn test_database() -> Result<TestDatabase, TestkitError> {
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => database_on_server(&url).await,
        _ => database_in_throwaway_cluster().await,
    }
}

impl TestDatabase {
    /// Same as [`test_database`].
    pub async fn new() -> Result<Self, TestkitError> {
        test_database().await
    }

    /// The database name (`oversync_test_<pid>_<counter>_<random>`, no quoting needed).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `postgres://` (or key=value, if `TEST_DATABASE_URL` was one) connection string for
    /// this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The tokio-postgres configuration for this database.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Connects to this database, driving the connection on a task of the current runtime
    /// (so the client only works within that runtime).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn connect(&self) -> Result<Client, TestkitError> {
        connect(&self.config, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A fresh thread with its own runtime: works whether or not we are inside a runtime,
        // and whichever flavour it is.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let worker = std::thread::Builder::new()
            .name("oversync-testkit-drop".to_owned())
            .spawn(move || drop_database(&admin, &name));
        match (self.server, worker) {
            (ServerKind::External, Ok(worker)) => match worker.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("oversync-testkit: {error}"),
                Err(_) => eprintln!("oversync-testkit: dropping {} panicked", self.name),
            },
            // The cluster dies with the process; there is nothing to wait for.
            (ServerKind::Throwaway, Ok(_detached)) => {}
            (_, Err(error)) => {
                eprintln!("oversync-testkit: could not drop {}: {error}", self.name);
            }
        }
    }
}

/// Creates a database on the server `url` points to, connecting to `url` itself as admin.
pub(crate) async fn database_on_server(url: &str) -> Result<TestDatabase, TestkitError> {
    let admin: Config = url.parse().map_err(TestkitError::InvalidUrl)?;
    let name = unique_name();
    create_database(&admin, &name, Strategy::ServerDefault).await?;
    let mut config = admin.clone();
    config.dbname(&name);
    Ok(TestDatabase {
        url: with_dbname(url, &name),
        name,
        config,
        admin,
        server: ServerKind::External,
    })
}

/// Creates a database in this binary's throwaway cluster, starting it on first use,
/// regardless of `TEST_DATABASE_URL`.
pub(crate) async fn database_in_throwaway_cluster() -> Result<TestDatabase, TestkitError> {
    let cluster = shared_cluster().await?;
    let admin = cluster_config(cluster, "postgres");
    let name = unique_name();
    create_database(&admin, &name, Strategy::FileCopyIfSupported).await?;
    Ok(TestDatabase {
        url: cluster.url(&name),
        config: cluster_config(cluster, &name),
        name,
        admin,
        server: ServerKind::Throwaway,
    })
}

/// The options every throwaway cluster of the test kit is started with.
pub(crate) fn cluster_options() -> ClusterOptions {
    ClusterOptions::default()
        .missing_binaries_hint(MISSING_POSTGRES_HINT)
        .prefer_tmpfs(true)
}

/// The one cluster of this test binary. Started at most once (also after a failure, whose
/// error every caller then gets), on a blocking thread so no runtime worker stalls.
async fn shared_cluster() -> Result<&'static Cluster, TestkitError> {
    static CLUSTER: OnceLock<Result<Cluster, Arc<ClusterError>>> = OnceLock::new();
    let started = match CLUSTER.get() {
        Some(started) => started,
        None => tokio::task::spawn_blocking(|| {
            CLUSTER.get_or_init(|| Cluster::start(&cluster_options()).map_err(Arc::new))
        })
        .await
        .map_err(TestkitError::StartTask)?,
    };
    started
        .as_ref()
        .map_err(|error| TestkitError::Cluster(Arc::clone(error)))
}

/// tokio-postgres configuration for `dbname` in `cluster`.
pub(crate) fn cluster_config(cluster: &Cluster, dbname: &str) -> Config {
    let mut config = Config::new();
    config
        .host(cluster.host())
        .port(cluster.port())
        .user(cluster.user())
        .dbname(dbname)
        .application_name("oversync-testkit")
        .connect_timeout(Duration::from_secs(10));
    config
}

async fn connect(config: &Config, dbname: &str) -> Result<Client, TestkitError> {
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|error| TestkitError::Connect {
                dbname: dbname.to_owned(),
                error,
            })?;
    // Ends when the client is dropped or the runtime shuts down.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn admin_dbname(admin: &Config) -> String {
    admin
        .get_dbname()
        .or(admin.get_user())
        .unwrap_or("postgres")
        .to_owned()
}

/// How `CREATE DATABASE` copies the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Whatever the server does by default (`WAL_LOG` since PostgreSQL 15): right for a shared
    /// server, where the checkpoints `FILE_COPY` forces would be expensive.
    ServerDefault,
    /// `STRATEGY FILE_COPY` on PostgreSQL 15 and later. In the throwaway cluster (fsync off)
    /// its checkpoints cost nothing, and it skips writing the whole template to the WAL:
    /// about twice as fast, and the WAL does not grow by ~7 MiB per test database.
    FileCopyIfSupported,
}

/// `CREATE DATABASE … TEMPLATE template0`. template0 is pristine (template1 may have been
/// modified by someone) and never has connections, so concurrent creations do not trip over
/// each other; 55006 (object in use) is retried all the same.
async fn create_database(
    admin: &Config,
    name: &str,
    strategy: Strategy,
) -> Result<(), TestkitError> {
    let client = connect(admin, &admin_dbname(admin)).await?;
    let create_error = |error| TestkitError::CreateDatabase {
        name: name.to_owned(),
        error,
    };
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0",
        escape_identifier(name)
    );
    if strategy == Strategy::FileCopyIfSupported {
        let version = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(create_error)?;
        if version.get::<_, i32>(0) >= 150_000 {
            sql.push_str(" STRATEGY FILE_COPY");
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(error)
                if error.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < CREATE_ATTEMPTS =>
            {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(error) => return Err(create_error(error)),
        }
    }
}

/// `DROP DATABASE IF EXISTS … WITH (FORCE)` on a private current-thread runtime; blocking.
fn drop_database(admin: &Config, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("could not drop test database {name}: no runtime: {error}"))?;
    runtime.block_on(async {
        let client = connect(admin, &admin_dbname(admin))
            .await
            .map_err(|e| e.to_string())?;
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            escape_identifier(name)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|error| format!("could not drop test database {name}: {}", chain(&error)))
    })
}

/// `oversync_test_<pid>_<counter>_<random>`: unique within the process by the counter, across
/// processes (also on a shared server, and across pid reuse) by pid and randomness.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // RandomState is seeded from the OS; hashing the time too varies it per call.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u64(counter);
    let random = hasher.finish() & 0xffff_ffff;
    format!("{NAME_PREFIX}{pid}_{counter}_{random:08x}")
}

/// `url` with its database replaced by `dbname` (a plain identifier). Handles URLs
/// (`postgres://…/db?params`) and key=value strings (a later `dbname=` wins).
fn with_dbname(url: &str, dbname: &str) -> String {
    let trimmed = url.trim();
    let Some(scheme_end) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| trimmed.starts_with(scheme).then_some(scheme.len()))
    else {
        return format!("{trimmed} dbname={dbname}");
    };
    let (before_query, query) = match trimmed.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (trimmed, None),
    };
    let authority_end = before_query[scheme_end..]
        .find('/')
        .map_or(before_query.len(), |slash| scheme_end + slash);
    let mut out = format!("{}/{dbname}", &before_query[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// An error with its causes (tokio-postgres keeps the server's message in `source()`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
