//! Run with `cargo run --release -p oversync-bench`: pushes 1k- and 10k-row bundles through
//! `SyncService` (create → chunks of 1000 → commit) and inserts the same rows into the same
//! table with one raw `INSERT … SELECT FROM unnest(…)` (capture triggers bypassed), then prints
//! rows/s for both and their ratio. Uses `BENCH_DATABASE_URL` when set, otherwise a throwaway
//! cluster from the local PostgreSQL binaries. Reports numbers only; nothing is asserted.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use oversync_protocol::wire::{
    ConnectRequest, PushRequestRow, PushSessionChunkRequest, PushSessionCreateRequest,
};
use oversync_server::{Actor, RegisteredTable, ServiceConfig, SyncService};
use tokio_postgres::{Config, NoTls};

const SCHEMA: &str = "
    DROP SCHEMA IF EXISTS sync CASCADE;
    DROP SCHEMA IF EXISTS bench CASCADE;
    CREATE SCHEMA bench;
    CREATE TABLE bench.items (
        _sync_scope_id TEXT NOT NULL,
        id UUID NOT NULL,
        name TEXT,
        qty INT8,
        price NUMERIC,
        note TEXT,
        PRIMARY KEY (_sync_scope_id, id)
    );";

const SIZES: [usize; 2] = [1_000, 10_000];
const CHUNK: usize = 1_000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Item {
    id: uuid::Uuid,
    name: String,
    qty: i64,
    price: String,
    note: String,
}

fn items(run: u32, n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            id: uuid::Uuid::from_u128((u128::from(run) << 64) | i as u128),
            name: format!("item {i}"),
            qty: i as i64 * 3,
            price: format!("{}.{:02}", i % 1000, i % 100),
            note: "benchmark row with a little text to carry".to_owned(),
        })
        .collect()
}

fn push_rows(items: &[Item]) -> Result<Vec<PushRequestRow>, BoxError> {
    items
        .iter()
        .map(|it| {
            let json = format!(
                r#"{{"schema":"bench","table":"items","key":{{"id":"{id}"}},"op":"INSERT","base_row_version":0,"payload":{{"id":"{id}","name":"{}","qty":{},"price":{},"note":"{}"}}}}"#,
                it.name,
                it.qty,
                it.price,
                it.note,
                id = it.id.hyphenated()
            );
            Ok(serde_json::from_str(&json)?)
        })
        .collect()
}

async fn push_through_service(
    service: &SyncService,
    actor: &Actor,
    rows: Vec<PushRequestRow>,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let created = service
        .create_push_session(
            actor,
            &PushSessionCreateRequest {
                source_bundle_id: 1,
                planned_row_count: rows.len() as i64,
                initialization_id: String::new(),
            },
        )
        .await?;
    let created_at = started.elapsed();
    let mut start = 0;
    let mut rows = rows;
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(CHUNK));
        let chunk = std::mem::replace(&mut rows, rest);
        let len = chunk.len() as i64;
        service
            .upload_push_chunk(
                actor,
                &created.push_id,
                &PushSessionChunkRequest {
                    start_row_ordinal: start,
                    rows: chunk,
                },
            )
            .await?;
        start += len;
    }
    let uploaded_at = started.elapsed();
    service.commit_push_session(actor, &created.push_id).await?;
    let total = started.elapsed();
    eprintln!(
        "  phases: create {:.1} ms, chunks {:.1} ms, commit {:.1} ms",
        created_at.as_secs_f64() * 1e3,
        (uploaded_at - created_at).as_secs_f64() * 1e3,
        (total - uploaded_at).as_secs_f64() * 1e3
    );
    Ok(total)
}

async fn raw_insert(pool: &Pool, owner: &str, items: &[Item]) -> Result<Duration, BoxError> {
    let client = pool.get().await?;
    // Same table, capture and owner triggers bypassed: the floor a sync push is measured
    // against.
    client
        .batch_execute("SET session_replication_role = replica")
        .await?;
    let ids: Vec<uuid::Uuid> = items.iter().map(|i| i.id).collect();
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    let qtys: Vec<i64> = items.iter().map(|i| i.qty).collect();
    let prices: Vec<&str> = items.iter().map(|i| i.price.as_str()).collect();
    let notes: Vec<&str> = items.iter().map(|i| i.note.as_str()).collect();
    let started = Instant::now();
    client
        .execute(
            "INSERT INTO bench.items (_sync_scope_id, id, name, qty, price, note)
             SELECT $1, r.id, r.name, r.qty, r.price::numeric, r.note
             FROM unnest($2::uuid[], $3::text[], $4::int8[], $5::text[], $6::text[])
                  AS r(id, name, qty, price, note)",
            &[&owner, &ids, &names, &qtys, &prices, &notes],
        )
        .await?;
    let elapsed = started.elapsed();
    client
        .batch_execute("RESET session_replication_role")
        .await?;
    Ok(elapsed)
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

async fn run(config: Config) -> Result<(), BoxError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(4).build()?;
    pool.get().await?.batch_execute(SCHEMA).await?;
    let service = SyncService::new(
        pool.clone(),
        ServiceConfig {
            registered_tables: vec![RegisteredTable::new("bench", "items", "id")],
            max_rows_per_push_chunk: CHUNK as i64,
            // The commit's inner stages, to see where a slow push spends its time.
            stage_metrics: Some(oversync_server::StageMetrics(std::sync::Arc::new(|t| {
                if t.operation == "push_commit" {
                    eprintln!(
                        "    push_commit {:<18} {:>8.1} ms  ({} rows)",
                        t.stage,
                        t.duration.as_secs_f64() * 1e3,
                        t.count
                    );
                }
            }))),
            ..ServiceConfig::default()
        },
    )?;
    service.bootstrap().await?;

    println!(
        "{:>7}  {:>14}  {:>14}  {:>7}",
        "rows", "push rows/s", "raw rows/s", "ratio"
    );
    for (run, &n) in SIZES.iter().enumerate() {
        let run = run as u32;
        let actor = Actor::new(format!("bench-{n}"), "device-1")?;
        service
            .connect(
                &actor,
                Some(&ConnectRequest {
                    has_local_pending_rows: false,
                }),
            )
            .await?;
        let sync_items = items(run * 2, n);
        let push = push_through_service(&service, &actor, push_rows(&sync_items)?).await?;
        let raw = raw_insert(&pool, &format!("raw-{n}"), &items(run * 2 + 1, n)).await?;
        let (push_rate, raw_rate) = (rate(n, push), rate(n, raw));
        println!(
            "{n:>7}  {push_rate:>14.0}  {raw_rate:>14.0}  {:>6.1}x",
            raw_rate / push_rate
        );
    }
    service.close(Duration::from_secs(5)).await?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => runtime.block_on(run(url.parse()?)),
        _ => {
            let cluster =
                oversync_pgcluster::Cluster::start(&oversync_pgcluster::ClusterOptions::default())?;
            let mut config = Config::new();
            config
                .host(cluster.host())
                .port(cluster.port())
                .user(cluster.user())
                .dbname("postgres");
            let result = runtime.block_on(run(config));
            drop(runtime);
            cluster.stop()?;
            result
        }
    }
}
