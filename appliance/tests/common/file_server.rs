//! A loopback HTTP server for one file, the source of the follow tests' `url:` artifacts.

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the server says about the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// The truth, in every answer.
    True,
    /// HEAD claims this many bytes; GET tells the truth.
    Claimed(u64),
    /// No `Content-Length` at all (HTTP/1.0 style: the body ends when the connection closes),
    /// and no ranges.
    Unknown,
}

/// A loopback HTTP server for one file: HEAD, GET and `Range: bytes=N-`; with `cut` set, the
/// next GET sends the headers of the whole file but only its first half, then closes.
pub struct FileServer {
    pub addr: std::net::SocketAddr,
    /// The `Range` header of every GET, empty when there was none.
    pub ranges: Arc<Mutex<Vec<String>>>,
    pub cut: Arc<AtomicBool>,
    /// Body bytes the client took (what the socket accepted; the kernel's buffers hold some).
    pub sent: Arc<AtomicU64>,
}

pub fn serve_file(body: Vec<u8>) -> FileServer {
    serve_file_with(body, Length::True)
}

/// [`serve_file`], saying `length` about the file's size.
pub fn serve_file_with(body: Vec<u8>, length: Length) -> FileServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = FileServer { addr, ranges: Default::default(), cut: Default::default(), sent: Default::default() };
    let (ranges, cut, sent) = (server.ranges.clone(), server.cut.clone(), server.sent.clone());
    // Ends with the test process; it only ever answers on loopback.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let (mut range, mut line) = (String::new(), String::new());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                    range = v.trim().to_string();
                }
                line.clear();
            }
            let start: usize = match length {
                Length::Unknown => 0,
                _ => range.strip_prefix("bytes=").and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0),
            };
            let head = if length == Length::Unknown {
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
            } else if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            };
            let head = match length {
                Length::Claimed(n) if request.starts_with("HEAD ") => {
                    head.replace(&format!("Content-Length: {}", body.len()), &format!("Content-Length: {n}"))
                }
                _ => head,
            };
            let _ = stream.write_all(head.as_bytes());
            if request.starts_with("GET ") {
                ranges.lock().unwrap().push(range);
                let end = if cut.swap(false, Ordering::SeqCst) { body.len() / 2 } else { body.len() };
                // In pieces, so that what the client took is known when it hangs up.
                for piece in body[start..end.max(start)].chunks(64 * 1024) {
                    if stream.write_all(piece).is_err() {
                        break;
                    }
                    sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
            }
        }
    });
    server
}
