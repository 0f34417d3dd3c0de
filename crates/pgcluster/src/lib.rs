//! A throwaway PostgreSQL cluster started from the locally installed `initdb` and `pg_ctl`.
//!
//! Tests and the example server (when no `DATABASE_URL` is given) need a real PostgreSQL
//! without asking the user to set one up. Crates that do this for you either download
//! binaries or need `sudo`, so this crate does the small part we need itself:
//!
//! * `initdb` into a fresh temporary directory (trust auth, user `postgres`, UTF-8, no fsync);
//! * `pg_ctl start` listening on `127.0.0.1` on a free port, tuned for speed over durability
//!   (`fsync`, `synchronous_commit` and `full_page_writes` off), retried on a new port if the
//!   one we picked was taken meanwhile;
//! * when running as root, the directory is handed to the `postgres` user and every program
//!   runs through `runuser`/`su`, because PostgreSQL refuses to run as root.
//!
//! **Cleanup invariant: a cluster never outlives the process that started it.**
//! [`Cluster::stop`] and `Drop` stop the server (`-m immediate`) and delete the directory. Since
//! `Drop` does not run for statics, on `std::process::exit` or on `SIGKILL`, every cluster also
//! has a watchdog: a detached `sh` (own process group, all stdio on `/dev/null`, so it neither
//! gets the terminal's Ctrl-C nor keeps `cargo test` waiting on a pipe) that polls our pid and,
//! once we are gone, stops the server and removes the directory.
//!
//! Everything is synchronous (`std::process`); Unix only.

mod binaries;
mod command;
mod tmpfs;

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::binaries::Binaries;
use crate::command::{Runner, path_str, run_plain, shell_quote};

/// The address the server listens on; it never listens on other interfaces.
pub const HOST: &str = "127.0.0.1";

/// The superuser of the cluster (trust authentication, no password).
pub const USER: &str = command::POSTGRES_USER;

/// How many times `pg_ctl start` is tried, each time on a newly picked port.
const START_ATTEMPTS: u32 = 3;

/// How many lines of the server log an error carries.
const LOG_TAIL_LINES: usize = 30;

/// Server settings every cluster gets (speed over durability: the data is thrown away).
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", HOST),
    ("max_connections", "200"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

/// Why a cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Neither `/usr/lib/postgresql/*/bin` nor `PATH` (nor the configured directory) has both
    /// `initdb` and `pg_ctl`.
    #[error("no PostgreSQL binaries found (initdb/pg_ctl): {hint}")]
    NoBinaries {
        /// What the user can do about it (see [`ClusterOptions::missing_binaries_hint`]).
        hint: String,
    },
    /// We are root, and there is no `runuser` or `su` to run PostgreSQL as `postgres`.
    #[error(
        "running as root, but neither `runuser` nor `su` is available to run PostgreSQL as the \
         `postgres` user"
    )]
    NoUserSwitch,
    /// The temporary directory could not be created.
    #[error("could not create the cluster directory: {0}")]
    TempDir(io::Error),
    /// A path that must go into a shell command line is not UTF-8.
    #[error("path is not valid UTF-8: {}", .0.display())]
    NonUtf8Path(PathBuf),
    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("could not pick a free TCP port on 127.0.0.1: {0}")]
    Port(io::Error),
    /// A program could not be launched at all.
    #[error("could not run `{command}`: {error}")]
    Spawn {
        /// The command line, shell-quoted.
        command: String,
        /// Why it could not be launched.
        error: io::Error,
    },
    /// A program exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line, shell-quoted.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stdout, then stderr).
        output: String,
    },
    /// `pg_ctl start` failed on every attempt.
    #[error(
        "PostgreSQL did not start after {attempts} attempts; last error: {last}\n\
         --- tail of {} ---\n{log_tail}",
        log_file.display()
    )]
    StartFailed {
        /// How many ports were tried.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<ClusterError>,
        /// The server log.
        log_file: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// `pg_ctl stop` failed while the server still appears to run; the directory was kept and
    /// the watchdog will retry when the process exits.
    #[error("could not stop PostgreSQL: {0}")]
    StopFailed(Box<ClusterError>),
    /// The server stopped, but its directory could not be removed.
    #[error("could not remove the cluster directory {}: {error}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why removal failed.
        error: io::Error,
    },
}

