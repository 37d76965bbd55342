//! One download into a content-addressed directory: `<dir>/<sha256>.part` while it runs, kept
//! across cuts and resumed with `Range`, hashed as it goes, and renamed to `<dir>/<sha256>`
//! only once the whole content has the pinned sha256. A mismatch deletes the part file, since
//! resuming a wrong file can only stay wrong.
//!
//! A download whose length was not announced (or that grows past it) cannot be checked against
//! the free space beforehand: it stops once the file system has less room left than the part
//! file already takes, since publishing needs a copy of it as large again, and on a full file
//! system; either way the part file is removed at once, so the space is given back and the
//! rest of the daemon (checkouts, leases, the journal) keeps working.

use appliance_core::catalog::Digest;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often a cut download is resumed within one call before giving up.
pub const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: sha256 mismatch: expected {expected}, downloaded {actual} ({bytes} bytes)")]
    Checksum { url: String, expected: String, actual: String, bytes: u64 },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {error} (after {attempts} attempts; {bytes} bytes kept for the next try)")]
    Transfer { url: String, error: String, attempts: u32, bytes: u64 },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error(
        "{url}: not enough space on the state file system {}: stopped after {bytes} bytes with {free} bytes free \
         (publishing needs a copy as large again); the partial download was removed",
        dir.display()
    )]
    NoSpace { url: String, dir: PathBuf, bytes: u64, free: u64 },
}

/// How often (in bytes written) a download looks at the free space.
const SPACE_CHECK_BYTES: u64 = 1 << 20;

/// Downloads `url` to `<dir>/<hex sha256>` unless it is there already, and returns the path.
/// Progress goes to the log every 5 s and at the end.
pub fn download(client: &Client, url: &str, sha256: &Digest, dir: &Path) -> Result<PathBuf, DownloadError> {
    let name = hex::encode(sha256);
    let done = dir.join(&name);
    if done.is_file() {
        return Ok(done);
    }
    let part = dir.join(format!("{name}.part"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DownloadError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut file =
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&part).map_err(io_err(&part))?;
    let mut progress = Progress { url, started: Instant::now(), last: Instant::now(), total: None };
    let mut attempt = 0;
    let hash = loop {
        attempt += 1;
        match fetch_rest(client, url, &mut file, &part, &mut progress) {
            Ok(hash) => break hash,
            Err(Failure::Fatal(e)) => {
                if matches!(e, DownloadError::NoSpace { .. }) {
                    drop(file);
                    std::fs::remove_file(&part).map_err(io_err(&part))?;
                    warn!(%url, "{e}");
                }
                return Err(e);
            }
            Err(Failure::Cut(error)) => {
                let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
                if attempt >= ATTEMPTS {
                    return Err(DownloadError::Transfer { url: url.to_string(), error, attempts: attempt, bytes });
                }
                warn!(%url, bytes, attempt, "download cut ({error}): resuming");
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            }
        }
    };
    let bytes = file.metadata().map_err(io_err(&part))?.len();
    if hash != *sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(DownloadError::Checksum {
            url: url.to_string(),
            expected: hex::encode(sha256),
            actual: hex::encode(hash),
            bytes,
        });
    }
    file.sync_all().map_err(io_err(&part))?;
    std::fs::rename(&part, &done).map_err(io_err(&done))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    info!(%url, bytes, secs = progress.started.elapsed().as_secs_f32(), "downloaded");
    Ok(done)
}

enum Failure {
    /// Worth resuming: the connection broke or stalled.
    Cut(String),
    Fatal(DownloadError),
}

/// Asks for what the part file lacks and appends it; returns the sha256 of the whole file.
fn fetch_rest(
    client: &Client,
    url: &str,
    file: &mut File,
    part: &Path,
    progress: &mut Progress<'_>,
) -> Result<Digest, Failure> {
    let io = |error| Failure::Fatal(DownloadError::Io { path: part.to_path_buf(), error });
    let have = file.metadata().map_err(io)?.len();
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().map_err(|e| Failure::Cut(chain(&e)))?;
    let status = response.status();
    let offset = match status {
        StatusCode::PARTIAL_CONTENT if have > 0 && range_start(&response) == Some(have) => have,
        // The server ignored the range (or there was none): start over.
        StatusCode::OK => 0,
        // Nothing left to fetch: the part file already holds the whole content.
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            return hash_prefix(file, have).map(|h| h.finalize().into()).map_err(io)
        }
        s if s.is_success() => 0,
        status => return Err(Failure::Fatal(DownloadError::Status { url: url.to_string(), status })),
    };
    if offset == 0 {
        file.set_len(0).map_err(io)?;
    }
    let mut hash = hash_prefix(file, offset).map_err(io)?;
    progress.total = content_length(&response).map(|n| n + offset);
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let dir = part.parent().unwrap_or(Path::new("."));
    let no_space = |bytes: u64| {
        let free = crate::obtain::free_space(dir).unwrap_or(0);
        Failure::Fatal(DownloadError::NoSpace { url: url.to_string(), dir: dir.to_path_buf(), bytes, free })
    };
    let mut written = offset;
    let mut next_check = written + SPACE_CHECK_BYTES;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Cut(e.to_string())),
        };
        match file.write_all(&buf[..n]) {
            Err(e) if e.kind() == io::ErrorKind::StorageFull => return Err(no_space(written)),
            other => other.map_err(io)?,
        }
        hash.update(&buf[..n]);
        written += n as u64;
        progress.tick(written);
        if written >= next_check {
            next_check = written + SPACE_CHECK_BYTES;
            // Known lengths were checked before the first byte; this catches the others (and
            // anything else filling the file system meanwhile).
            if crate::obtain::free_space(dir).is_some_and(|free| free < written) {
                return Err(no_space(written));
            }
        }
    }
    if progress.total.is_some_and(|t| written < t) {
        return Err(Failure::Cut(format!("connection closed at {written} of {} bytes", progress.total.unwrap_or(0))));
    }
    Ok(hash.finalize().into())
}

/// The sha256 state after the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    let mut hash = Sha256::new();
    file.seek(SeekFrom::Start(0))?;
    io::copy(&mut file.take(len), &mut HashWriter(&mut hash))?;
    Ok(hash)
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn content_length(r: &Response) -> Option<u64> {
    r.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The first byte of a `Content-Range: bytes A-B/N` answer.
fn range_start(r: &Response) -> Option<u64> {
    let v = r.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// The size `url` reports (HEAD's Content-Length), for the space check.
pub fn size(client: &Client, url: &str) -> Option<u64> {
    let r = client.head(url).send().ok()?;
    r.status().is_success().then(|| content_length(&r)).flatten()
}

/// An error with its causes, since reqwest's own message stops at the outermost one.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

struct Progress<'a> {
    url: &'a str,
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress<'_> {
    fn tick(&mut self, bytes: u64) {
        if self.last.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last = Instant::now();
        match self.total {
            Some(total) if total > 0 => {
                info!(url = %self.url, bytes, total, percent = bytes * 100 / total, "downloading")
            }
            _ => info!(url = %self.url, bytes, "downloading"),
        }
    }
}
