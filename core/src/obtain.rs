//! What the running appliance must obtain before it can publish a catalog: the bytes of every
//! `url` and `deb` source of each artifact set whose version is not published yet, minus what
//! it already has. Sources it has no way to get (a `deb` without a download URL, not in the
//! blob cache) are named with the reason, so `check` and the git follower can say which one.
//!
//! Pure: what is present and what is published arrive as predicates; the daemon downloads.

use crate::arch::Arch;
use crate::catalog::{Catalog, CpioSource, DebDownload, Digest, Source};
use std::collections::BTreeMap;

/// One download that yields a blob (content named by its sha256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The file itself, from an http(s) URL.
    Url { url: String, sha256: Digest },
    /// One file out of a Debian package downloaded from `deb.url`.
    Deb { deb: DebDownload, package: String, file: String, sha256: Digest },
}

impl Fetch {
    /// The sha256 of the blob this fetch yields.
    pub fn sha256(&self) -> &Digest {
        match self {
            Fetch::Url { sha256, .. } | Fetch::Deb { sha256, .. } => sha256,
        }
    }

    /// The URL it downloads.
    pub fn url(&self) -> &str {
        match self {
            Fetch::Url { url, .. } => url,
            Fetch::Deb { deb, .. } => &deb.url,
        }
    }
}

impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::Url { url, .. } => write!(f, "{url}"),
            Fetch::Deb { deb, package, file, .. } => write!(f, "{file} from {package} ({})", deb.url),
        }
    }
}

/// A source whose bytes are neither present nor downloadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unobtainable {
    /// Where it is used: `profile tiny-live (x86_64), artifact vmlinuz`.
    pub used_by: String,
    /// The source, as an operator wrote it.
    pub what: String,
    pub sha256: Digest,
}

impl std::fmt::Display for Unobtainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (sha256 {}) is not in the blob cache, and the source names no `url` with `deb_sha256` to \
             download the package from",
            self.used_by,
            self.what,
            hex::encode(self.sha256)
        )
    }
}

/// What to obtain for a catalog, each blob once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub fetch: Vec<Fetch>,
    pub unobtainable: Vec<Unobtainable>,
}

/// The downloads that publishing `catalog` needs. `have(sha256)`: the blob is at hand (blob
/// cache, downloads, or a published copy); `published(profile, version)`: that version
/// directory exists, so its sources are not needed.
pub fn plan(catalog: &Catalog, have: &dyn Fn(&Digest) -> bool, published: &dyn Fn(&str, &str) -> bool) -> Plan {
    let mut fetch: BTreeMap<Digest, Fetch> = BTreeMap::new();
    let mut unobtainable: BTreeMap<Digest, Unobtainable> = BTreeMap::new();
    for profile in catalog.profiles() {
        for (&arch, set) in &profile.arches {
            if published(&profile.name, &set.version) {
                continue;
            }
            for artifact in set.files() {
                let used_by = used_by(&profile.name, arch, &artifact.name);
                let mut visit = |source: &Source| {
                    let Some(need) = need(source) else { return };
                    if have(&need.0) || fetch.contains_key(&need.0) || unobtainable.contains_key(&need.0) {
                        return;
                    }
                    match need.1 {
                        Ok(f) => {
                            fetch.insert(need.0, f);
                        }
                        Err(what) => {
                            unobtainable
                                .insert(need.0, Unobtainable { used_by: used_by.clone(), what, sha256: need.0 });
                        }
                    }
                };
                match &artifact.source {
                    Source::Cpio { entries, .. } => {
                        for e in entries {
                            if let CpioSource::File { source, .. } = &e.source {
                                visit(source);
                            }
                        }
                    }
                    other => visit(other),
                }
            }
        }
    }
    Plan { fetch: fetch.into_values().collect(), unobtainable: unobtainable.into_values().collect() }
}

fn used_by(profile: &str, arch: Arch, artifact: &str) -> String {
    format!("profile {profile} ({arch}), artifact {artifact}")
}

/// The blob a source needs and how to get it (`Err`: what it is, when it cannot be fetched);
/// `None` for sources that are no blob (local paths, cpio recipes).
fn need(source: &Source) -> Option<(Digest, Result<Fetch, String>)> {
    match source {
        Source::Url { url, sha256 } => Some((*sha256, Ok(Fetch::Url { url: url.clone(), sha256: *sha256 }))),
        Source::Deb { package, deb_arch, file, sha256, download } => {
            let how = match download {
                Some(deb) => {
                    Ok(Fetch::Deb { deb: deb.clone(), package: package.clone(), file: file.clone(), sha256: *sha256 })
                }
                None => Err(format!("{file} from Debian package {package} ({deb_arch})")),
            };
            Some((*sha256, how))
        }
        Source::Path(_) | Source::Cpio { .. } => None,
    }
}
