//! `oversync load`: the benchmark scenarios and, in the same run, the physical limits they
//! are measured against.
//!
//! Scenarios (each repeated `--reps` times; one sample per repetition):
//! * **push** — one device writes N rows locally and `push_pending` commits them as one
//!   bundle over HTTP (timed: the push alone); baselines: the same rows with one raw
//!   `INSERT … SELECT FROM unnest(…)` per table into the same `business` tables with the
//!   owner and capture triggers bypassed, and a raw SQLite insert in one transaction.
//! * **pull** — a second device pulls and applies rows spread over many bundles another
//!   device pushed; baseline: the raw SQLite insert of as many rows.
//! * **hydrate** — a fresh device attaches to a user holding many rows and rebuilds from the
//!   snapshot; the server runs as a child `oversync serve` so its peak RSS is its own.
//! * **many users** — concurrent devices, one user each, push small bundles for
//!   `--duration`; bundles/s and the p50/p99 latency of `push_pending`; baseline: as many
//!   raw PostgreSQL connections inserting the same bundles for as long.
//! * **watch** — subscribers on `GET /sync/watch` of one user, one commit per interval;
//!   the p50/p99 delay from sending the commit to each subscriber's wake-up; baseline: a raw
//!   `pg_notify` → `LISTEN` round on one connection.
//!
//! The Go reference columns always print "unavailable": its module cannot be fetched here.

mod report;
mod rows;
mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oversync_protocol::wire::{
    ConnectRequest, PushRequestRow, PushSessionChunkRequest, PushSessionCreateRequest,
};
use oversync_sqlite::{AttachOutcome, RemoteOutcome, Transport as _};
use serde::Serialize;

use report::{Report, Row, Setup, Stats, percentile};
use rows::Rows;
use target::{ChildServer, Device, InProcess};

/// Options of `oversync load`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct LoadArgs {
    /// Run against this server (e.g. http://127.0.0.1:8080) instead of an in-process one on
    /// a throwaway PostgreSQL. It must be the example server (`/dummy-signin`).
    #[arg(long)]
    server_url: Option<String>,
    /// The server's database, for the raw PostgreSQL baselines when --server-url is given
    /// (rows go to scopes named `load-raw-*` and are deleted afterwards).
    #[arg(long)]
    database_url: Option<String>,
    /// Scenarios to run (comma-separated); all by default.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "push,pull,hydrate,many-users,watch"
    )]
    scenarios: Vec<Scenario>,
    /// Repetitions of every measurement (≥ 1).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Bundle sizes of the push scenario, in rows.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    push_rows: Vec<usize>,
    /// Bundles the pull scenario's second device pulls.
    #[arg(long, default_value_t = 100)]
    pull_bundles: usize,
    /// Rows per pulled bundle.
    #[arg(long, default_value_t = 100)]
    pull_bundle_rows: usize,
    /// Rows of the hydrate scenario's snapshot.
    #[arg(long, default_value_t = 100_000)]
    hydrate_rows: usize,
    /// Concurrent devices (one user each) of the many-users scenario.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Rows per bundle in the many-users scenario.
    #[arg(long, default_value_t = 100)]
    user_bundle_rows: usize,
    /// Seconds each many-users repetition (and its baseline) runs.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Open watch streams of the watch scenario.
    #[arg(long, default_value_t = 1000)]
    watch_subscribers: usize,
    /// Commits observed by the watch scenario (each is one sample).
    #[arg(long, default_value_t = 10)]
    watch_commits: usize,
    /// Milliseconds between the watch scenario's commits.
    #[arg(long, default_value_t = 1000)]
    watch_interval_ms: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a bar chart of the results as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also write the results table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// A scenario of the load run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// One device pushes big bundles.
    Push,
    /// A second device pulls and applies many bundles.
    Pull,
    /// A fresh device rebuilds from a big snapshot.
    Hydrate,
    /// Many devices push small bundles concurrently.
    ManyUsers,
    /// Many watch subscribers are woken by commits.
    Watch,
}

