//! Response bodies: nothing, bytes in memory, or a byte range of a file streamed in large
//! chunks.
//!
//! A file that may change (a bootloader an operator replaces in place) is read with positional
//! reads on the blocking pool, one chunk ahead of the socket: the next chunk is read while
//! hyper writes the previous one. Chunk buffers come from a small global pool and go back to it
//! when hyper drops the `Bytes` it wrote, so a long transfer allocates nothing per chunk.
//!
//! A file that never changes (the artifact store's: written under a temporary name, made
//! read-only and renamed into place; GC only unlinks, which keeps existing mappings valid) is
//! mapped, and hyper is handed slices of the mapping, which the connection's writer sends
//! with `sendfile` from the file (see `sendfile`): no copy through user space, and the
//! mapping's pages are never touched. Should a slice be written from memory instead, its
//! pages are dropped from the mapping (`MADV_DONTNEED`) as soon as hyper has written it, so the
//! daemon's resident memory stays bounded by the chunks in flight instead of growing with the
//! file (without it, every page of a mapped file counts in the daemon's RSS: 4.6 GB at 64
//! clients of a 100 MB file). The next chunk is announced to the kernel (`MADV_WILLNEED`) so
//! that its disk reads start before the socket needs it.
//!
//! Measured with `cargo xtask bench --only http` (64 clients of a 100 MB file, daemon CPU per
//! GB): 509 ms with reads, 359 ms with 256 KiB mapped chunks written from memory; the
//! `sendfile` figures are in ARCHITECTURE.md.
//!
//! A whole file is never held in memory.

use super::sendfile::Mapping;
use hyper::body::{Bytes, Frame, SizeHint};
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::task::JoinHandle;

/// Bytes read per system call and handed to hyper per frame.
pub(super) const CHUNK: usize = 256 * 1024;
/// Idle chunk buffers kept for reuse (at most `POOL_MAX * CHUNK` bytes).
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Called once when the body is dropped (fully sent, or the client went away) with the number
/// of body bytes handed to the connection.
type OnDrop = Box<dyn FnOnce(u64) + Send>;

pub(super) struct Body {
    kind: Kind,
    sent: u64,
    on_drop: Option<OnDrop>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    File(FileStream),
    Mapped(MappedStream),
}

/// Bytes of a mapped body per frame (and per `MADV_DONTNEED`): the trade between CPU per GB
/// and resident memory per download in flight measured in the module documentation.
pub(super) const MAPPED_CHUNK: usize = 256 * 1024;

impl Body {
    pub fn empty() -> Body {
        Body { kind: Kind::Empty, sent: 0, on_drop: None }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        let kind = if bytes.is_empty() { Kind::Empty } else { Kind::Full(Some(bytes)) };
        Body { kind, sent: 0, on_drop: None }
    }

    /// `len` bytes of `file` from `offset`. The file must be at least that long; if it shrinks
    /// meanwhile the body ends with an error (and hyper closes the connection).
    pub fn file(file: File, offset: u64, len: u64) -> Body {
        Body::shared_file(Arc::new(file), offset, len)
    }

    fn shared_file(file: Arc<File>, offset: u64, len: u64) -> Body {
        let stream = FileStream { file, offset, unread: len, left: len, pending: None };
        Body { kind: if len == 0 { Kind::Empty } else { Kind::File(stream) }, sent: 0, on_drop: None }
    }

    /// Like [`Body::file`], for a file that is never truncated or rewritten while the body
    /// exists: only the artifact store's published files qualify (see the module
    /// documentation). Falls back to reading if the file cannot be mapped.
    pub fn immutable_file(file: File, offset: u64, len: u64) -> Body {
        if len == 0 {
            return Body::empty();
        }
        let file = Arc::new(file);
        match MappedStream::new(file.clone(), offset, len) {
            Ok(m) => Body { kind: Kind::Mapped(m), sent: 0, on_drop: None },
            Err(e) => {
                tracing::debug!("http: serving by reads, mapping failed: {e}");
                Body::shared_file(file, offset, len)
            }
        }
    }

