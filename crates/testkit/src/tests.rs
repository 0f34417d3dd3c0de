//! Tests of the fixture against real PostgreSQL (the throwaway cluster, and the same cluster
//! posing as a `TEST_DATABASE_URL` server), so they do not depend on the environment.

use std::time::{Duration, Instant};

use super::*;

async fn roundtrip(db: &TestDatabase, value: &str) -> Vec<String> {
    let client = db.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE items (id serial PRIMARY KEY, value text NOT NULL)")
        .await
        .unwrap();
    client
        .execute("INSERT INTO items (value) VALUES ($1)", &[&value])
        .await
        .unwrap();
    client
        .query("SELECT value FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn database_exists(admin: &Client, name: &str) -> bool {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) == 1
}

#[tokio::test]
async fn throwaway_cluster_serves_two_databases_created_concurrently() {
    let (a, b) = tokio::join!(
        database_in_throwaway_cluster(),
        database_in_throwaway_cluster()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.name(), b.name());
    let pid_prefix = format!("oversync_test_{}_", std::process::id());
    assert!(a.name().starts_with(&pid_prefix), "{}", a.name());
    assert!(b.url().ends_with(&format!("/{}", b.name())), "{}", b.url());

    let (in_a, in_b) = tokio::join!(roundtrip(&a, "in a"), roundtrip(&b, "in b"));
    assert_eq!(in_a, ["in a"]);
    assert_eq!(in_b, ["in b"]);
}

#[tokio::test]
async fn databases_are_isolated_from_each_other() {
    let first = test_database().await.unwrap();
    let second = TestDatabase::new().await.unwrap();
    let first_client = first.connect().await.unwrap();
    first_client
        .batch_execute("CREATE TABLE only_in_first (id int)")
        .await
        .unwrap();

    let second_client = second.connect().await.unwrap();
    let found = second_client
        .query_one("SELECT to_regclass('only_in_first') IS NOT NULL", &[])
        .await
        .unwrap();
    assert!(!found.get::<_, bool>(0));
    let tables = second_client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(tables.get::<_, i64>(0), 0, "a new database is empty");
}

#[tokio::test]
async fn database_on_a_url_server_is_dropped_with_its_handle() {
    // The throwaway cluster stands in for a TEST_DATABASE_URL server.
    let cluster = shared_cluster().await.unwrap();
    let server_url = cluster.url("postgres");
    let admin = connect(&cluster_config(cluster, "postgres"), "postgres")
        .await
        .unwrap();

    let db = database_on_server(&server_url).await.unwrap();
    assert_eq!(db.url(), cluster.url(db.name()));
    let client = db.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    assert!(database_exists(&admin, db.name()).await);

    // The client is still connected: the drop must force it out rather than wait.
    let name = db.name().to_owned();
    drop(db);
    assert!(!database_exists(&admin, &name).await);
    assert!(
        client.batch_execute("SELECT 1").await.is_err(),
        "the connection was terminated"
    );
}

#[tokio::test]
async fn cluster_stop_removes_the_data_dir_and_closes_the_port() {
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&cluster_options()))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "throwaway cluster start (initdb + pg_ctl start): {:?}",
        started.elapsed()
    );
    let data_dir = cluster.data_dir().to_owned();
    let dir = cluster.dir().to_owned();
    let config = cluster_config(&cluster, "postgres");
    assert!(data_dir.join("PG_VERSION").is_file());

    let client = connect(&config, "postgres").await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);

    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(!dir.exists(), "{} still exists", dir.display());
    let refused = config.connect(NoTls).await;
    assert!(refused.is_err(), "the port still accepts connections");
}

#[tokio::test]
async fn missing_postgresql_error_says_how_to_fix_it() {
    let empty = tempfile::tempdir().unwrap();
    let error = Cluster::start(&cluster_options().bin_dir(empty.path())).unwrap_err();
    let message = TestkitError::Cluster(Arc::new(error)).to_string();
    assert!(
        message.contains("install postgresql or set TEST_DATABASE_URL"),
        "{message}"
    );
    assert!(
        message.contains("no PostgreSQL binaries found (initdb/pg_ctl)"),
        "{message}"
    );
}

#[tokio::test]
async fn database_creation_time_is_reported() {
    // A measurement, printed for humans (`--nocapture`); timing is never asserted.
    shared_cluster().await.unwrap();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let db = database_in_throwaway_cluster().await.unwrap();
        samples.push(started.elapsed());
        drop(db);
    }
    samples.sort();
    eprintln!(
        "test database creation (connect + CREATE DATABASE): median {:?}, all {samples:?}",
        samples[samples.len() / 2]
    );
    assert!(
        samples
            .iter()
            .all(|sample| *sample < Duration::from_secs(60))
    );
}

#[test]
fn url_dbname_is_replaced_in_every_connection_string_form() {
    assert_eq!(
        with_dbname("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
        "postgres://u:p@h:5432/t1?sslmode=disable"
    );
    assert_eq!(with_dbname("postgresql://h", "t1"), "postgresql://h/t1");
    assert_eq!(
        with_dbname("postgres://h:1/?x=y", "t1"),
        "postgres://h:1/t1?x=y"
    );
    assert_eq!(
        with_dbname("host=h user=u dbname=postgres", "t1"),
        "host=h user=u dbname=postgres dbname=t1"
    );
    let parsed: Config = with_dbname("host=h user=u dbname=postgres", "t1")
        .parse()
        .unwrap();
    assert_eq!(parsed.get_dbname(), Some("t1"));
}

#[test]
fn names_are_unique_and_need_no_quoting() {
    let names: std::collections::HashSet<String> = (0..1000).map(|_| unique_name()).collect();
    assert_eq!(names.len(), 1000);
    for name in &names {
        assert!(name.len() < 63, "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
    }
}