/// How to start a [`Cluster`]. `ClusterOptions::default()` is what tests want.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    hint: String,
    bin_dir: Option<PathBuf>,
    parent_dir: Option<PathBuf>,
    prefer_tmpfs: bool,
    settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            hint: "install postgresql".to_owned(),
            bin_dir: None,
            parent_dir: None,
            prefer_tmpfs: false,
            settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// The advice shown after `no PostgreSQL binaries found (initdb/pg_ctl): ` when the
    /// binaries are missing, e.g. `install postgresql or set DATABASE_URL`.
    #[must_use]
    pub fn missing_binaries_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Use `initdb`/`pg_ctl` from this directory only, instead of searching
    /// `/usr/lib/postgresql/*/bin` (highest version) and then `PATH`.
    #[must_use]
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Create the cluster's temporary directory inside `dir` instead of the system temporary
    /// directory (`TMPDIR`, else `/tmp`). Takes precedence over
    /// [`ClusterOptions::prefer_tmpfs`]. When running as root, the `postgres` user must be
    /// able to traverse `dir` (as it can `/tmp`).
    #[must_use]
    pub fn parent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent_dir = Some(dir.into());
        self
    }

    /// Keep the cluster in memory when possible: under `/dev/shm` if that is a tmpfs with at
    /// least 1 GiB available, else in the system temporary directory. Makes `initdb` and
    /// `CREATE DATABASE` several times faster where file creation on disk is slow; the data
    /// then uses RAM.
    #[must_use]
    pub fn prefer_tmpfs(mut self, prefer: bool) -> Self {
        self.prefer_tmpfs = prefer;
        self
    }

    /// An extra server setting (`-c name=value`), applied after (and so overriding) the
    /// defaults `listen_addresses=127.0.0.1 max_connections=200 fsync=off
    /// synchronous_commit=off full_page_writes=off`.
    #[must_use]
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    fn binaries(&self) -> Result<Binaries, ClusterError> {
        let found = match &self.bin_dir {
            Some(dir) => Binaries::in_dir(dir),
            None => binaries::find(
                Path::new(binaries::DEBIAN_LIB_ROOT),
                std::env::var_os("PATH").as_deref(),
            ),
        };
        found.ok_or_else(|| ClusterError::NoBinaries {
            hint: self.hint.clone(),
        })
    }

    fn create_dir(&self) -> Result<tempfile::TempDir, ClusterError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("oversync-pg-");
        if let Some(parent) = &self.parent_dir {
            return builder.tempdir_in(parent).map_err(ClusterError::TempDir);
        }
        if self.prefer_tmpfs
            && let Some(parent) = tmpfs::usable_dir()
            && let Ok(dir) = builder.tempdir_in(parent)
        {
            return Ok(dir);
        }
        builder.tempdir().map_err(ClusterError::TempDir)
    }
}

/// A running throwaway PostgreSQL server on `127.0.0.1`, user `postgres`, trust auth.
///
/// Dropping it (or calling [`Cluster::stop`]) stops the server and deletes all its files; if
/// the process dies first, a watchdog does the same within a fraction of a second.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// `None` once stopped.
    running: Option<Running>,
}

/// What `stop` has to undo.
#[derive(Debug)]
struct Running {
    runner: Runner,
    pg_ctl: String,
    dir: tempfile::TempDir,
    watchdog: Watchdog,
}

impl Cluster {
    /// Creates a fresh cluster in a new temporary directory and starts it. Blocks until the
    /// server accepts connections: about 0.6 s on tmpfs, where `initdb` takes most of it, and
    /// more where creating files on disk is slow (1.3 s on the ext4 `/tmp` of our dev VM).
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let binaries = options.binaries()?;
        let runner = Runner::detect()?;
        let temp = options.create_dir()?;
        let dir = temp.path().to_owned();
        let data_dir = dir.join("data");
        let log_file = dir.join("log");
        let initdb = path_str(&binaries.initdb)?.to_owned();
        let pg_ctl = path_str(&binaries.pg_ctl)?.to_owned();
        let dir_str = path_str(&dir)?.to_owned();
        let data_str = path_str(&data_dir)?.to_owned();
        let log_str = path_str(&log_file)?.to_owned();

        // From here on the directory is covered even if we are killed.
        let watchdog = Watchdog::spawn(&runner, &pg_ctl, &data_str, &dir_str)?;

        if runner.switches_user() {
            run_plain(
                &[
                    "chown".to_owned(),
                    "-R".to_owned(),
                    format!("{USER}:{USER}"),
                    dir_str.clone(),
                ],
                &dir,
            )?;
        }

        let initdb_args = |locale: &str| {
            [
                "-D",
                &data_str,
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                locale,
                "-N",
            ]
            .map(str::to_owned)
        };
        if let Err(first) = runner.run(&initdb, &initdb_args("--locale=C.UTF-8"), &dir) {
            // Older systems lack the C.UTF-8 locale; initdb removes what it created on failure.
            let _ = std::fs::remove_dir_all(&data_dir);
            runner
                .run(&initdb, &initdb_args("--no-locale"), &dir)
                .map_err(|second| match second {
                    ClusterError::CommandFailed {
                        command,
                        status,
                        output,
                    } => ClusterError::CommandFailed {
                        command,
                        status,
                        output: format!("{output}\n(with --locale=C.UTF-8: {first})"),
                    },
                    other => other,
                })?;
        }

