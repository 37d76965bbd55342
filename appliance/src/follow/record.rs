//! `<state>/git/serving`: the commit served last and the repository it came from, so a
//! restart serves it again at once (its checkout and artifact versions are still on disk)
//! instead of waiting for the network.

use std::path::{Path, PathBuf};

fn path(state: &Path) -> PathBuf {
    state.join("git").join("serving")
}

/// The recorded commit, if it came from `url` and looks like an object id.
pub fn read(state: &Path, url: &str) -> Option<String> {
    serving(state).filter(|(u, _)| u == url).map(|(_, c)| c)
}

/// The repository (redacted URL) and commit served last.
pub fn serving(state: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path(state)).ok()?;
    let mut lines = text.lines();
    let (url, commit) = (lines.next()?, lines.next()?.trim());
    let is_id = commit.len() >= 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    is_id.then(|| (url.to_string(), commit.to_string()))
}

/// The checkout of the commit served last, and its origin (for `explain --serving`).
pub fn serving_config(state: &Path) -> Option<(PathBuf, appliance_core::catalog::ConfigSource)> {
    let (url, commit) = serving(state)?;
    let dir = state.join("commits").join(&commit);
    Some((dir, appliance_core::catalog::ConfigSource::Git { url, commit }))
}

pub fn write(state: &Path, url: &str, commit: &str) -> std::io::Result<()> {
    let p = path(state);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::atomic_file::write(&p, format!("{url}\n{commit}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_only_used_for_its_own_repository() {
        let d = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(read(d.path(), "git://h/r"), None);
        write(d.path(), "git://h/r", id).unwrap();
        assert_eq!(read(d.path(), "git://h/r").as_deref(), Some(id));
        assert_eq!(read(d.path(), "git://h/other"), None);
        write(d.path(), "git://h/r", "not-an-id").unwrap();
        assert_eq!(read(d.path(), "git://h/r"), None);
    }
}
