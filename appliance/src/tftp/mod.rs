//! TFTP server engine (read-only) on tokio, replacing the async-tftp crate.
//!
//! Implements RFC 1350 (RRQ; WRQ is refused with ERROR 2), RFC 2347 option
//! negotiation, RFC 2348 blksize, RFC 2349 tsize/timeout and RFC 7440
//! windowsize, with block-number rollover for files of any size. Every
//! transfer runs on its own task and ephemeral UDP socket; a client ERROR
//! (such as EDK2's code 8 after a tsize probe) ends it at once.
//!
//! The protocol itself (what to send when, retries, options, the window) is
//! the sans-I/O machine `appliance_core::tftp::Transfer`, together with the
//! wire codec and option negotiation. This module drives it over sockets,
//! with two drivers: `transfer` (async, on tokio: every windowed transfer,
//! and lockstep ones when no thread is free) and `lockstep` (a lockstep
//! transfer on a thread of its own with blocking calls). The drivers own the
//! system-call-level tricks; the machine decides.
//!
//! Content comes from a [`Handler`], which also owns path resolution and
//! security: the engine never interprets the requested path beyond decoding
//! it (lossily) to a `String`.
//!
//! Layout: `config` (settings), `source` (block access to bytes and files,
//! with read-ahead), `sender` (batched DATA sends with UDP GSO), `udp` (the
//! transfer socket, registered for read readiness only), `transfer` (the
//! async driver, and answering a request), `lockstep` (the thread driver and
//! its pool), `server` (accept loop), `handler` (the daemon-facing types).
//!
//! Netascii requests are served as the stored bytes (no CR/LF conversion).

mod config;
mod handler;
mod lockstep;
mod sender;
mod server;
mod source;
mod transfer;
mod udp;

pub use appliance_core::tftp::{Outcome, TftpError, DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE};
pub use config::TftpConfig;
pub use handler::{Content, Handler, ReadRequest, TransferReport};
pub use server::serve;

#[cfg(test)]
mod tests;
