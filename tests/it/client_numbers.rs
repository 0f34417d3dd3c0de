//! Numbers beyond binary64 end to end (PROTOCOL.md decision 1): the reference rounds a pushed
//! `bigint` such as 2^53+1 through float64 before it reaches PostgreSQL; we store the client's
//! exact number text, serve it exactly, and still hash over GCJ so Go clients verify the same
//! `bundle_hash`.

use std::sync::Arc;

use oversync_sqlite::{AttachOutcome, ServerWins};

use crate::client_e2e::{Device, Pages};
use crate::support::TestServer;

const PAGES: Pages = Pages {
    upload: 1000,
    download: 1000,
    snapshot: 1000,
};

const BIG: i64 = 9_007_199_254_740_993; // 2^53 + 1: not a binary64 value.

async fn count_value(device: &Device, id: &str) -> i64 {
    let sql = format!("SELECT count_value FROM typed_rows WHERE id = '{id}'");
    device
        .client()
        .with_connection(move |c| c.query_row(&sql, [], |r| r.get::<_, i64>(0)))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_beyond_two_to_the_53_survive_push_pull_and_rebuild_exactly() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let writer = Device::with_resolver(
        &server,
        dir.path(),
        "w",
        "alice",
        PAGES,
        Arc::new(ServerWins),
    )
    .await;
    assert_eq!(writer.attach().await, AttachOutcome::StartedEmpty);
    let id = "0b7e6c1a-6d1f-4a8e-9a55-2b7f0c3d4e5f";
    writer
        .exec(&format!(
            "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, created_at)
             VALUES ('{id}', 'big', NULL, {BIG}, 1, NULL, NULL, NULL)"
        ))
        .await;
    writer.client().sync().await.unwrap();
    // The replayed own bundle verified its hash and kept the exact value locally.
    assert_eq!(count_value(&writer, id).await, BIG);

    let conn = server.pool.get().await.unwrap();
    let stored: i64 = conn
        .query_one(
            "SELECT count_value FROM business.typed_rows WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, BIG, "PostgreSQL holds the client's exact integer");

    // A second device gets it by pull (after an empty attach) and a third by snapshot.
    let puller = Device::with_resolver(
        &server,
        dir.path(),
        "p",
        "alice",
        PAGES,
        Arc::new(ServerWins),
    )
    .await;
    puller.attach().await;
    puller.client().sync().await.unwrap();
    assert_eq!(count_value(&puller, id).await, BIG);
    let hydrated = Device::with_resolver(
        &server,
        dir.path(),
        "h",
        "alice",
        PAGES,
        Arc::new(ServerWins),
    )
    .await;
    hydrated.attach().await;
    hydrated.client().rebuild().await.unwrap();
    assert_eq!(count_value(&hydrated, id).await, BIG);
}