        let mut attempt = 0;
        let port = loop {
            attempt += 1;
            let port = free_port()?;
            let mut server_options = format!("-F -k {} -p {port}", shell_quote(&dir_str));
            let settings = DEFAULT_SETTINGS
                .iter()
                .map(|(name, value)| (*name, *value))
                .chain(
                    options
                        .settings
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str())),
                );
            for (name, value) in settings {
                server_options.push_str(" -c ");
                server_options.push_str(&shell_quote(&format!("{name}={value}")));
            }
            let args = [
                "-D",
                &data_str,
                "-l",
                &log_str,
                "-w",
                "-o",
                &server_options,
                "start",
            ]
            .map(str::to_owned);
            match runner.run(&pg_ctl, &args, &dir) {
                Ok(()) => break port,
                Err(_) if attempt < START_ATTEMPTS => {}
                Err(last) => {
                    return Err(ClusterError::StartFailed {
                        attempts: attempt,
                        last: Box::new(last),
                        log_tail: log_tail(&log_file),
                        log_file,
                    });
                }
            }
        };

        Ok(Self {
            port,
            dir,
            data_dir,
            log_file,
            running: Some(Running {
                runner,
                pg_ctl,
                dir: temp,
                watchdog,
            }),
        })
    }

    /// The TCP port the server listens on (on [`Cluster::host`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The superuser to connect as: `postgres` (no password).
    pub fn user(&self) -> &str {
        USER
    }

    /// `postgres://postgres@127.0.0.1:<port>/<dbname>`, with `dbname` percent-encoded.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{USER}@{HOST}:{}/{}",
            self.port,
            percent_encode(dbname)
        )
    }

    /// The directory holding everything of this cluster (data, log, socket); deleted on stop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log, useful when a test wants to see what PostgreSQL complained about.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Stops the server (`pg_ctl -m immediate stop`) and deletes its directory. Dropping the
    /// cluster does the same but ignores errors.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ClusterError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let data = path_str(&self.data_dir)?.to_owned();
        let args = ["-D", &data, "-m", "immediate", "-w", "stop"].map(str::to_owned);
        // A failure with no pid file left means the server was not running any more (it died
        // on its own): nothing to stop.
        if let Err(error) = running.runner.run(&running.pg_ctl, &args, &self.dir)
            && self.data_dir.join("postmaster.pid").exists()
        {
            // Still running: keep the files and leave the watchdog to retry at exit.
            let _kept = running.dir.keep();
            running.watchdog.detach();
            return Err(ClusterError::StopFailed(Box::new(error)));
        }
        let removed = running.dir.close().map_err(|error| ClusterError::Remove {
            path: self.dir.clone(),
            error,
        });
        running.watchdog.dismiss();
        removed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The detached `sh` that cleans up after us if we die without dropping the cluster.
#[derive(Debug)]
struct Watchdog {
    child: Option<Child>,
}

impl Watchdog {
    fn spawn(runner: &Runner, pg_ctl: &str, data: &str, dir: &str) -> Result<Self, ClusterError> {
        let stop = runner.shell_line(
            pg_ctl,
            &["-D", data, "-m", "immediate", "-w", "stop"].map(str::to_owned),
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done\n{stop}\nrm -rf {dir}\n",
            pid = std::process::id(),
            dir = shell_quote(dir),
        );
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&script)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in our process group: a Ctrl-C for the tests must not kill the watchdog.
            .process_group(0);
        let child = command.spawn().map_err(|error| ClusterError::Spawn {
            command: format!("/bin/sh -c {}", shell_quote(&script)),
            error,
        })?;
        Ok(Self { child: Some(child) })
    }

    /// The cluster is cleaned up: end the watchdog.
    fn dismiss(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leave the watchdog running, to clean up when the process exits.
    fn detach(mut self) {
        self.child = None;
    }
}

impl Drop for Watchdog {
    /// Only reached when starting failed half-way: nothing is left to watch.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reserves a port the kernel considers free right now. Another process may take it before
/// the server binds it; the start is then retried on another port.
fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((HOST, 0)).map_err(ClusterError::Port)?;
    let port = listener.local_addr().map_err(ClusterError::Port)?.port();
    Ok(port)
}

fn log_tail(log_file: &Path) -> String {
    match std::fs::read(log_file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(no log: {error})"),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_error_names_the_programs_and_the_hint() {
        let empty = tempfile::tempdir().unwrap();
        let options = ClusterOptions::default()
            .bin_dir(empty.path())
            .missing_binaries_hint("install postgresql or set TEST_DATABASE_URL");
        let error = Cluster::start(&options).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no PostgreSQL binaries found (initdb/pg_ctl): install postgresql or set \
             TEST_DATABASE_URL"
        );
    }

    #[test]
    fn url_percent_encodes_the_database_name() {
        assert_eq!(percent_encode("oversync_test_1"), "oversync_test_1");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
