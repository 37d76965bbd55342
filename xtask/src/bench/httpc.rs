//! A minimal HTTP/1.1 client for the load generators: keep-alive GETs of responses with a
//! `Content-Length`, the body handed to a sink in large reads (no per-byte work, no copies
//! beyond the socket read). Enough for our daemon and nginx; not a general client.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUF: usize = 256 * 1024;

pub struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    /// Bytes read past the previous response (none with a well-behaved server).
    pending: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, host: addr.to_string(), buf: vec![0; BUF], pending: Vec::new() })
    }

    /// GETs `path`; the body goes to `sink` piece by piece. Returns the status and body length.
    pub async fn get(&mut self, path: &str, mut sink: impl FnMut(&[u8])) -> Result<(u16, u64)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask-bench\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).await?;
        let mut head = std::mem::take(&mut self.pending);
        let end = loop {
            if let Some(i) = find(&head, b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 64 * 1024 {
                bail!("response headers too long");
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                bail!("connection closed before the response headers");
            }
            head.extend_from_slice(&self.buf[..n]);
        };
        let text = String::from_utf8_lossy(&head[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = None;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                length = v.trim().parse::<u64>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                bail!("chunked responses are not supported by the bench client");
            }
        }
        let length = length.context("response without Content-Length")?;
        let mut left = length;
        let extra = &head[end..];
        let take = extra.len().min(left as usize);
        sink(&extra[..take]);
        left -= take as u64;
        self.pending = extra[take..].to_vec();
        while left > 0 {
            let want = (left as usize).min(self.buf.len());
            let n = self.stream.read(&mut self.buf[..want]).await?;
            if n == 0 {
                bail!("connection closed with {left} body bytes missing");
            }
            sink(&self.buf[..n]);
            left -= n as u64;
        }
        Ok((status, length))
    }

    /// GETs a small body into memory; fails unless the status is 200.
    pub async fn get_body(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let (status, _) = self.get(path, |b| body.extend_from_slice(b)).await?;
        if status != 200 {
            bail!("GET {path}: status {status}");
        }
        Ok(body)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A sink that checks the body against `expected` (all of it when `full`, else the first and
/// last 64 KiB) and counts bytes.
pub struct Checker<'a> {
    expected: &'a [u8],
    full: bool,
    pub offset: usize,
    pub mismatch: bool,
}

impl<'a> Checker<'a> {
    pub fn new(expected: &'a [u8], full: bool) -> Self {
        Checker { expected, full, offset: 0, mismatch: false }
    }

    pub fn feed(&mut self, b: &[u8]) {
        let end = self.offset + b.len();
        if end > self.expected.len() {
            self.mismatch = true;
        } else {
            let edge = 64 * 1024;
            let check = self.full || self.offset < edge || end > self.expected.len().saturating_sub(edge);
            if check && self.expected[self.offset..end] != *b {
                self.mismatch = true;
            }
        }
        self.offset = end;
    }

    pub fn ok(&self) -> bool {
        !self.mismatch && self.offset == self.expected.len()
    }
}
