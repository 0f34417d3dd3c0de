//! Lifecycle of a real throwaway cluster: it serves on its port, and whichever way it ends
//! (`stop`, `Drop`, or the owning process being killed) the server is gone and its files too.
//!
//! Only std is used to probe the server (a TCP connect), so this crate needs no client.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oversync_pgcluster::{Cluster, ClusterOptions};

fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Waits up to `limit` for the server to be gone and its directory deleted.
fn wait_until_gone(port: u16, dir: &Path, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !dir.exists() && !accepts_connections(port) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "after {limit:?}: dir {} exists: {}, port {port} open: {}",
        dir.display(),
        dir.exists(),
        accepts_connections(port)
    );
}

#[test]
fn stop_removes_the_directory_and_closes_the_port() {
    let started = Instant::now();
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    eprintln!(
        "cluster start (initdb + pg_ctl start): {:?}",
        started.elapsed()
    );
    let (port, dir, data) = (
        cluster.port(),
        cluster.dir().to_owned(),
        cluster.data_dir().to_owned(),
    );
    assert!(data.join("PG_VERSION").is_file());
    assert!(accepts_connections(port));
    assert_eq!(
        cluster.url("app"),
        format!("postgres://postgres@127.0.0.1:{port}/app")
    );

    let stopping = Instant::now();
    cluster.stop().unwrap();
    eprintln!("cluster stop: {:?}", stopping.elapsed());
    assert!(!data.exists());
    assert!(!dir.exists());
    assert!(!accepts_connections(port));
}

#[test]
fn drop_removes_the_directory_and_closes_the_port() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let (port, dir) = (cluster.port(), cluster.dir().to_owned());
    assert!(accepts_connections(port));
    drop(cluster);
    assert!(!dir.exists());
    assert!(!accepts_connections(port));
}

#[test]
fn extra_settings_reach_the_server() {
    let cluster =
        Cluster::start(&ClusterOptions::default().setting("application_name", "set by test"))
            .unwrap();
    let opts = std::fs::read_to_string(cluster.data_dir().join("postmaster.opts")).unwrap();
    assert!(opts.contains("application_name=set by test"), "{opts}");
    assert!(opts.contains("fsync=off"), "{opts}");
}

#[test]
fn parent_dir_holds_the_cluster() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    // When we are root the server runs as `postgres`, which must be able to traverse it.
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = Cluster::start(&ClusterOptions::default().parent_dir(parent.path())).unwrap();
    assert_eq!(cluster.dir().parent(), Some(parent.path()));
    assert!(accepts_connections(cluster.port()));
}

/// Set in the child process that `watchdog_cleans_up_after_the_owning_process_is_killed` runs:
/// where to report the cluster it started.
const HELPER_OUT_ENV: &str = "OVERSYNC_PGCLUSTER_HELPER_OUT";

/// The child's part: start a cluster, report it, wait to be killed.
fn hold_a_cluster_until_killed(out: &Path) -> ! {
    let cluster = Cluster::start(&ClusterOptions::default()).expect("helper starts a cluster");
    let partial = out.with_extension("partial");
    std::fs::write(
        &partial,
        format!("{}\n{}\n", cluster.port(), cluster.dir().display()),
    )
    .expect("helper writes its report");
    std::fs::rename(&partial, out).expect("helper publishes its report");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn watchdog_cleans_up_after_the_owning_process_is_killed() {
    // This test binary runs itself again, filtered to this test, as the process to kill.
    if let Some(out) = std::env::var_os(HELPER_OUT_ENV) {
        hold_a_cluster_until_killed(Path::new(&out));
    }
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("cluster");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "watchdog_cleans_up_after_the_owning_process_is_killed",
            "--exact",
            "--test-threads=1",
        ])
        .env(HELPER_OUT_ENV, &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let waiting = Instant::now();
    while !out.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "helper never started a cluster"
        );
        assert!(helper.try_wait().unwrap().is_none(), "helper exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = std::fs::read_to_string(&out).unwrap();
    let (port, dir) = report.trim_end().split_once('\n').unwrap();
    let (port, dir): (u16, PathBuf) = (port.parse().unwrap(), PathBuf::from(dir));
    assert!(dir.exists());
    assert!(accepts_connections(port));

    // SIGKILL: no destructor, no atexit, nothing of the helper runs any more.
    helper.kill().unwrap();
    helper.wait().unwrap();
    let took = wait_until_gone(port, &dir, Duration::from_secs(10));
    eprintln!("watchdog cleanup after SIGKILL: {took:?}");
}
