//! Garbage collection of old versions, and the record of transfers that keeps a version alive.
//!
//! A version directory is removed only when no set of the current catalog references it and
//! no transfer touched it within the grace period: a node that was handed version N just before
//! a reload keeps fetching N's files, and each fetch postpones N's removal. The decision is the
//! core's pure `appliance_core::gc::plan`; `gc` only gathers its inputs from the disk and
//! carries it out.

use super::{is_plain_name, GC_PREFIX, TMP_PREFIX};
use appliance_core::catalog::Catalog;
use appliance_core::gc::{plan, Candidate, Verdict};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// `(profile, version)` directories removed.
    pub removed: Vec<(String, String)>,
    /// `(profile, version)` directories kept, and why.
    pub kept: Vec<(String, String, Verdict)>,
    /// Leftover build or removal directories of interrupted runs that were swept.
    pub swept: Vec<String>,
    /// What could not be read or removed (the rest of the run goes on).
    pub errors: Vec<String>,
    /// Bytes of the files in the removed versions.
    pub freed_bytes: u64,
}

/// Removes the version directories of `store` that `plan` condemns. `last_touch` says when a
/// transfer last touched a version (usually `Touches::last`); since that memory does not survive
/// a restart, a caller that just started should report its start time for versions it has not
/// seen, so that a restart never shortens the grace period.
pub fn gc(
    catalog: &Catalog,
    store: &Path,
    grace: Duration,
    last_touch: &impl Fn(&str, &str) -> Option<SystemTime>,
    now: SystemTime,
) -> GcReport {
    let mut report = GcReport::default();
    let referenced: BTreeSet<(String, String)> =
        catalog.profiles().flat_map(|p| p.arches.values().map(|s| (p.name.clone(), s.version.clone()))).collect();
    let mut candidates = Vec::new();
    let mut profile_dirs = Vec::new();
    for (name, is_dir, mtime) in list(store, &mut report.errors) {
        if name.starts_with(TMP_PREFIX) || name.starts_with(GC_PREFIX) {
            // A build older than the grace period was interrupted; a removal always was.
            let stale = name.starts_with(GC_PREFIX) || now.duration_since(mtime).is_ok_and(|age| age > grace);
            if is_dir && stale {
                match fs::remove_dir_all(store.join(&name)) {
                    Ok(()) => report.swept.push(name),
                    Err(e) => report.errors.push(format!("{}: {e}", store.join(&name).display())),
                }
            }
            continue;
        }
        if !is_dir || !is_plain_name(&name) {
            continue;
        }
        for (version, is_dir, mtime) in list(&store.join(&name), &mut report.errors) {
            if is_dir && is_plain_name(&version) {
                let last_used = last_touch(&name, &version).map_or(mtime, |t| t.max(mtime));
                candidates.push(Candidate { profile: name.clone(), version, last_used: since_epoch(last_used) });
            }
        }
        profile_dirs.push(name);
    }
    candidates.sort_by(|a, b| (&a.profile, &a.version).cmp(&(&b.profile, &b.version)));

    for (c, verdict) in candidates.iter().zip(plan(&referenced, &candidates, since_epoch(now), grace)) {
        if verdict != Verdict::Remove {
            report.kept.push((c.profile.clone(), c.version.clone(), verdict));
            continue;
        }
        let size = dir_size(&store.join(&c.profile).join(&c.version));
        match remove_version(store, &c.profile, &c.version) {
            Ok(()) => {
                report.freed_bytes += size;
                report.removed.push((c.profile.clone(), c.version.clone()));
            }
            Err(e) => report.errors.push(format!("{}/{}: {e}", c.profile, c.version)),
        }
    }
    // A profile gone from the catalog leaves an empty directory once its last version goes.
    for p in profile_dirs.iter().filter(|p| catalog.profile(p).is_none()) {
        let _ = fs::remove_dir(store.join(p));
    }
    report
}

/// The plan's time scale; a time before 1970 (an mtime of a file from nowhere) counts as 1970.
fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Entries of `dir` as (name, is a directory (not following symlinks), mtime).
fn list(dir: &Path, errors: &mut Vec<String>) -> Vec<(String, bool, SystemTime)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let (entry, meta) = match entry.and_then(|e| e.metadata().map(|m| (e, m))) {
            Ok(x) => x,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        // Names that are not UTF-8 are nothing we published.
        let Ok(name) = entry.file_name().into_string() else { continue };
        out.push((name, meta.is_dir(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
    }
    out
}

/// Bytes of the regular files in a version directory (it holds files only; symlinks and
/// anything unreadable count as nothing).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// Renames the version out of the served tree first, so a half-deleted version is never
/// served, then deletes it. Transfers that already opened a file finish normally.
fn remove_version(store: &Path, profile: &str, version: &str) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let doomed = store.join(format!("{GC_PREFIX}{profile}-{version}-{}-{n}", std::process::id()));
    fs::rename(store.join(profile).join(version), &doomed)?;
    fs::remove_dir_all(&doomed)
}

/// When each version was last transferred, for `gc`. Shared by the TFTP and HTTP servers, which
/// call `touch` on every artifact transfer.
#[derive(Debug, Default)]
pub struct Touches {
    /// profile → version → time. Nested so that touching a known version allocates nothing.
    seen: Mutex<HashMap<String, HashMap<String, SystemTime>>>,
}

impl Touches {
    pub fn new() -> Self {
        Touches::default()
    }

    /// Records a transfer of a file of `profile`/`version` at `now`.
    pub fn touch(&self, profile: &str, version: &str, now: SystemTime) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(profile) {
            seen.insert(profile.to_string(), HashMap::new());
        }
        let Some(versions) = seen.get_mut(profile) else { return };
        match versions.get_mut(version) {
            Some(t) => *t = (*t).max(now),
            None => {
                versions.insert(version.to_string(), now);
            }
        }
    }

    /// When a file of `profile`/`version` was last transferred, if ever since this started.
    pub fn last(&self, profile: &str, version: &str) -> Option<SystemTime> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(profile)?.get(version).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn touches_keep_the_latest_time() {
        let touches = Touches::new();
        assert_eq!(touches.last("live", "v1"), None);
        touches.touch("live", "v1", t(20));
        touches.touch("live", "v1", t(10));
        touches.touch("live", "v2", t(5));
        assert_eq!(touches.last("live", "v1"), Some(t(20)));
        assert_eq!(touches.last("live", "v2"), Some(t(5)));
        assert_eq!(touches.last("rescue", "v1"), None);
    }
}
