//! The boundary between the TFTP engine and the daemon: the [`Handler`]
//! trait that resolves read requests to [`Content`], the [`TftpError`] it may
//! refuse with, and the per-transfer [`TransferReport`] it is told about.
//!
//! This module owns only these types. It must not touch sockets or decide
//! anything about paths: resolving (and securing) paths is the handler's job.

use std::net::SocketAddr;
use std::time::Duration;

use appliance_core::tftp::{Outcome, TftpError};

/// Content resolver plugged into the server.
pub trait Handler: Send + Sync + 'static {
    /// Resolve a read request. Must be quick (no long blocking I/O): return
    /// bytes from memory or an already opened file.
    fn read(&self, req: &ReadRequest) -> Result<Content, TftpError>;

    /// Called exactly once per request that reached a transfer task, when it
    /// ends (whatever the outcome). Must be quick; the default does nothing
    /// (the engine also logs one `tracing::info!` line per transfer).
    fn finished(&self, report: &TransferReport) {
        let _ = report;
    }
}

/// A read request as the handler sees it.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The file name exactly as sent by the client (lossy UTF-8), unchecked.
    pub path: String,
    /// The client's address (its transfer ID).
    pub peer: SocketAddr,
    /// The local address of the listening socket the request arrived on.
    pub local: SocketAddr,
}

/// What to serve.
#[derive(Debug)]
pub enum Content {
    /// In-memory bytes (rendered configs, embedded binaries).
    Bytes(bytes::Bytes),
    /// An open file, streamed with positional reads; only the first `len`
    /// bytes are served.
    File { file: std::fs::File, len: u64 },
}

impl Content {
    /// Number of bytes that will be served.
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One line's worth of facts about a finished transfer.
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub peer: SocketAddr,
    /// Local address of the listening socket.
    pub local: SocketAddr,
    /// The requested path, raw.
    pub path: String,
    /// Size of the content, if the handler produced some.
    pub size: Option<u64>,
    /// Negotiated block size and window size (512 and 1 without options).
    pub blksize: u16,
    pub windowsize: u16,
    /// Payload bytes acknowledged by the client.
    pub bytes: u64,
    /// DATA blocks acknowledged by the client.
    pub blocks: u64,
    /// DATA or OACK packets sent more than once.
    pub retransmits: u64,
    /// Whether the transfer ran on a dedicated lockstep thread (see
    /// [`super::TftpConfig::lockstep_threads`]) rather than the async engine.
    pub thread: bool,
    pub duration: Duration,
    pub outcome: Outcome,
}

impl TransferReport {
    /// Emits the standard one-line log for this transfer.
    pub(crate) fn log(&self) {
        tracing::info!(
            peer = %self.peer,
            path = %appliance_core::log_text::escaped(&self.path),
            bytes = self.bytes,
            blocks = self.blocks,
            retransmits = self.retransmits,
            blksize = self.blksize,
            windowsize = self.windowsize,
            thread = self.thread,
            duration_ms = self.duration.as_millis() as u64,
            outcome = %self.outcome,
            "tftp transfer finished"
        );
    }
}
