//! Obtaining what a catalog's artifacts are made from, before `publish`: the core's
//! `obtain::plan` says which `url` and `deb` sources are missing; this module checks that they
//! fit on the state file system, downloads them (resumable, sha256-verified: `download`) and
//! extracts files from packages (`deb`), all into `<state>/downloads/<sha256>`.
//!
//! Only the daemon's own downloads live there, and every one of them can be fetched again, so
//! `collect` may delete those the catalog in force no longer uses; the blob cache that
//! `cargo xtask fetch` fills is never touched.

pub mod deb;
pub mod download;

use crate::artifacts::Blobs;
use appliance_core::catalog::{Catalog, Digest};
use appliance_core::obtain::{plan, Fetch, Unobtainable};
use reqwest::blocking::Client;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tracing::info;

/// Why a catalog's sources could not all be obtained.
#[derive(Debug, thiserror::Error)]
pub enum ObtainError {
    #[error("{} source(s) cannot be obtained:\n{}", .0.len(), list(.0))]
    Unobtainable(Vec<Unobtainable>),
    #[error(
        "the downloads need about {} MiB (twice {} MiB: the download and its published copy) but the state file \
         system {} has {} MiB free after garbage collection",
        mib(*needed), mib(*needed / 2), dir.display(), mib(*free)
    )]
    NoSpace { needed: u64, free: u64, dir: PathBuf },
    #[error("{0}")]
    Download(#[from] download::DownloadError),
    #[error("{0}")]
    Deb(#[from] deb::DebError),
    #[error("{0}")]
    Client(#[from] crate::http_client::ClientError),
}

fn list(u: &[Unobtainable]) -> String {
    u.iter().map(|u| format!("  {u}")).collect::<Vec<_>>().join("\n")
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// What `obtain` did.
#[derive(Debug, Default)]
pub struct Obtained {
    /// Blobs downloaded or extracted, by sha256.
    pub fetched: Vec<Digest>,
}

/// The sources `catalog` cannot get at all with what `blobs` holds (for `check`).
pub fn unobtainable(catalog: &Catalog, store: &Path, blobs: &Blobs) -> Vec<Unobtainable> {
    plan(catalog, &|d| blobs.find(d).is_some(), &|p, v| store.join(p).join(v).is_dir()).unobtainable
}

/// Downloads into `downloads` every blob that publishing `catalog` needs and `blobs` lacks.
/// Refuses, before downloading anything, when a source cannot be obtained or the downloads
/// (known by their Content-Length) would not fit in the free space of `downloads`' file system
/// (the caller runs the garbage collection first).
pub fn obtain(
    client: &Client,
    catalog: &Catalog,
    store: &Path,
    blobs: &Blobs,
    downloads: &Path,
) -> Result<Obtained, ObtainError> {
    let p = plan(catalog, &|d| blobs.find(d).is_some(), &|p, v| store.join(p).join(v).is_dir());
    if !p.unobtainable.is_empty() {
        return Err(ObtainError::Unobtainable(p.unobtainable));
    }
    if p.fetch.is_empty() {
        return Ok(Obtained::default());
    }
    std::fs::create_dir_all(downloads)
        .map_err(|error| download::DownloadError::Io { path: downloads.to_path_buf(), error })?;
    // A package is downloaded once however many of its files are needed.
    let mut urls = HashSet::new();
    let download_bytes: u64 = p
        .fetch
        .iter()
        .filter(|f| urls.insert(f.url().to_string()))
        .filter(|f| !downloads.join(hex::encode(package_sha(f))).is_file())
        .filter_map(|f| download::size(client, f.url()))
        .sum();
    let needed = download_bytes.saturating_mul(2);
    let free = free_space(downloads).unwrap_or(u64::MAX);
    if needed > free {
        return Err(ObtainError::NoSpace { needed, free, dir: downloads.to_path_buf() });
    }
    info!(blobs = p.fetch.len(), mib = mib(download_bytes), "obtaining artifact sources");
    let mut out = Obtained::default();
    for f in &p.fetch {
        match f {
            Fetch::Url { url, sha256 } => {
                download::download(client, url, sha256, downloads)?;
            }
            Fetch::Deb { deb, package, file, sha256 } => {
                let pkg = download::download(client, &deb.url, &deb.sha256, downloads)?;
                deb::extract(&pkg, file, sha256, &downloads.join(hex::encode(sha256)))?;
                info!(%package, %file, sha256 = %hex::encode(sha256), "extracted from the package");
            }
        }
        out.fetched.push(*f.sha256());
    }
    Ok(out)
}

/// The blob a fetch downloads (the package, for a file out of a package).
fn package_sha(f: &Fetch) -> &Digest {
    match f {
        Fetch::Url { sha256, .. } => sha256,
        Fetch::Deb { deb, .. } => &deb.sha256,
    }
}

/// Bytes an unprivileged writer may still use on `dir`'s file system.
pub fn free_space(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// Removes from `downloads` every file (finished or partial) that is not a source of one of
/// `keep` (the catalog in force, and one being prepared): they were fetched from a URL and can
/// be again. Returns the names removed.
pub fn collect(downloads: &Path, keep: &[&Catalog]) -> Vec<String> {
    let mut wanted = HashSet::new();
    for c in keep {
        for f in plan(c, &|_| false, &|_, _| false).fetch {
            wanted.insert(hex::encode(f.sha256()));
            wanted.insert(hex::encode(package_sha(&f)));
        }
    }
    let Ok(entries) = std::fs::read_dir(downloads) else { return Vec::new() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let sha = name.strip_suffix(".part").unwrap_or(&name);
        if !wanted.contains(sha) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// The default place for the daemon's downloads.
pub fn downloads_dir(state: &Path) -> PathBuf {
    state.join("downloads")
}