/// Runs `oversync load`.
pub(crate) fn main(args: &LoadArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    ensure!(args.reps >= 1, "--reps must be at least 1");
    ensure!(args.duration > 0.0, "--duration must be positive");
    ensure!(
        args.push_rows.iter().all(|n| *n > 0)
            && args.pull_bundles > 0
            && args.pull_bundle_rows > 0
            && args.hydrate_rows > 0
            && args.users > 0
            && args.user_bundle_rows > 0
            && args.watch_subscribers > 0
            && args.watch_commits > 0,
        "sizes must be positive"
    );
    // The throwaway cluster must outlive the runtime, so it is started and stopped here.
    let cluster = match &args.server_url {
        Some(_) => None,
        None => Some(
            oversync_pgcluster::Cluster::start(
                &oversync_pgcluster::ClusterOptions::default().missing_binaries_hint(
                    "install postgresql (Debian: apt-get install postgresql) or pass --server-url",
                ),
            )
            .context("start a throwaway PostgreSQL")?,
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(run(args, cluster.as_ref()));
    drop(runtime);
    if let Some(cluster) = cluster
        && let Err(e) = cluster.stop()
    {
        tracing::warn!(error = %e, "stopping the throwaway PostgreSQL failed");
    }
    let report = result?;
    print!("{}", report.table(false));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("encode the JSON report")?;
        write(path, &text)?;
    }
    if let Some(path) = &args.svg {
        write(path, &report.svg())?;
    }
    if let Some(path) = &args.markdown {
        write(path, &report.table(true))?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// What every scenario shares.
struct Ctx<'a> {
    args: &'a LoadArgs,
    http: reqwest::Client,
    base_url: String,
    /// The database of the raw PostgreSQL baselines (the server's own).
    raw_pg: Option<String>,
    /// Where hydrate runs its own server, when we own the PostgreSQL.
    cluster: Option<&'a oversync_pgcluster::Cluster>,
    dir: tempfile::TempDir,
    /// Distinguishes this run's users and scopes from earlier runs on the same server.
    run: String,
    seeds: AtomicU64,
    notes: std::sync::Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// A seed never used before in this run (row ids embed it).
    fn seed(&self) -> u64 {
        self.seeds.fetch_add(1, Ordering::Relaxed)
    }

    fn user(&self, what: &str) -> String {
        format!("load-{}-{what}", self.run)
    }

    /// A device named `name` in the run's directory, attached as `user` on the load target.
    async fn attached_device(&self, name: &str, user: &str) -> anyhow::Result<Device> {
        let device = Device::open(&self.http, &self.base_url, self.dir.path(), name, user).await?;
        device.attach_any(user).await?;
        Ok(device)
    }

    fn raw_scope(&self, what: &str) -> String {
        format!("load-raw-{}-{what}", self.run)
    }

    fn note(&self, note: impl Into<String>) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(note.into());
    }

    fn bar(&self, scenario: &str, len: usize) -> ProgressBar {
        let bar = ProgressBar::new(len as u64);
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(scenario.to_owned());
        bar
    }

    /// A raw PostgreSQL connection for a baseline, if there is a database to use.
    async fn raw_connection(&self) -> anyhow::Result<Option<tokio_postgres::Client>> {
        match &self.raw_pg {
            Some(url) => Ok(Some(target::connect(url).await?)),
            None => Ok(None),
        }
    }
}

async fn run(
    args: &LoadArgs,
    cluster: Option<&oversync_pgcluster::Cluster>,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let (base_url, in_process, raw_pg, server) = match (&args.server_url, cluster) {
        (Some(url), _) => {
            let url = url.trim().trim_end_matches('/').to_owned();
            (url.clone(), None, args.database_url.clone(), url)
        }
        (None, Some(cluster)) => {
            let db = cluster.url("postgres");
            let server = InProcess::start(&db).await?;
            (
                server.base_url.clone(),
                Some(server),
                Some(db),
                "in-process example server on a throwaway PostgreSQL".to_owned(),
            )
        }
        (None, None) => bail!("no server: pass --server-url or let load start PostgreSQL"),
    };
    if args.server_url.is_some()
        && let Some(url) = &raw_pg
    {
        // The raw baselines write into the business tables; make sure they exist.
        let pg = target::connect(url).await?;
        pg.batch_execute(&format!(
            "BEGIN; {}; COMMIT;",
            oversync_example::schema::BUSINESS_DDL
        ))
        .await
        .context("create the business schema for the raw baselines")?;
    }
    let ctx = Ctx {
        args,
        http,
        base_url,
        raw_pg,
        cluster,
        dir: tempfile::tempdir().context("create a temporary directory")?,
        run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        seeds: AtomicU64::new(1),
        notes: std::sync::Mutex::new(Vec::new()),
    };
    if ctx.raw_pg.is_none() {
        ctx.note("raw PostgreSQL baselines skipped: pass --database-url with --server-url");
    }
    let mut rows = Vec::new();
    let result = async {
        for scenario in &args.scenarios {
            let found = match scenario {
                Scenario::Push => push(&ctx).await,
                Scenario::Pull => pull(&ctx).await,
                Scenario::Hydrate => hydrate(&ctx).await,
                Scenario::ManyUsers => many_users(&ctx).await,
                Scenario::Watch => watch(&ctx).await,
            }
            .with_context(|| format!("scenario {scenario:?}"))?;
            rows.extend(found);
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(url) = &ctx.raw_pg
        && args.server_url.is_some()
    {
        let mut pg = target::connect(url).await?;
        rows::delete_postgres_scopes(&mut pg, &ctx.raw_scope("")).await?;
    }
    if let Some(server) = in_process {
        server.stop().await;
    }
    result?;
    let mut notes = ctx.notes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    notes.insert(
        0,
        "ratios are ours ÷ baseline of the medians: below 1 for rates means slower than the \
         limit, above 1 for ms/MiB means slower/larger"
            .to_owned(),
    );
    Ok(Report {
        format: 1,
        go_reference: report::GO_UNAVAILABLE,
        setup: Setup {
            server,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            notes,
        },
        config: serde_json::to_value(args).context("encode the configuration")?,
        rows,
    })
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times a raw SQLite insert of `rows` into a fresh file with the client schema (no sync
/// triggers), in one transaction.
async fn raw_sqlite(dir: &Path, name: &str, rows: Arc<Rows>) -> anyhow::Result<Duration> {
    let path = dir.join(format!("{name}.sqlite"));
    tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let mut conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(oversync_example::schema::CLIENT_SCHEMA)?;
        let started = Instant::now();
        rows::insert_sqlite(&mut conn, &rows)?;
        let elapsed = started.elapsed();
        drop(conn);
        let _ = std::fs::remove_file(&path);
        Ok(elapsed)
    })
    .await
    .context("raw SQLite task")?
}

/// Times the raw PostgreSQL insert of `rows` under `scope`.
async fn raw_postgres(
    pg: &mut tokio_postgres::Client,
    scope: &str,
    rows: &Rows,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    rows::insert_postgres(pg, scope, rows)
        .await
        .context("raw PostgreSQL insert")?;
    Ok(started.elapsed())
}

async fn push(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let reps = ctx.args.reps;
    let mut out = Vec::new();
    for &n in &ctx.args.push_rows {
        let bar = ctx.bar(&format!("push {n}"), reps);
        let user = ctx.user(&format!("push-{n}"));
        let device = ctx.attached_device(&format!("push-{n}"), &user).await?;
        let mut raw_pg = ctx.raw_connection().await?;
        let (mut ours, mut pg, mut sq) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let rows = Arc::new(Rows::generate(ctx.seed(), n));
            device.write(Arc::clone(&rows)).await?;
            let started = Instant::now();
            device.push().await?;
            ours.push(rate(n, started.elapsed()));
            if let Some(raw) = raw_pg.as_mut() {
                let scope = ctx.raw_scope(&format!("push-{n}-{rep}"));
                pg.push(rate(n, raw_postgres(raw, &scope, &rows).await?));
            }
            sq.push(rate(
                n,
                raw_sqlite(ctx.dir.path(), &format!("raw-push-{n}-{rep}"), rows).await?,
            ));
            bar.inc(1);
        }
        device.close().await;
        bar.finish_and_clear();
        let mut row = Row::new(
            "push",
            format!("push_{n}"),
            format!(
                "one device commits a {n}-row bundle (5 business tables, 1 KiB BLOB per file) through the SQLite client over HTTP; push_pending timed"
            ),
            "rows/s",
            Stats::of(ours),
        );
        if !pg.is_empty() {
            row = row.paired_baseline(
                "raw_postgres",
                "the same rows: one INSERT … SELECT FROM unnest per table, one transaction, session_replication_role = replica",
                Stats::of(pg),
            );
        }
        out.push(row.paired_baseline(
            "raw_sqlite",
            "the same rows into a plain SQLite file (no sync triggers), one transaction",
            Stats::of(sq),
        ));
    }
    Ok(out)
}

async fn pull(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let (reps, bundles, per) = (
        ctx.args.reps,
        ctx.args.pull_bundles,
        ctx.args.pull_bundle_rows,
    );
    let total = bundles * per;
    let bar = ctx.bar("pull", reps * (bundles + 1));
    let (mut ours, mut sq) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let user = ctx.user(&format!("pull-{rep}"));
        let reader = ctx.attached_device(&format!("pull-b-{rep}"), &user).await?;
        let writer = ctx.attached_device(&format!("pull-a-{rep}"), &user).await?;
        bar.set_message("writer pushes");
        for _ in 0..bundles {
            writer
                .write(Arc::new(Rows::generate(ctx.seed(), per)))
                .await?;
            writer.push().await?;
            bar.inc(1);
        }
        bar.set_message("reader pulls");
        let started = Instant::now();
        let report = reader.client.pull_to_stable().await.context("pull")?;
        let elapsed = started.elapsed();
        ensure!(
            report.outcome == RemoteOutcome::AppliedIncremental,
            "pull did not apply incrementally: {:?}",
            report.outcome
        );
        let applied = count_rows(&reader).await?;
        ensure!(
            applied == total as i64,
            "pulled {applied} rows, expected {total}"
        );
        ours.push(rate(total, elapsed));
        sq.push(rate(
            total,
            raw_sqlite(
                ctx.dir.path(),
                &format!("raw-pull-{rep}"),
                Arc::new(Rows::generate(ctx.seed(), total)),
            )
            .await?,
        ));
        reader.close().await;
        writer.close().await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(vec![
        Row::new(
            "pull",
            format!("pull_apply_{total}"),
            format!("a second device pulls and applies {total} rows spread over {bundles} bundles (pull_to_stable timed)"),
            "rows/s",
            Stats::of(ours),
        )
        .paired_baseline(
            "raw_sqlite",
            format!("{total} rows of the same mix into a plain SQLite file, one transaction"),
            Stats::of(sq),
        ),
    ])
}

/// Business rows in a device's database.
async fn count_rows(device: &Device) -> anyhow::Result<i64> {
    let count = device
        .client
        .with_connection(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)
                      + (SELECT count(*) FROM files) + (SELECT count(*) FROM file_reviews)
                      + (SELECT count(*) FROM typed_rows)",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .context("database thread")?
        .context("count rows")?;
    Ok(count)
}

async fn hydrate(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let (reps, total) = (ctx.args.reps, ctx.args.hydrate_rows);
    // Our own server process when we own PostgreSQL, so its memory is its own.
    let child = match ctx.cluster {
        Some(cluster) => {
            let admin = target::connect(&cluster.url("postgres")).await?;
            admin
                .batch_execute("DROP DATABASE IF EXISTS oversync_load_hydrate")
                .await?;
            admin
                .batch_execute("CREATE DATABASE oversync_load_hydrate")
                .await
                .context("create the hydrate database")?;
            let url = cluster.url("oversync_load_hydrate");
            Some(tokio::task::spawn_blocking(move || ChildServer::start(&url)).await??)
        }
        None => {
            ctx.note("hydrate: server peak RSS not measured (remote --server-url)");
            None
        }
    };
    let result = hydrate_on(ctx, child.as_ref(), reps, total).await;
    if let Some(child) = child {
        child.stop();
    }
    result
}

async fn hydrate_on(
    ctx: &Ctx<'_>,
    child: Option<&ChildServer>,
    reps: usize,
    total: usize,
) -> anyhow::Result<Vec<Row>> {
    let base_url = child.map_or(ctx.base_url.as_str(), |c| c.base_url.as_str());
    let user = ctx.user("hydrate");
    let bundle = total.min(10_000);
    let bar = ctx.bar("hydrate", total.div_ceil(bundle) + reps);
    bar.set_message("seeding the snapshot");
    let seeder = Device::open(&ctx.http, base_url, ctx.dir.path(), "hydrate-seed", &user).await?;
    seeder.attach_any(&user).await?;
    let mut written = 0;
    while written < total {
        let n = bundle.min(total - written);
        seeder
            .write(Arc::new(Rows::generate(ctx.seed(), n)))
            .await?;
        seeder.push().await?;
        written += n;
        bar.inc(1);
    }
    seeder.close().await;
    bar.set_message("rebuilding");
    let (mut ours, mut client_peak, mut client_before, mut server_peak, mut sq) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let pid = child.map(ChildServer::pid);
    for rep in 0..reps {
        let device = Device::open(
            &ctx.http,
            base_url,
            ctx.dir.path(),
            &format!("hydrate-{rep}"),
            &user,
        )
        .await?;
        target::reset_peak(None);
        if pid.is_some() {
            target::reset_peak(pid);
        }
        let (rss_before, _) = target::rss_kib(None)?;
        let started = Instant::now();
        let result = device.attach(&user).await?;
        let elapsed = started.elapsed();
        let (_, hwm) = target::rss_kib(None)?;
        ensure!(
            result.outcome == Some(AttachOutcome::UsedRemoteState),
            "a fresh device did not hydrate: {:?}",
            result.outcome
        );
        let restored = result.restore.map_or(0, |r| r.row_count);
        ensure!(
            restored == total as i64,
            "hydrated {restored} rows, expected {total}"
        );
        ours.push(rate(total, elapsed));
        client_peak.push(hwm as f64 / 1024.0);
        client_before.push(rss_before as f64 / 1024.0);
        if pid.is_some() {
            server_peak.push(target::rss_kib(pid)?.1 as f64 / 1024.0);
        }
        device.close().await;
        sq.push(rate(
            total,
            raw_sqlite(
                ctx.dir.path(),
                &format!("raw-hydrate-{rep}"),
                Arc::new(Rows::generate(ctx.seed(), total)),
            )
            .await?,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let before = Stats::of(client_before).median;
    let mut out = vec![
        Row::new(
            "hydrate",
            format!("hydrate_{total}"),
            format!(
                "a fresh device attaches and rebuilds from a {total}-row snapshot (attach timed)"
            ),
            "rows/s",
            Stats::of(ours),
        )
        .paired_baseline(
            "raw_sqlite",
            format!("{total} rows of the same mix into a plain SQLite file, one transaction"),
            Stats::of(sq),
        ),
        Row::new(
            "hydrate",
            "hydrate_client_peak_rss",
            format!(
                "peak RSS (VmHWM, reset before each rebuild) of the load process, i.e. the client plus the idle in-process server and runtime; its RSS before the rebuild was {before:.0} MiB"
            ),
            "MiB",
            Stats::of(client_peak),
        ),
    ];
    if !server_peak.is_empty() {
        out.push(Row::new(
            "hydrate",
            "hydrate_server_peak_rss",
            "peak RSS (VmHWM, reset before each rebuild) of the child `oversync serve` process serving the snapshot; PostgreSQL backends not included",
            "MiB",
            Stats::of(server_peak),
        ));
    }
    Ok(out)
}

async fn many_users(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let (reps, users, per) = (ctx.args.reps, ctx.args.users, ctx.args.user_bundle_rows);
    let duration = Duration::from_secs_f64(ctx.args.duration);
    let bar = ctx.bar("many users", reps * 2);
    let (mut rate_ours, mut p50_ours, mut p99_ours) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rate_pg, mut p50_pg, mut p99_pg) = (Vec::new(), Vec::new(), Vec::new());
    let seeds = Arc::new(AtomicU64::new(
        ctx.seeds.fetch_add(1 << 20, Ordering::Relaxed),
    ));
    for rep in 0..reps {
        bar.set_message("opening devices");
        let mut devices = Vec::with_capacity(users);
        for k in 0..users {
            let user = ctx.user(&format!("mu-{rep}-{k}"));
            let device = ctx.attached_device(&format!("mu-{rep}-{k}"), &user).await?;
            devices.push(device);
        }
        bar.set_message("devices push");
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = Vec::with_capacity(users);
        for device in devices {
            let seeds = Arc::clone(&seeds);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let rows = Rows::generate(seeds.fetch_add(1, Ordering::Relaxed), per);
                    device.write(Arc::new(rows)).await?;
                    let t = Instant::now();
                    device.push().await?;
                    latencies.push(ms(t.elapsed()));
                }
                device.close().await;
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.context("device task")??);
        }
        let elapsed = started.elapsed();
        rate_ours.push(rate(latencies.len(), elapsed));
        p50_ours.push(percentile(&latencies, 50.0));
        p99_ours.push(percentile(&latencies, 99.0));
        bar.inc(1);

        if let Some(url) = &ctx.raw_pg {
            bar.set_message("raw PostgreSQL");
            let mut conns = Vec::with_capacity(users);
            for _ in 0..users {
                conns.push(target::connect(url).await?);
            }
            let started = Instant::now();
            let deadline = started + duration;
            let mut tasks = Vec::with_capacity(users);
            for (k, mut pg) in conns.into_iter().enumerate() {
                let seeds = Arc::clone(&seeds);
                let scope = ctx.raw_scope(&format!("mu-{rep}-{k}"));
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let rows = Rows::generate(seeds.fetch_add(1, Ordering::Relaxed), per);
                        latencies.push(ms(raw_postgres(&mut pg, &scope, &rows).await?));
                    }
                    anyhow::Ok(latencies)
                }));
            }
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.context("raw task")??);
            }
            let elapsed = started.elapsed();
            rate_pg.push(rate(latencies.len(), elapsed));
            p50_pg.push(percentile(&latencies, 50.0));
            p99_pg.push(percentile(&latencies, 99.0));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = ctx.args.duration;
    let raw = format!(
        "{users} raw PostgreSQL connections each inserting {per}-row bundles (unnest, triggers bypassed) for {secs} s"
    );
    let rows = [
        (
            "many_users",
            "bundles/s",
            "bundles committed per second",
            rate_ours,
            rate_pg,
        ),
        (
            "many_users_commit_p50",
            "ms",
            "p50 latency of push_pending",
            p50_ours,
            p50_pg,
        ),
        (
            "many_users_commit_p99",
            "ms",
            "p99 latency of push_pending",
            p99_ours,
            p99_pg,
        ),
    ];
    Ok(rows
        .into_iter()
        .map(|(name, unit, what, ours, pg)| {
            let row = Row::new(
                "many_users",
                name,
                format!("{users} concurrent devices (one user each) push {per}-row bundles for {secs} s: {what}"),
                unit,
                Stats::of(ours),
            );
            if pg.is_empty() {
                row
            } else {
                row.paired_baseline("raw_postgres", raw.clone(), Stats::of(pg))
            }
        })
        .collect())
}

