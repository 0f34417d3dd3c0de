//! Locating `initdb` and `pg_ctl`.
//!
//! Debian-style installs keep every major version side by side under
//! `/usr/lib/postgresql/<version>/bin` and put only wrappers (or nothing) on `PATH`, so that
//! tree is searched first and the highest version wins; `PATH` is the fallback. Both programs
//! must come from the same directory, because `pg_ctl` starts the `postgres` that sits next to
//! it and mixing versions would give an unusable cluster.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where Debian/Ubuntu packages install the server binaries, one directory per version.
pub(crate) const DEBIAN_LIB_ROOT: &str = "/usr/lib/postgresql";

/// The two programs a cluster needs, taken from one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) pg_ctl: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, if both exist there and are executable.
    pub(crate) fn in_dir(dir: &Path) -> Option<Self> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (is_executable(&initdb) && is_executable(&pg_ctl)).then_some(Self { initdb, pg_ctl })
    }
}

/// Searches `<lib_root>/<version>/bin` (highest version first), then every directory of
/// `path_var` in order.
pub(crate) fn find(lib_root: &Path, path_var: Option<&OsStr>) -> Option<Binaries> {
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(lib_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = parse_version(name.to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    let from_lib = versions
        .iter()
        .rev()
        .find_map(|(_, bin)| Binaries::in_dir(bin));
    from_lib.or_else(|| {
        std::env::split_paths(path_var?)
            .filter(|dir| !dir.as_os_str().is_empty())
            .find_map(|dir| Binaries::in_dir(&dir))
    })
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_bin_dir(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for name in ["initdb", "pg_ctl"] {
            let path = dir.join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn highest_numeric_version_wins_over_lexical_order() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16", "100", "notaversion"] {
            fake_bin_dir(&root.path().join(version).join("bin"));
        }
        let found = find(root.path(), None).unwrap();
        assert_eq!(found.initdb, root.path().join("100/bin/initdb"));
    }

    #[test]
    fn path_is_searched_when_the_debian_tree_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("elsewhere");
        fake_bin_dir(&bin);
        let path_var = std::env::join_paths([root.path().join("empty"), bin.clone()]).unwrap();
        let found = find(&root.path().join("missing"), Some(&path_var)).unwrap();
        assert_eq!(found.pg_ctl, bin.join("pg_ctl"));
    }

    #[test]
    fn nothing_is_found_in_empty_places() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find(root.path(), Some(OsStr::new(""))), None);
    }

    #[test]
    fn non_executable_files_are_ignored() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("15/bin");
        fake_bin_dir(&bin);
        std::fs::set_permissions(bin.join("pg_ctl"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert_eq!(find(root.path(), None), None);
    }
}
