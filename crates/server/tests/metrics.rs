//! What the server reports through the `metrics` facade: hosts install any recorder (the
//! example installs Prometheus) and get stage timings without wiring callbacks.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{World, actor, insert, uuid};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    key.key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

#[test]
fn a_push_reports_stage_timings_and_counts_operations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let w = World::new().await;
            let a = actor("alice", "dev-1");
            w.init(&a).await;
            w.push(
                &a,
                1,
                vec![insert(
                    "users",
                    &uuid(1),
                    r#"{"name":"Ada","email":"a@x.io"}"#,
                )],
            )
            .await
            .unwrap();
        });
    });
    let metrics = snapshotter.snapshot().into_vec();
    let stages: Vec<(String, String)> = metrics
        .iter()
        .filter(|(key, _, _, _)| {
            key.kind() == MetricKind::Histogram
                && key.key().name() == "oversync_stage_duration_seconds"
        })
        .map(|(key, _, _, _)| {
            let labels = labels(key);
            let get = |name: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("operation"), get("stage"))
        })
        .collect();
    for (operation, stage) in [
        ("connect", "total"),
        ("push_create", "total"),
        ("push_chunk", "total"),
        ("push_commit", "total"),
        ("push_commit", "load_staged_rows"),
        ("push_commit", "apply_rows"),
        ("push_commit", "finalize_bundle"),
        ("push_commit", "commit"),
    ] {
        assert!(
            stages.contains(&(operation.to_owned(), stage.to_owned())),
            "missing {operation}/{stage} in {stages:?}"
        );
    }
    let commits = metrics.iter().find_map(|(key, _, _, value)| {
        let labels = labels(key);
        (key.key().name() == "oversync_operations_total"
            && labels.contains(&("operation".to_owned(), "push_commit".to_owned()))
            && labels.contains(&("outcome".to_owned(), "ok".to_owned())))
        .then_some(value)
    });
    assert!(
        matches!(commits, Some(DebugValue::Counter(1))),
        "{commits:?}"
    );
}
