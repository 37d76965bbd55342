//! Block-addressed access to the content being served.
//!
//! This module owns turning a [`Content`] into byte ranges without per-block
//! allocation: in-memory bytes are sliced directly; files are read with
//! positional reads (`pread`) on the blocking pool into two reused chunk
//! buffers — the resident chunk being sent and the next one, read ahead in
//! the background so sequential transfers rarely wait for the disk or for a
//! blocking-pool thread. It must not read a whole file into memory, and
//! knows nothing about packets or sockets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::handler::Content;

/// Bounds of a file chunk (each file transfer holds up to two).
const MIN_CHUNK: usize = 32 * 1024;
const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// Bytes a read-ahead chunk repeats from the end of the resident one, so a
/// run of blocks sent in one go (at most one 64 KiB GSO send) that crosses
/// the boundary is still contiguous in one buffer.
const MIN_OVERLAP: usize = 64 * 1024;

pub(crate) enum Source {
    Bytes(Bytes),
    File(FileChunks),
}

/// A finished background read: the buffer and how it went.
type ReadDone = (Vec<u8>, io::Result<()>);

pub(crate) struct FileChunks {
    file: Arc<File>,
    len: u64,
    chunk: usize,
    overlap: u64,
    /// The resident chunk: `buf[..filled]` holds the file from `start`.
    buf: Vec<u8>,
    start: u64,
    filled: usize,
    /// Read-ahead in flight: file offset and task.
    ahead: Option<(u64, JoinHandle<ReadDone>)>,
    /// Buffer for the next read-ahead (allocated on first use).
    spare: Vec<u8>,
}

impl Source {
    /// Prepares `content` for serving in blocks of `blksize`, `window` blocks
    /// at a time.
    pub fn new(content: Content, blksize: u16, window: u16) -> Source {
        match content {
            Content::Bytes(b) => Source::Bytes(b),
            Content::File { file, len } => {
                let blksize = usize::from(blksize);
                let window_bytes = blksize * usize::from(window);
                // Only a GSO send (window >= 2, at most 64 KiB) needs a contiguous run longer
                // than one block.
                let overlap =
                    if window > 1 { MIN_OVERLAP.max(blksize).max(window_bytes.min(MAX_CHUNK / 2)) } else { blksize };
                let chunk = (4 * window_bytes).clamp(MIN_CHUNK, MAX_CHUNK).max(2 * overlap);
                let chunk = chunk.min(usize::try_from(len).unwrap_or(usize::MAX));
                Source::File(FileChunks {
                    file: Arc::new(file),
                    len,
                    chunk,
                    overlap: overlap as u64,
                    buf: vec![0; chunk],
                    start: 0,
                    filled: 0,
                    ahead: None,
                    spare: Vec::new(),
                })
            }
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::File(f) => f.len,
        }
    }

    /// Most bytes [`Source::prepare`] can make resident at once.
    pub fn max_resident(&self) -> usize {
        match self {
            Source::Bytes(_) => usize::MAX,
            // A buffer holding the whole file can serve any range.
            Source::File(f) if f.chunk as u64 >= f.len => usize::MAX,
            Source::File(f) => f.chunk,
        }
    }

    /// Makes `[offset, end)` (clipped to the content) resident so that
    /// [`Source::get`] can borrow it. `end - offset` must not exceed
    /// [`Source::max_resident`].
    pub async fn prepare(&mut self, offset: u64, end: u64) -> io::Result<()> {
        let end = end.min(self.len());
        match self {
            Source::File(f) if offset < end => f.prepare(offset, end).await,
            _ => Ok(()),
        }
    }

    /// Whether `[offset, end)` (clipped to the content) is resident already,
    /// so [`Source::get`] may borrow it without [`Source::prepare`].
    pub fn is_resident(&self, offset: u64, end: u64) -> bool {
        let end = end.min(self.len());
        match self {
            Source::Bytes(_) => true,
            Source::File(f) => offset >= end || (offset >= f.start && end <= f.start + f.filled as u64),
        }
    }

    /// Borrows up to `n` bytes at `offset` (fewer at the end of the content).
    /// The range must have been made resident with [`Source::prepare`].
    pub fn get(&self, offset: u64, n: usize) -> &[u8] {
        let end = offset.saturating_add(n as u64).min(self.len());
        let offset = offset.min(end);
        match self {
            Source::Bytes(b) => &b[offset as usize..end as usize],
            Source::File(_) if offset == end => &[],
            Source::File(f) => &f.buf[(offset - f.start) as usize..(end - f.start) as usize],
        }
    }

