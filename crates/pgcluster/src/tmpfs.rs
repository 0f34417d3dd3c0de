//! Finding a memory-backed directory for the cluster.
//!
//! A throwaway cluster does not need a disk, and on slow or throttled disks creating files is
//! what dominates `initdb` and `CREATE DATABASE` (measured here: `CREATE DATABASE` ~230 ms on
//! the ext4 `/tmp` against ~9-20 ms on `/dev/shm`). `/dev/shm` is only used when it is a tmpfs
//! with plenty of room: containers often cap it at 64 MiB, which a cluster would overflow.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The usual tmpfs mount point on Linux.
const SHM: &str = "/dev/shm";

/// Below this much free space (KiB) `/dev/shm` is not used: a fresh cluster takes ~40 MiB and
/// every database from `template0` another ~7.5 MiB.
const MIN_AVAILABLE_KIB: u64 = 1024 * 1024;

/// `/dev/shm` if it is a tmpfs with at least 1 GiB available.
pub(crate) fn usable_dir() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let is_tmpfs = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(SHM) && fields.next() == Some("tmpfs")
    });
    if !is_tmpfs {
        return None;
    }
    // `df` rather than statvfs(2): no libc, no unsafe. POSIX output: the 4th field of the
    // second line is the available space in KiB.
    let output = Command::new("df")
        .args(["-Pk", SHM])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let available: u64 = stdout
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    (output.status.success() && available >= MIN_AVAILABLE_KIB).then(|| PathBuf::from(SHM))
}
