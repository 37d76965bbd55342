//! Which artifact versions garbage collection may remove: the decision, without the disk.
//!
//! A version is removed only when no set of the current catalog references it and no transfer
//! touched it within the grace period: a node that was handed version N just before a reload
//! keeps fetching N's files, and each fetch postpones N's removal. The daemon's
//! `appliance::artifacts::gc` lists the store, asks `plan`, and carries the verdicts out.
//!
//! Times are durations since the Unix epoch, read by the caller: the core has no clock.

use std::collections::BTreeSet;
use std::time::Duration;

/// A version directory found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub profile: String,
    pub version: String,
    /// The later of its last recorded transfer and its directory's mtime (publish time), since
    /// the Unix epoch.
    pub last_used: Duration,
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

/// Decides, for each candidate in order, whether it goes. `now` is since the Unix epoch.
pub fn plan(
    referenced: &BTreeSet<(String, String)>,
    candidates: &[Candidate],
    now: Duration,
    grace: Duration,
) -> Vec<Verdict> {
    candidates
        .iter()
        .map(|c| {
            if referenced.contains(&(c.profile.clone(), c.version.clone())) {
                return Verdict::Referenced;
            }
            match now.checked_sub(c.last_used) {
                Some(idle) if idle > grace => Verdict::Remove,
                _ => Verdict::Recent,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(1800);

    fn t(secs: u64) -> Duration {
        Duration::from_secs(secs)
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
}
