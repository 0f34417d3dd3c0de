//! `oversync load` end to end with tiny sizes: the in-process server on a throwaway
//! PostgreSQL, every scenario and every baseline, one repetition. Checks the JSON report's
//! shape and that every figure is a positive number; nothing about speed is asserted.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

fn positive(value: &Value, what: &str) {
    let number = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!(
        number > 0.0 && number.is_finite(),
        "{what} is not positive: {number}"
    );
}

#[test]
fn load_with_tiny_sizes_reports_every_scenario_and_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let svg = dir.path().join("results.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_oversync"))
        .args([
            "load",
            "--reps=1",
            "--push-rows=5,12",
            "--pull-bundles=3",
            "--pull-bundle-rows=4",
            "--hydrate-rows=25",
            "--users=2",
            "--user-bundle-rows=5",
            "--duration=0.5",
            "--watch-subscribers=4",
            "--watch-commits=2",
            "--watch-interval-ms=50",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "load failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Go reference: unavailable"), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        report["go_reference"]
            .as_str()
            .unwrap()
            .starts_with("unavailable")
    );
    let rows = report["rows"].as_array().unwrap();
    let mut baselines_by_row = Vec::new();
    for row in rows {
        let name = row["name"].as_str().unwrap();
        assert!(stdout.contains(name), "the table lacks {name}");
        positive(&row["ours"]["median"], &format!("{name} ours"));
        assert_eq!(
            row["go"].as_str().unwrap(),
            report["go_reference"].as_str().unwrap()
        );
        let mut names = BTreeSet::new();
        for baseline in row["baselines"].as_array().unwrap() {
            let b = baseline["name"].as_str().unwrap();
            positive(&baseline["stats"]["median"], &format!("{name} {b}"));
            positive(&baseline["ratio"], &format!("{name} {b} ratio"));
            names.insert(b.to_owned());
        }
        baselines_by_row.push((name.to_owned(), names));
    }
    let has = |row: &str, baselines: &[&str]| {
        let found = baselines_by_row
            .iter()
            .find(|(name, _)| name == row)
            .unwrap_or_else(|| panic!("no row {row} in {baselines_by_row:?}"));
        let expected: BTreeSet<String> = baselines.iter().map(|b| (*b).to_owned()).collect();
        assert_eq!(found.1, expected, "baselines of {row}");
    };
    has("push_5", &["raw_postgres", "raw_sqlite"]);
    has("push_12", &["raw_postgres", "raw_sqlite"]);
    has("pull_apply_12", &["raw_sqlite"]);
    has("hydrate_25", &["raw_sqlite"]);
    has("hydrate_client_peak_rss", &[]);
    has("hydrate_server_peak_rss", &[]);
    has("many_users", &["raw_postgres"]);
    has("many_users_commit_p50", &["raw_postgres"]);
    has("many_users_commit_p99", &["raw_postgres"]);
    has("watch_wakeup_p50", &["raw_postgres"]);
    has("watch_wakeup_p99", &["raw_postgres"]);
    assert_eq!(rows.len(), 11);

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("push_12"));
}
