//! Building version directories from a catalog's sources.
//!
//! Every missing `<profile>/<version>` is assembled in a temporary directory inside the store
//! (same file system) and renamed into place, so readers see a whole version or none; an
//! existing version directory is never touched. Every byte copied is checked against the
//! sha256 the catalog pins, and every error names the profile, architecture and artifact.

use super::{is_plain_name, TMP_PREFIX};
use crate::config_dir::DirProbe;
use appliance_core::arch::Arch;
use appliance_core::catalog::{Artifact, ArtifactSet, Catalog, CpioSource, Digest, Origin, Source};
use appliance_core::config::ProbeError;
use appliance_core::cpio::{self, Node};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The command that fills the blob cache with the catalog's `deb` and `url` sources.
pub const FETCH_COMMAND: &str = "cargo xtask fetch";

/// Copy buffer: large enough that a 30 MB kernel takes a few hundred system calls.
const COPY_BUF: usize = 256 * 1024;

/// One profile × architecture set and the version it lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedSet {
    pub profile: String,
    pub arch: Arch,
    pub version: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Version directories this call created.
    pub published: Vec<PublishedSet>,
    /// Version directories that were already there (left as they were).
    pub existing: Vec<PublishedSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Starts with where the profile declares the artifact (`FILE:LINE:COL: field`), so a
    /// wrong sha256 or a missing blob points at the line to fix.
    #[error("{origin}: profile {profile} ({arch}), artifact {artifact}: {problem}")]
    Artifact { origin: Origin, profile: String, arch: Arch, artifact: String, problem: Box<ArtifactProblem> },
    #[error("profile {profile} ({arch}): artifact store {}: {error}", path.display())]
    Store { profile: String, arch: Arch, path: PathBuf, error: io::Error },
}

/// What went wrong with one artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactProblem {
    #[error("sha256 mismatch in {}: expected {expected}, found {actual}", path.display())]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("{what} (sha256 {sha256}) is not in the blob cache {}; fetch it with `{FETCH_COMMAND}`", blobs.display())]
    MissingBlob { what: String, sha256: String, blobs: PathBuf },
    #[error("source file {}: {problem}", path.display())]
    Source { path: PathBuf, problem: ProbeError },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("cpio entry {dest}: {problem}")]
    CpioEntry { dest: String, problem: Box<ArtifactProblem> },
    #[error("{0}")]
    Unsupported(String),
}

/// Publishes every profile × architecture set of `catalog` whose version directory does not
/// exist yet. `blobs` is the cache of fetched `deb`/`url` contents, one file per content named
/// by its sha256 in hex.
///
/// Stops at the first error; versions published before it stay (they are complete).
pub fn publish(catalog: &Catalog, store: &Path, blobs: &Path) -> Result<PublishReport, PublishError> {
    let mut report = PublishReport::default();
    for profile in catalog.profiles() {
        for (&arch, set) in &profile.arches {
            let entry = PublishedSet { profile: profile.name.clone(), arch, version: set.version.clone() };
            if publish_set(catalog, store, blobs, &entry, set)? {
                report.published.push(entry);
            } else {
                report.existing.push(entry);
            }
        }
    }
    Ok(report)
}

/// Builds one version directory; `Ok(false)` when it already existed.
fn publish_set(
    catalog: &Catalog,
    store: &Path,
    blobs: &Path,
    at: &PublishedSet,
    set: &ArtifactSet,
) -> Result<bool, PublishError> {
    let store_err = |path: &Path, error: io::Error| PublishError::Store {
        profile: at.profile.clone(),
        arch: at.arch,
        path: path.to_path_buf(),
        error,
    };
    for name in [&at.profile, &at.version] {
        if !is_plain_name(name) {
            let error = io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name"));
            return Err(store_err(store, error));
        }
    }
    let profile_dir = store.join(&at.profile);
    let final_dir = profile_dir.join(&at.version);
    if final_dir.symlink_metadata().is_ok() {
        return Ok(false);
    }
    fs::create_dir_all(&profile_dir).map_err(|e| store_err(&profile_dir, e))?;

    let tmp = TempDir::create(store, &at.profile, &at.version).map_err(|e| store_err(store, e))?;
    for artifact in set.files() {
        let fail = |problem| PublishError::Artifact {
            origin: artifact.origin.clone(),
            profile: at.profile.clone(),
            arch: at.arch,
            artifact: artifact.name.clone(),
            problem: Box::new(problem),
        };
        if !is_plain_name(&artifact.name) {
            return Err(fail(ArtifactProblem::Unsupported(format!("{:?} is not a plain file name", artifact.name))));
        }
        write_artifact(catalog, blobs, artifact, &tmp.path.join(&artifact.name)).map_err(fail)?;
    }
    sync_dir(&tmp.path).map_err(|e| store_err(&tmp.path, e))?;
    match fs::rename(&tmp.path, &final_dir) {
        Ok(()) => {
            tmp.disarm();
            sync_dir(&profile_dir).map_err(|e| store_err(&profile_dir, e))?;
            Ok(true)
        }
        // Another publisher won the race: a version directory is never empty, so rename(2)
        // refuses to replace it, and theirs has the same content as ours.
        Err(_) if final_dir.is_dir() => Ok(false),
        Err(e) => Err(store_err(&final_dir, e)),
    }
}