    /// [`Source::prepare`] then [`Source::get`].
    pub async fn slice(&mut self, offset: u64, n: usize) -> io::Result<&[u8]> {
        self.prepare(offset, offset.saturating_add(n as u64)).await?;
        Ok(self.get(offset, n))
    }
}

/// Reads `want` bytes at `offset` into `buf` on the blocking pool.
fn spawn_read(file: Arc<File>, mut buf: Vec<u8>, offset: u64, want: usize) -> JoinHandle<ReadDone> {
    tokio::task::spawn_blocking(move || {
        let res = file.read_exact_at(&mut buf[..want], offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "file shrank while being served")
            } else {
                e
            }
        });
        (buf, res)
    })
}

impl FileChunks {
    fn want_at(&self, offset: u64) -> usize {
        (self.len - offset).min(self.chunk as u64) as usize
    }

    async fn prepare(&mut self, offset: u64, end: u64) -> io::Result<()> {
        if offset >= self.start && end <= self.start + self.filled as u64 {
            return Ok(());
        }
        if let Some((ahead_start, task)) = self.ahead.take() {
            let (buf, res) = task.await.map_err(io::Error::other)?;
            let ahead_end = ahead_start + self.want_at(ahead_start) as u64;
            if res.is_ok() && offset >= ahead_start && end <= ahead_end {
                self.spare = std::mem::replace(&mut self.buf, buf);
                self.start = ahead_start;
                self.filled = (ahead_end - ahead_start) as usize;
                self.read_ahead();
                return Ok(());
            }
            // Not the range we need (a jump back, or a failed read that is
            // retried below): keep the buffer for later.
            self.spare = buf;
        }
        // Cold path (first read, or a retransmission reaching back before the
        // resident chunk): read at `offset` and wait for it.
        let want = self.want_at(offset);
        self.filled = 0;
        let buf = std::mem::take(&mut self.buf);
        let (buf, res) = spawn_read(Arc::clone(&self.file), buf, offset, want).await.map_err(io::Error::other)?;
        self.buf = buf;
        res?;
        self.start = offset;
        self.filled = want;
        self.read_ahead();
        Ok(())
    }

    /// Starts reading the chunk after the resident one, if any.
    fn read_ahead(&mut self) {
        let end = self.start + self.filled as u64;
        if self.ahead.is_some() || end >= self.len {
            return;
        }
        let next = end.saturating_sub(self.overlap).max(self.start + 1);
        let mut buf = std::mem::take(&mut self.spare);
        if buf.len() < self.chunk {
            buf = vec![0; self.chunk];
        }
        let want = self.want_at(next);
        self.ahead = Some((next, spawn_read(Arc::clone(&self.file), buf, next, want)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), data).unwrap();
        let file = File::open(tmp.path()).unwrap();
        (tmp, file)
    }

    #[tokio::test]
    async fn file_ranges_match_bytes_sequential_and_random() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let (_tmp, file) = file_with(&data);
        let mut src = Source::new(Content::File { file, len: data.len() as u64 }, 1468, 16);
        let max = src.max_resident() as u64;
        assert!(max < data.len() as u64, "test needs several chunks");
        // Sequential 64 KiB runs (as the sender batches them), with a step
        // back now and then (window retransmission), then random jumps.
        let mut offsets: Vec<u64> = (0..data.len() as u64).step_by(60_000).collect();
        offsets.extend([500_000, 10, 999_999, 0, 131_000, 131_072, 262_100]);
        for (i, &off) in offsets.iter().enumerate() {
            let n = 64 * 1024;
            src.prepare(off, off + n).await.unwrap();
            let end = (off + n).min(data.len() as u64) as usize;
            assert_eq!(src.get(off, n as usize), &data[off as usize..end], "step {i} at {off}");
            if i % 3 == 0 && off >= 20_000 {
                let back = off - 20_000;
                assert_eq!(src.slice(back, 1468).await.unwrap(), &data[back as usize..back as usize + 1468]);
            }
        }
        assert_eq!(src.slice(data.len() as u64, 512).await.unwrap(), &[] as &[u8]);
    }

    #[tokio::test]
    async fn shrunk_file_is_an_error() {
        let (_tmp, file) = file_with(&[1u8; 1000]);
        let mut src = Source::new(Content::File { file, len: 5000 }, 512, 1);
        let err = src.slice(0, 512).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
