//! Response bodies: nothing, bytes in memory, or a byte range of a file streamed in large
//! chunks.
//!
//! A file is read with positional reads on the blocking pool, one chunk ahead of the socket: the
//! next chunk is read while hyper writes the previous one, so disk (page cache) copies and
//! socket writes overlap. Chunk buffers come from a small global pool and go back to it when
//! hyper drops the `Bytes` it wrote, so a long transfer allocates nothing per chunk. A whole
//! file is never held in memory.

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
}

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
        let stream = FileStream { file: Arc::new(file), offset, unread: len, left: len, pending: None };
        Body { kind: if len == 0 { Kind::Empty } else { Kind::File(stream) }, sent: 0, on_drop: None }
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(match &self.kind {
            Kind::Empty => 0,
            Kind::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            Kind::File(f) => f.left,
        })
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
