//! Running PostgreSQL programs, as the `postgres` user when we are root.
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root, yet containers and CI images often
//! run tests as root. In that case every program is wrapped in `runuser -u postgres --` (or
//! `su postgres -s /bin/sh -c …` where `runuser` is missing). The same wrapping is rendered as
//! a shell line for the watchdog, so the watchdog stops the server exactly as we would.
//!
//! Everything is synchronous `std::process`: no async runtime is needed to start a cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ClusterError;

/// The account PostgreSQL runs under when we are root.
pub(crate) const POSTGRES_USER: &str = "postgres";

/// How programs are launched.
#[derive(Debug, Clone)]
pub(crate) enum Runner {
    /// We are not root: run programs directly.
    Direct,
    /// We are root: `runuser -u postgres -- program args…`.
    Runuser(PathBuf),
    /// We are root and have no `runuser`: `su postgres -s /bin/sh -c 'program args…'`.
    Su(PathBuf),
}

impl Runner {
    /// Picks the launcher for the current process.
    pub(crate) fn detect() -> Result<Self, ClusterError> {
        if !running_as_root() {
            return Ok(Self::Direct);
        }
        if let Some(runuser) = find_program("runuser") {
            return Ok(Self::Runuser(runuser));
        }
        if let Some(su) = find_program("su") {
            return Ok(Self::Su(su));
        }
        Err(ClusterError::NoUserSwitch)
    }

    /// Whether programs run as a different user than ours (so files must be handed over).
    pub(crate) fn switches_user(&self) -> bool {
        !matches!(self, Self::Direct)
    }

    /// The full argument vector (program first) that runs `program args…` as the right user.
    pub(crate) fn argv(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut argv = Vec::with_capacity(args.len() + 5);
        match self {
            Self::Direct => {
                argv.push(program.to_owned());
                argv.extend(args.iter().cloned());
            }
            Self::Runuser(runuser) => {
                argv.push(runuser.to_string_lossy().into_owned());
                argv.extend(["-u", POSTGRES_USER, "--", program].map(str::to_owned));
                argv.extend(args.iter().cloned());
            }
            Self::Su(su) => {
                let line =
                    shell_line(std::iter::once(program).chain(args.iter().map(String::as_str)));
                argv.push(su.to_string_lossy().into_owned());
                argv.extend([POSTGRES_USER, "-s", "/bin/sh", "-c"].map(str::to_owned));
                argv.push(line);
            }
        }
        argv
    }

    /// The command as one line for `sh -c`, every word quoted.
    pub(crate) fn shell_line(&self, program: &str, args: &[String]) -> String {
        shell_line(self.argv(program, args).iter().map(String::as_str))
    }

    /// Runs `program args…` in `cwd` with stdin closed and output captured; a non-zero exit is
    /// an error that carries the output.
    pub(crate) fn run(
        &self,
        program: &str,
        args: &[String],
        cwd: &Path,
    ) -> Result<(), ClusterError> {
        let argv = self.argv(program, args);
        let rendered = shell_line(argv.iter().map(String::as_str));
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| ClusterError::Spawn {
                command: rendered.clone(),
                error,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(ClusterError::CommandFailed {
            command: rendered,
            status: output.status,
            output: text.trim_end().to_owned(),
        })
    }
}

/// Runs a plain system command (not as postgres), for `chown`.
pub(crate) fn run_plain(argv: &[String], cwd: &Path) -> Result<(), ClusterError> {
    Runner::Direct.run(&argv[0], &argv[1..], cwd)
}

/// Quotes `word` for POSIX `sh` (single quotes; `'` becomes `'\''`). Plain words stay as is.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn shell_line<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The path as UTF-8; every path ends up in a shell line, so anything else is refused.
pub(crate) fn path_str(path: &Path) -> Result<&str, ClusterError> {
    path.to_str()
        .ok_or_else(|| ClusterError::NonUtf8Path(path.to_owned()))
}

/// Whether our effective uid is 0, from `/proc/self/status` (`Uid: real effective …`), else
/// from `id -u`. Avoids `libc` and `unsafe`.
pub(crate) fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(uids) = status.lines().find_map(|line| line.strip_prefix("Uid:"))
    {
        return uids.split_whitespace().nth(1) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// Finds `name` on `PATH`, then in the sbin directories a non-login root `PATH` may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_wraps_the_rest() {
        assert_eq!(
            shell_quote("/usr/lib/postgresql/15/bin/pg_ctl"),
            "/usr/lib/postgresql/15/bin/pg_ctl"
        );
        assert_eq!(shell_quote("-c"), "-c");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn shell_line_round_trips_through_sh() {
        let args = [
            "one".to_owned(),
            "two words".to_owned(),
            "it's $HOME".to_owned(),
        ];
        let line =
            Runner::Direct.shell_line("printf", &[vec!["%s|".to_owned()], args.to_vec()].concat());
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "one|two words|it's $HOME|"
        );
    }

    #[test]
    fn su_wraps_the_command_in_one_shell_argument() {
        let runner = Runner::Su(PathBuf::from("/bin/su"));
        let argv = runner.argv("/x/pg_ctl", &["-D".to_owned(), "/tmp/a b".to_owned()]);
        assert_eq!(
            argv,
            [
                "/bin/su",
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                "/x/pg_ctl -D '/tmp/a b'"
            ]
        );
    }
}
