//! Zero-copy sending of artifact bytes: mapped files, and a socket writer that sends bytes it
//! recognises as lying in one of those mappings with `sendfile(2)` from the file instead of
//! copying them out of memory.
//!
//! hyper writes every body chunk it has queued with one vectored write of the chunk's own
//! memory (its queue strategy, chosen because our socket supports vectored writes). A mapped
//! body hands hyper slices of a file mapping; when such a slice reaches
//! [`poll_write_vectored`], the writer finds the mapping it lies in by its address, and the
//! kernel moves the bytes from the page cache into the socket without a copy through user
//! space, as nginx's `sendfile on` does. The mapping's pages are then never touched by the
//! daemon, so they neither cost a page fault nor count in its resident memory.
//!
//! Correctness never depends on the recognition: a slice the writer does not recognise (hyper
//! copied it, or a mapping was not registered) is written from memory, and the mapping holds
//! the same bytes as the file, because only immutable files are mapped (see `body`).
//!
//! Architecture invariant: this module knows nothing of HTTP; it moves bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

/// Every live mapping, by start address: where its bytes are in which file.
static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());
/// How many mappings `REGIONS` holds, so that writers of scripts and bootloaders (no mapping
/// in play) skip the lock.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Body bytes sent with `sendfile`, for the tests to see which way bytes went.
#[cfg(test)]
static SENT: AtomicU64 = AtomicU64::new(0);

struct Region {
    end: usize,
    file: Arc<File>,
    offset: u64,
}

/// A read-only mapping of `len` bytes of an immutable file from `offset`, registered for
/// [`poll_write_vectored`] until dropped.
pub(super) struct Mapping {
    map: memmap2::Mmap,
}