/// Writes one artifact to `dst` (a new file), verifying what it copies.
fn write_artifact(catalog: &Catalog, blobs: &Path, artifact: &Artifact, dst: &Path) -> Result<(), ArtifactProblem> {
    match &artifact.source {
        Source::Path(_) | Source::Deb { .. } | Source::Url { .. } => {
            let src = locate(catalog, blobs, &artifact.source)?;
            copy_verified(&src, dst, &artifact.digest)
        }
        Source::Cpio { entries, gzip } => {
            let mut nodes = Vec::with_capacity(entries.len());
            for e in entries {
                let node = match &e.source {
                    CpioSource::Dir => Node::Dir,
                    CpioSource::Symlink(target) => Node::Symlink(target.clone()),
                    CpioSource::File { source, digest } => {
                        Node::File(read_verified(catalog, blobs, source, digest).map_err(|problem| {
                            ArtifactProblem::CpioEntry { dest: e.dest.clone(), problem: Box::new(problem) }
                        })?)
                    }
                };
                nodes.push((e.dest.clone(), e.mode, node));
            }
            let archive = cpio::archive(nodes);
            let bytes = if *gzip { cpio::gzip(&archive) } else { archive };
            let io_err = |error| ArtifactProblem::Io { path: dst.to_path_buf(), error };
            let mut f = create_new(dst).map_err(io_err)?;
            f.write_all(&bytes).map_err(io_err)?;
            finish_file(&f).map_err(io_err)
        }
    }
}

/// Where a file source's bytes are: in the config directory (never through a symlink out of
/// it), or in the blob cache.
fn locate(catalog: &Catalog, blobs: &Path, source: &Source) -> Result<PathBuf, ArtifactProblem> {
    let (sha256, what) = match source {
        Source::Path(rel) => {
            let probe = DirProbe { root: catalog.dir().to_path_buf() };
            return probe.resolve(rel).map_err(|problem| ArtifactProblem::Source { path: rel.clone(), problem });
        }
        Source::Deb { package, deb_arch, file, sha256 } => {
            (sha256, format!("{file} from Debian package {package} ({deb_arch})"))
        }
        Source::Url { url, sha256 } => (sha256, format!("download {url}")),
        Source::Cpio { .. } => return Err(ArtifactProblem::Unsupported("a cpio archive inside a cpio archive".into())),
    };
    let hex = hex::encode(sha256);
    let path = blobs.join(&hex);
    match path.metadata() {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(ArtifactProblem::Source { path, problem: ProbeError::NotAFile }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ArtifactProblem::MissingBlob { what, sha256: hex, blobs: blobs.to_path_buf() })
        }
        Err(error) => Err(ArtifactProblem::Io { path, error }),
    }
}

/// Reads a (small) cpio entry's source whole, checking its sha256.
fn read_verified(catalog: &Catalog, blobs: &Path, source: &Source, want: &Digest) -> Result<Vec<u8>, ArtifactProblem> {
    let path = locate(catalog, blobs, source)?;
    let bytes = fs::read(&path).map_err(|error| ArtifactProblem::Io { path: path.clone(), error })?;
    check_digest(&path, want, &Sha256::digest(&bytes).into())?;
    Ok(bytes)
}

/// Copies `src` to the new file `dst` in large blocks, hashing on the way, and fails (leaving
/// the temporary directory to be removed) when the content is not the pinned one.
fn copy_verified(src: &Path, dst: &Path, want: &Digest) -> Result<(), ArtifactProblem> {
    let mut from = File::open(src).map_err(|error| ArtifactProblem::Io { path: src.to_path_buf(), error })?;
    let io_err = |error| ArtifactProblem::Io { path: dst.to_path_buf(), error };
    let to = create_new(dst).map_err(io_err)?;
    let mut writer = BufWriter::with_capacity(COPY_BUF, HashingWriter { inner: to, hash: Sha256::new() });
    io::copy(&mut from, &mut writer).map_err(io_err)?;
    let HashingWriter { inner, hash } = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    check_digest(src, want, &hash.finalize().into())?;
    finish_file(&inner).map_err(io_err)
}

fn check_digest(path: &Path, want: &Digest, got: &Digest) -> Result<(), ArtifactProblem> {
    if want == got {
        return Ok(());
    }
    Err(ArtifactProblem::Checksum { path: path.to_path_buf(), expected: hex::encode(want), actual: hex::encode(got) })
}

struct HashingWriter {
    inner: File,
    hash: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o644).open(path)
}

/// Makes a published file read-only and durable before its directory is renamed into place.
fn finish_file(f: &File) -> io::Result<()> {
    f.set_permissions(fs::Permissions::from_mode(0o444))?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A build directory inside the store, removed on drop unless it was renamed into place.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    fn create(store: &Path, profile: &str, version: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = store.join(format!("{TMP_PREFIX}{profile}-{version}-{}-{n}", std::process::id()));
        fs::create_dir(&path)?;
        Ok(TempDir { path, armed: true })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover is only disk space, and `gc` sweeps old ones.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
