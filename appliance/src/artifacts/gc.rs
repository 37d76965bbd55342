//! Garbage collection of old versions, and the record of transfers that keeps a version alive.
//!
//! A version directory is removed only when no set of the current catalog references it and
//! no transfer touched it within the grace period: a node that was handed version N just before
//! a reload keeps fetching N's files, and each fetch postpones N's removal. The decision is the
//! pure `plan`; `gc` only gathers its inputs from the disk and carries it out.

use super::{is_plain_name, GC_PREFIX, TMP_PREFIX};
use crate::catalog::Catalog;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A version directory found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub profile: String,
    pub version: String,
    /// The later of its last recorded transfer and its directory's mtime (publish time).
    pub last_used: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A set of the current catalog names this version: keep.
    Referenced,
    /// Unreferenced, but used within the grace period (or "in the future", after a clock step):
    /// keep for now.
    Recent,
    /// Unreferenced and idle for longer than the grace period.
    Remove,
}

/// Decides, for each candidate in order, whether it goes. Pure.
pub fn plan(
    referenced: &BTreeSet<(String, String)>,
    candidates: &[Candidate],
    now: SystemTime,
    grace: Duration,
) -> Vec<Verdict> {
    candidates
        .iter()
        .map(|c| {
            if referenced.contains(&(c.profile.clone(), c.version.clone())) {
                return Verdict::Referenced;
            }
            match now.duration_since(c.last_used) {
                Ok(idle) if idle > grace => Verdict::Remove,
                _ => Verdict::Recent,
            }
        })
        .collect()
}

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
    let referenced: BTreeSet<(String, String)> = catalog
        .profiles
        .values()
        .flat_map(|p| p.arches.values().map(|s| (p.name.clone(), s.version.clone())))
        .collect();
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
                candidates.push(Candidate { profile: name.clone(), version, last_used });
            }
        }
        profile_dirs.push(name);
    }
    candidates.sort_by(|a, b| (&a.profile, &a.version).cmp(&(&b.profile, &b.version)));

    for (c, verdict) in candidates.iter().zip(plan(&referenced, &candidates, now, grace)) {
        if verdict != Verdict::Remove {
            report.kept.push((c.profile.clone(), c.version.clone(), verdict));
            continue;
        }
        match remove_version(store, &c.profile, &c.version) {
            Ok(()) => report.removed.push((c.profile.clone(), c.version.clone())),
            Err(e) => report.errors.push(format!("{}/{}: {e}", c.profile, c.version)),
        }
    }
    // A profile gone from the catalog leaves an empty directory once its last version goes.
    for p in profile_dirs.iter().filter(|p| !catalog.profiles.contains_key(*p)) {
        let _ = fs::remove_dir(store.join(p));
    }
    report
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

    const GRACE: Duration = Duration::from_secs(1800);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn check(referenced: &[(&str, &str)], candidate: (&str, &str, u64), now: u64, expected: Verdict) {
        let referenced = referenced.iter().map(|(p, v)| (p.to_string(), v.to_string())).collect();
        let (profile, version, last) = candidate;
        let c = Candidate { profile: profile.into(), version: version.into(), last_used: t(last) };
        assert_eq!(plan(&referenced, &[c], t(now), GRACE), vec![expected], "{candidate:?} at {now}");
    }

    #[test]
    fn referenced_version_is_kept_however_old() {
        check(&[("live", "v1")], ("live", "v1", 0), 1_000_000, Verdict::Referenced);
    }

    #[test]
    fn unreferenced_version_is_kept_within_grace() {
        check(&[("live", "v2")], ("live", "v1", 1000), 1000 + 1800, Verdict::Recent);
        check(&[], ("live", "v1", 1000), 1001, Verdict::Recent);
    }

    #[test]
    fn unreferenced_version_goes_after_grace() {
        check(&[("live", "v2")], ("live", "v1", 1000), 1000 + 1801, Verdict::Remove);
    }

    #[test]
    fn same_version_of_another_profile_is_not_a_reference() {
        check(&[("rescue", "v1")], ("live", "v1", 0), 1_000_000, Verdict::Remove);
    }

    #[test]
    fn use_in_the_future_keeps_the_version() {
        check(&[], ("live", "v1", 5000), 1000, Verdict::Recent);
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