/// A `business.users` INSERT row for the watch writer.
fn user_insert(n: usize, run: &str) -> anyhow::Result<PushRequestRow> {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let json = format!(
        r#"{{"schema":"business","table":"users","key":{{"id":"{id}"}},"op":"INSERT","base_row_version":0,"payload":{{"id":"{id}","name":"watch {n}","email":"watch{n}.{run}@example.com","created_at":"2026-03-24T18:42:11Z","updated_at":"2026-03-24T18:42:11Z"}}}}"#
    );
    serde_json::from_str(&json).context("watch row")
}

async fn watch(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Row>> {
    let (subscribers, commits) = (ctx.args.watch_subscribers, ctx.args.watch_commits);
    let interval = Duration::from_millis(ctx.args.watch_interval_ms);
    let bar = ctx.bar("watch", subscribers + commits);
    let user = ctx.user("watch");
    let transport = target::transport(&ctx.http, &ctx.base_url, &user).await?;
    let writer = format!("watch-writer-{}", ctx.run);
    transport
        .connect(
            &writer,
            &ConnectRequest {
                has_local_pending_rows: false,
            },
        )
        .await
        .context("connect the watch writer")?;

    bar.set_message("opening streams");
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<()>>();
    let opening = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (transport, events_tx, open_tx, opening) = (
            transport.clone(),
            events_tx.clone(),
            open_tx.clone(),
            Arc::clone(&opening),
        );
        let source = format!("watch-sub-{i}-{}", ctx.run);
        tasks.push(tokio::spawn(async move {
            let body = {
                let _permit = opening.acquire().await;
                transport.watch(&source, 0).await
            };
            let mut events = match body {
                Ok(body) => {
                    let _ = open_tx.send(Ok(()));
                    oversync_sqlite::watch::WatchEvents::new(body)
                }
                Err(e) => {
                    let _ = open_tx.send(Err(anyhow::anyhow!("open watch stream: {e}")));
                    return;
                }
            };
            while let Ok(event) = events.next().await {
                if events_tx.send((event.bundle_seq, Instant::now())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(events_tx);
    let result = async {
        for _ in 0..subscribers {
            open_rx.recv().await.context("subscriber vanished")??;
            bar.inc(1);
        }
        // Registration happens before the response headers; a short pause covers the rest.
        tokio::time::sleep(Duration::from_millis(200)).await;
        bar.set_message("committing");
        let mut sent_at: HashMap<i64, Instant> = HashMap::new();
        let mut last = 0;
        for k in 1..=commits {
            let tick = Instant::now();
            let created = transport
                .create_push_session(
                    &writer,
                    &PushSessionCreateRequest {
                        source_bundle_id: k as i64,
                        planned_row_count: 1,
                        initialization_id: String::new(),
                    },
                )
                .await
                .context("create push session")?;
            transport
                .upload_push_chunk(
                    &writer,
                    &created.push_id,
                    &PushSessionChunkRequest {
                        start_row_ordinal: 0,
                        rows: vec![user_insert(k, &ctx.run)?],
                    },
                )
                .await
                .context("upload push chunk")?;
            let t0 = Instant::now();
            let committed = transport
                .commit_push_session(&writer, &created.push_id)
                .await
                .context("commit")?;
            sent_at.insert(committed.bundle_seq, t0);
            last = committed.bundle_seq;
            bar.inc(1);
            tokio::time::sleep(interval.saturating_sub(tick.elapsed())).await;
        }
        // Collect wake-ups until every subscriber saw the last commit (or 10 s passed).
        let mut per_commit: HashMap<i64, Vec<f64>> = HashMap::new();
        let mut saw_last = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while saw_last < subscribers {
            let Ok(Some((seq, at))) = tokio::time::timeout_at(deadline, events_rx.recv()).await
            else {
                break;
            };
            if let Some(t0) = sent_at.get(&seq) {
                per_commit
                    .entry(seq)
                    .or_default()
                    .push(ms(at.saturating_duration_since(*t0)));
            }
            if seq == last {
                saw_last += 1;
            }
        }
        ensure!(
            saw_last == subscribers,
            "only {saw_last} of {subscribers} subscribers saw the last commit"
        );
        anyhow::Ok(per_commit)
    }
    .await;
    for task in &tasks {
        task.abort();
    }
    let per_commit = result?;
    let all: Vec<f64> = per_commit.values().flatten().copied().collect();
    let p50s: Vec<f64> = per_commit.values().map(|v| percentile(v, 50.0)).collect();
    let p99s: Vec<f64> = per_commit.values().map(|v| percentile(v, 99.0)).collect();
    let missed = commits * subscribers - all.len();
    if missed > 0 {
        ctx.note(format!(
            "watch: {missed} of {} wake-ups were coalesced into a later event (one-slot mailboxes)",
            commits * subscribers
        ));
    }

    bar.set_message("raw LISTEN/NOTIFY");
    let raw = match &ctx.raw_pg {
        Some(url) => Some(raw_notify(url, commits).await?),
        None => None,
    };
    bar.finish_and_clear();
    let what = format!(
        "{subscribers} subscribers of one user on GET /sync/watch, one commit every {} ms, {commits} commits: delay from sending the commit to a subscriber's event (per-commit percentile; overall p50 {:.1} ms, p99 {:.1} ms)",
        ctx.args.watch_interval_ms,
        percentile(&all, 50.0),
        percentile(&all, 99.0)
    );
    let raw_what = "pg_notify on one connection → LISTEN on another, the same number of rounds";
    let mut p50 = Row::new(
        "watch",
        "watch_wakeup_p50",
        what.clone(),
        "ms",
        Stats::of(p50s),
    );
    let mut p99 = Row::new("watch", "watch_wakeup_p99", what, "ms", Stats::of(p99s));
    if let Some(raw) = raw {
        p99 = p99.baseline(
            "raw_postgres",
            raw_what,
            Stats::of(vec![percentile(&raw, 99.0)]),
        );
        p50 = p50.baseline("raw_postgres", raw_what, Stats::of(raw));
    }
    Ok(vec![p50, p99])
}

/// `rounds` NOTIFY → LISTEN delays on a raw connection pair, in ms.
async fn raw_notify(url: &str, rounds: usize) -> anyhow::Result<Vec<f64>> {
    use tokio_postgres::AsyncMessage;
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect the raw listener")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let driver = tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(_) = message
                && tx.send(Instant::now()).is_err()
            {
                return;
            }
        }
    });
    listener
        .batch_execute("LISTEN oversync_load_raw")
        .await
        .context("LISTEN")?;
    let notifier = target::connect(url).await?;
    let mut out = Vec::with_capacity(rounds);
    for k in 0..rounds {
        let payload = k.to_string();
        let t0 = Instant::now();
        notifier
            .execute("SELECT pg_notify('oversync_load_raw', $1)", &[&payload])
            .await
            .context("NOTIFY")?;
        let at = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .context("no notification within 5 s")?
            .context("listener ended")?;
        out.push(ms(at.saturating_duration_since(t0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(listener);
    driver.abort();
    Ok(out)
}
