//! Architecture invariants enforced as tests rather than promised in prose: which crate may
//! depend on what, and the hygiene rules every source file follows.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// Every dependency name (normal, dev and build) declared by the crate at `dir`.
fn dependencies(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("crate manifest");
    let manifest: toml::Table = text.parse().expect("manifest is TOML");
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| manifest.get(*section).and_then(toml::Value::as_table))
        .flat_map(|table| table.keys().cloned())
        .collect()
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("crates"))
        .expect("crates/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The forbidden dependencies of each crate, by crate directory name.
fn forbidden(crate_dir: &str) -> &'static [&'static str] {
    const DATABASE: [&str; 5] = [
        "tokio-postgres",
        "deadpool-postgres",
        "postgres",
        "rusqlite",
        "sqlx",
    ];
    match crate_dir {
        // Pure encoding: no runtime, no network, no database.
        "protocol" => &[
            "tokio",
            "reqwest",
            "hyper",
            "axum",
            "tokio-postgres",
            "deadpool-postgres",
            "postgres",
            "rusqlite",
            "sqlx",
        ],
        // The sync runtime knows no HTTP framework.
        "server" => &["axum", "hyper", "tower", "tower-http", "actix-web", "warp"],
        // The HTTP adapter holds no SQL.
        "axum" => &DATABASE,
        // The SQLite client does not touch PostgreSQL.
        "sqlite" => &["tokio-postgres", "deadpool-postgres", "postgres", "sqlx"],
        _ => &[],
    }
}

#[test]
fn crates_do_not_gain_forbidden_dependencies() {
    let mut violations = Vec::new();
    for dir in crate_dirs() {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        for dep in dependencies(&dir) {
            if forbidden(&name).contains(&dep.as_str()) {
                violations.push(format!("crates/{name} depends on {dep}"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn tidy_knows_the_protocol_crate_and_its_rules() {
    // Guards the check above against silently passing because a crate moved.
    let names: Vec<String> = crate_dirs()
        .iter()
        .filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    assert!(names.contains(&"protocol".to_owned()), "{names:?}");
    assert!(forbidden("protocol").contains(&"tokio"));
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    rust_files(&workspace_root().join("tests"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("readable source");
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    rust_files(&workspace_root().join("tests"), &mut files);
    let this_file = Path::new(file!()).file_name().map(|n| n.to_owned());
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| path.file_name().map(|n| n.to_owned()) != this_file)
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("readable source");
            text.contains(concat!("#[", "ignore")) || text.contains(concat!("#[", "should_panic"))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "ignored or should_panic tests in:\n{}",
        offenders.join("\n")
    );
}