impl Mapping {
    /// Maps the range. The caller guarantees the file is never written or truncated while the
    /// mapping exists (the artifact store's published files); an empty range, and a file
    /// shorter than the range, are refused here.
    #[allow(unsafe_code)]
    pub fn new(file: Arc<File>, offset: u64, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            // An empty mapping has no address of its own to be found by.
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty range"));
        }
        if file.metadata()?.len() < offset.saturating_add(len as u64) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than the range"));
        }
        // SAFETY: reading a file mapping is only undefined behaviour if the file changes under
        // it. Mappings are only made of the artifact store's published files, which are
        // read-only and never written after their rename into place (GC unlinks them, which
        // keeps the pages of existing mappings), and the range was checked against the length.
        let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(&*file)? };
        let start = map.as_ptr() as usize;
        lock().insert(start, Region { end: start + len, file, offset });
        LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Mapping { map })
    }

    pub fn map(&self) -> &memmap2::Mmap {
        &self.map
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Before the field drops and unmaps: no writer may find a range that is going away.
        lock().remove(&(self.map.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<usize, Region>> {
    REGIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// How `bufs` begin: the number of leading buffers that lie in no live mapping, and, when the
/// first one does lie in one, where its bytes are: the file, the offset of its first byte, and
/// how many of its bytes the mapping covers. One look at the registry per write.
fn locate(bufs: &[IoSlice<'_>]) -> (usize, Option<(Arc<File>, u64, usize)>) {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return (bufs.len(), None);
    }
    let regions = lock();
    let find = |buf: &[u8]| {
        let addr = buf.as_ptr() as usize;
        let (start, region) = regions.range(..=addr).next_back()?;
        (!buf.is_empty() && addr < region.end).then_some((*start, region))
    };
    let plain = bufs.iter().take_while(|b| find(b).is_none()).count();
    let first = bufs.first().filter(|_| plain == 0).and_then(|buf| {
        let (start, region) = find(buf)?;
        let addr = buf.as_ptr() as usize;
        Some((region.file.clone(), region.offset + (addr - start) as u64, buf.len().min(region.end - addr)))
    });
    (plain, first)
}

/// Body bytes sent by `sendfile` since the process started.
#[cfg(test)]
pub(super) fn sent_from_files() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// Writes `bufs` to `stream` like `AsyncWrite::poll_write_vectored`: leading buffers that are
/// not in a mapping (headers, scripts) with one `writev`, a buffer in a mapping with
/// `sendfile` from its file. Returns how many bytes of `bufs` went out.
pub(super) fn poll_write_vectored(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let (plain, first) = locate(bufs);
    let Some((file, offset, len)) = first else {
        return Pin::new(stream).poll_write_vectored(cx, &bufs[..plain]);
    };
    let mut offset = i64::try_from(offset).map_err(io::Error::other)?;
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile(&*stream, &*file, Some(&mut offset), len).map_err(io::Error::from)
        });
        match sent {
            // The mapping was checked against the file's length and the file never shrinks.
            Ok(0) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mapped file shrank"))),
            Ok(n) => {
                #[cfg(test)]
                SENT.fetch_add(n as u64, Ordering::Relaxed);
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn file_with(data: &[u8]) -> Arc<File> {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(data).unwrap();
        Arc::new(tmp)
    }

    #[test]
    fn bytes_in_a_mapping_are_located_in_its_file_and_others_are_not() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mapping = Mapping::new(file_with(&data), 4096, 50_000).unwrap();
        let bytes = &mapping.map()[..];
        let at = |bufs: &[&[u8]]| {
            let bufs: Vec<_> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let (plain, first) = locate(&bufs);
            (plain, first.map(|(_, offset, len)| (offset, len)))
        };
        assert_eq!(at(&[&bytes[1000..3000]]), (0, Some((4096 + 1000, 2000))));
        assert_eq!(at(&[&bytes[49_990..], b"tail"]), (0, Some((4096 + 49_990, 10))));
        // Headers first: they go out from memory, up to the first mapped buffer.
        assert_eq!(at(&[b"head", b"more", &bytes[..10], b"x"]), (2, None));
        assert_eq!(at(&[&data[1000..3000]]), (1, None), "a copy of the bytes is not the mapping");
        assert_eq!(at(&[&[]]), (1, None));
        let addr = bytes.as_ptr();
        drop(mapping);
        assert!(lock().get(&(addr as usize)).is_none(), "a dropped mapping is unregistered");
    }

    #[test]
    fn a_range_past_the_end_of_the_file_and_an_empty_one_are_refused() {
        let err = Mapping::new(file_with(&[1; 10_000]), 8192, 4096).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(Mapping::new(file_with(&[1; 10_000]), 0, 0).is_err());
    }

    #[tokio::test]
    async fn headers_from_memory_then_body_from_the_file_arrive_in_order() {
        const LEN: usize = 8 * 1024 * 1024 + 77;
        let data: Vec<u8> = (0..LEN + 5000).map(|i| (i * 13 + i / 4096) as u8).collect();
        let mapping = Mapping::new(file_with(&data), 4096, LEN).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = b"HEAD\r\n".to_vec();
        let before = sent_from_files();
        let (mut head_left, mut body_left): (&[u8], &[u8]) = (&head, &mapping.map()[..]);
        while !head_left.is_empty() || !body_left.is_empty() {
            let bufs = [IoSlice::new(head_left), IoSlice::new(body_left)];
            let bufs: Vec<_> = bufs.into_iter().filter(|b| !b.is_empty()).collect();
            let mut n = std::future::poll_fn(|cx| poll_write_vectored(&mut stream, cx, &bufs)).await.unwrap();
            let h = n.min(head_left.len());
            head_left = &head_left[h..];
            n -= h;
            body_left = &body_left[n..];
        }
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(&got[..6], b"HEAD\r\n");
        assert!(got[6..] == data[4096..4096 + LEN], "body differs from the file range");
        // Tests running alongside may send from files too: at least ours went that way.
        assert!(sent_from_files() - before >= LEN as u64, "the body was not sent from the file");
    }
}