    pub fn on_drop(mut self, f: impl FnOnce(u64) + Send + 'static) -> Body {
        self.on_drop = Some(Box::new(f));
        self
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f(self.sent);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.kind {
            Kind::Empty => None,
            Kind::Full(b) => b.take().map(Ok),
            Kind::File(f) => ready!(f.poll_chunk(cx)),
            Kind::Mapped(m) => m.next_chunk().map(Ok),
        };
        if let Some(Ok(b)) = &frame {
            this.sent += b.len() as u64;
        }
        Poll::Ready(frame.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::File(f) => f.left == 0,
            Kind::Mapped(m) => m.pos == m.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(match &self.kind {
            Kind::Empty => 0,
            Kind::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            Kind::File(f) => f.left,
            Kind::Mapped(m) => (m.len() - m.pos) as u64,
        })
    }
}

/// A mapped byte range of an immutable file, handed to hyper `MAPPED_CHUNK` bytes at a time.
struct MappedStream {
    mapping: Arc<Mapping>,
    /// Offset in the mapping of the next chunk.
    pos: usize,
}

impl MappedStream {
    fn new(file: Arc<File>, offset: u64, len: u64) -> io::Result<MappedStream> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("range too large to map"))?;
        let mapping = Mapping::new(file, offset, len)?;
        // Hints only: a failure changes nothing but speed.
        let _ = mapping.map().advise(memmap2::Advice::Sequential);
        let _ = mapping.map().advise_range(memmap2::Advice::WillNeed, 0, len.min(MAPPED_CHUNK));
        Ok(MappedStream { mapping: Arc::new(mapping), pos: 0 })
    }

    fn len(&self) -> usize {
        self.mapping.map().len()
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        let len = self.len();
        if self.pos == len {
            return None;
        }
        let end = (self.pos + MAPPED_CHUNK).min(len);
        if end < len {
            let _ = self.mapping.map().advise_range(memmap2::Advice::WillNeed, end, (len - end).min(MAPPED_CHUNK));
        }
        let chunk = MappedChunk { mapping: self.mapping.clone(), start: self.pos, end };
        self.pos = end;
        Some(Bytes::from_owner(chunk))
    }
}

/// One chunk of a mapping; its pages (if it was written from memory) leave the daemon's
/// resident set when hyper drops it.
struct MappedChunk {
    mapping: Arc<Mapping>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.mapping.map()[self.start..self.end]
    }
}

impl Drop for MappedChunk {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `MADV_DONTNEED` on a read-only mapping of an unchanging file only removes
        // the page-table entries: a later read of the range faults the same page-cache pages
        // back in, so no reader, this chunk's or another's, can observe different bytes.
        let _ = unsafe {
            self.mapping.map().unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.start,
                self.end - self.start,
            )
        };
    }
}

struct FileStream {
    file: Arc<File>,
    /// File offset of the next read to start.
    offset: u64,
    /// Bytes not yet asked of the file.
    unread: u64,
    /// Bytes not yet handed to hyper.
    left: u64,
    pending: Option<JoinHandle<io::Result<Chunk>>>,
}

impl FileStream {
    fn start_read(&mut self) {
        let n = self.unread.min(CHUNK as u64) as usize;
        let (file, offset) = (self.file.clone(), self.offset);
        self.offset += n as u64;
        self.unread -= n as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut chunk = Chunk { buf: take_buffer(), len: n };
            file.read_exact_at(&mut chunk.buf[..n], offset).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "file shrank while being served")
                } else {
                    e
                }
            })?;
            Ok(chunk)
        }));
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.pending.is_none() {
            self.start_read();
        }
        let Some(pending) = self.pending.as_mut() else { return Poll::Ready(None) };
        let result = ready!(Pin::new(pending).poll(cx));
        self.pending = None;
        let chunk = match result {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        self.left -= chunk.len as u64;
        // Read ahead while hyper writes this chunk.
        if self.unread > 0 {
            self.start_read();
        }
        Poll::Ready(Some(Ok(Bytes::from_owner(chunk))))
    }
}

/// A pooled buffer holding `len` valid bytes; returns to the pool when hyper is done with it.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

fn take_buffer() -> Vec<u8> {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    pooled.unwrap_or_else(|| vec![0; CHUNK])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn mapped_body_streams_the_range_and_gives_its_pages_back() {
        const LEN: usize = 32 * 1024 * 1024 + 4321;
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        let (start, len) = (12_345usize, LEN - 12_345 - 99);
        let before = rss_file_kib();
        let mut body = Body::immutable_file(tmp.reopen().unwrap(), start as u64, len as u64);
        assert!(matches!(body.kind, Kind::Mapped(_)), "an immutable file is mapped");
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(len as u64));
        let (mut got, mut peak) = (Vec::with_capacity(len), 0);
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= MAPPED_CHUNK);
            got.extend_from_slice(&chunk);
            drop(chunk);
            peak = peak.max(rss_file_kib().saturating_sub(before));
        }
        assert!(got == data[start..start + len], "mapped body differs from the file range");
        // Every chunk left the resident set once written: far below the 32 MiB streamed
        // (tests running alongside may map a little too).
        assert!(peak < 8 * 1024, "resident file pages grew by {peak} KiB while streaming");
    }
}
