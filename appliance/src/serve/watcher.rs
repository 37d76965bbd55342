//! Reload on change: polls the config directory (and the overlay) for added, removed or
//! modified files. Polling every couple of seconds costs a few `stat`s and needs no inotify
//! limits or extra crate; an edit usually lands as several writes, so a change is acted on once
//! it has been stable for one poll.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A cheap summary of a directory tree: every file's path, size and mtime, sorted.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

pub fn fingerprint(dir: &Path, overlay: Option<&Path>) -> Fingerprint {
    let mut out = Vec::new();
    walk(dir, &mut out, 0);
    if let Some(o) = overlay {
        if let Ok(m) = std::fs::metadata(o) {
            out.push((o.to_path_buf(), m.len(), m.modified().ok()));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Fingerprint, depth: usize) {
    // Config dirs are shallow; a bound keeps a symlink loop from running away.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path, out, depth + 1);
        } else {
            out.push((path, meta.len(), meta.modified().ok()));
        }
    }
}

/// Calls `on_change` whenever the tree differs from `applied` (the fingerprint taken before the
/// config in force was read, so no edit made while it loaded is missed) and then stayed the
/// same for one interval.
pub async fn run(
    dir: PathBuf,
    overlay: Option<PathBuf>,
    interval: Duration,
    mut applied: Fingerprint,
    on_change: impl Fn(),
) {
    let snap = |d: PathBuf, o: Option<PathBuf>| async move {
        tokio::task::spawn_blocking(move || fingerprint(&d, o.as_deref())).await.unwrap_or_default()
    };
    let mut pending: Option<Fingerprint> = None;
    loop {
        tokio::time::sleep(interval).await;
        let now = snap(dir.clone(), overlay.clone()).await;
        match pending.take() {
            Some(p) if p == now && now != applied => {
                on_change();
                applied = now;
            }
            Some(p) if p == now => {}
            _ if now != applied => pending = Some(now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_edits_additions_and_removals() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), "a").unwrap();
        let f1 = fingerprint(d.path(), None);
        std::fs::write(d.path().join("a.yaml"), "ab").unwrap();
        let f2 = fingerprint(d.path(), None);
        assert_ne!(f1, f2);
        std::fs::create_dir(d.path().join("files")).unwrap();
        std::fs::write(d.path().join("files/k"), "k").unwrap();
        let f3 = fingerprint(d.path(), None);
        assert_ne!(f2, f3);
        std::fs::remove_file(d.path().join("files/k")).unwrap();
        assert_eq!(fingerprint(d.path(), None), f2);
    }
}
