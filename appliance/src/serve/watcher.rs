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
    if let Ok(root) = dir.canonicalize() {
        walk(&root, dir, &mut out, 0);
    }
    if let Some(o) = overlay {
        if let Ok(m) = std::fs::metadata(o) {
            out.push((o.to_path_buf(), m.len(), m.modified().ok()));
        }
    }
    out.sort();
    out
}

/// Adds the files under `dir` (inside the config directory, whose real path is `root`).
///
/// Symbolic links are never followed out of the config directory, nor into a directory: a
/// link to `/` would otherwise have this walk the whole machine every poll. A link to a file
/// inside counts with its target's size and mtime (an edit through it is seen); any other link
/// counts with its own, so re-pointing it is seen.
fn walk(root: &Path, dir: &Path, out: &mut Fingerprint, depth: usize) {
    // Config dirs are shallow (the YAML files, a few artifact directories).
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(own) = std::fs::symlink_metadata(&path) else { continue };
        let meta = if own.file_type().is_symlink() {
            let inside = path.canonicalize().ok().filter(|real| real.starts_with(root));
            match inside.and_then(|real| std::fs::metadata(real).ok()) {
                Some(target) if target.is_file() => target,
                _ => own,
            }
        } else {
            own
        };
        if meta.is_dir() {
            walk(root, &path, out, depth + 1);
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

    #[test]
    fn links_are_not_followed_out_of_the_directory_nor_into_directories() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), "a").unwrap();
        std::fs::write(outside.path().join("o"), "o").unwrap();
        symlink("/", d.path().join("root")).unwrap();
        symlink(d.path(), d.path().join("loop")).unwrap();
        symlink(outside.path().join("o"), d.path().join("out")).unwrap();
        symlink(d.path().join("a.yaml"), d.path().join("in.yaml")).unwrap();
        let start = std::time::Instant::now();
        let f1 = fingerprint(d.path(), None);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        let names: Vec<_> = f1.iter().map(|(p, ..)| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["a.yaml", "in.yaml", "loop", "out", "root"]);
        // A file outside, reached through a link, is not watched.
        std::fs::write(outside.path().join("o"), "changed outside").unwrap();
        assert_eq!(fingerprint(d.path(), None), f1);
        // A file inside, edited, is seen through its link too.
        std::fs::write(d.path().join("a.yaml"), "abc").unwrap();
        let f2 = fingerprint(d.path(), None);
        let size = |f: &Fingerprint, n: &str| f.iter().find(|(p, ..)| p.ends_with(n)).unwrap().1;
        assert_eq!((size(&f2, "a.yaml"), size(&f2, "in.yaml")), (3, 3));
    }
}
