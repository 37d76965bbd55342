//! Files of the state directory that must survive a crash whole: the lease table, the install
//! log. A write goes to a temporary file in the same directory, is fsynced, renamed over the
//! old file, and the directory is fsynced (the rename is durable only then); a crash at any
//! point leaves the old file or the new one, never a torn one. A file that no longer decodes is
//! moved aside (`<name>.corrupt-<unix seconds>`) rather than deleted, so nothing is lost to an
//! operator who wants to look at it.
//!
//! Blocking calls: async code runs them on the blocking pool.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` over `path` atomically and durably (see the module documentation). The
/// directory is created if missing.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{}{}", temp_prefix(path), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself is only durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The start of the temporary file name of a write to `path`; the writer's process id follows.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Removes the temporary files of writes to `path` (`what` names them in the log) that a kill
/// left between creating and renaming. Call it at start, when no write of ours is running, so
/// every one is stale; without it each kill -9 during a write would leave a file behind for good.
pub fn remove_stale_temps(path: &Path, what: &str) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = temp_prefix(path);
    for stale in entries.flatten().map(|e| e.path()) {
        if !stale.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)) {
            continue;
        }
        match std::fs::remove_file(&stale) {
            Ok(()) => tracing::info!(path = %stale.display(), "{what} left unfinished, removed"),
            Err(e) => tracing::warn!(path = %stale.display(), "{what} left unfinished, cannot remove it: {e}"),
        }
    }
}

/// Moves the corrupt state file `path` (what it holds: `what`, e.g. "lease file") aside and
/// logs it with `error`, the reason it does not decode; the caller starts empty.
pub fn set_aside(path: &Path, now: u64, what: &str, error: &dyn std::fmt::Display) {
    match move_aside(path, now) {
        Ok(aside) => tracing::warn!(
            path = %path.display(),
            moved_to = %aside.display(),
            "{what} is corrupt, moved aside, starting empty: {error}"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "{what} is corrupt ({error}) and could not be moved aside ({e}), starting empty"
        ),
    }
}

/// Moves a corrupt `path` aside to `<name>.corrupt-<now>` next to it; returns where it went.
pub fn move_aside(path: &Path, now: u64) -> io::Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = path.with_file_name(format!("{name}.corrupt-{now}"));
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary left");
    }

    #[test]
    fn corrupt_files_go_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("installs.json");
        std::fs::write(&path, b"{ broken").unwrap();
        let aside = move_aside(&path, 1234).unwrap();
        assert_eq!(aside, dir.path().join("installs.json.corrupt-1234"));
        assert!(!path.exists());
        assert_eq!(std::fs::read(aside).unwrap(), b"{ broken");
    }
}
