//! TFTP server engine (read-only) on tokio, replacing the async-tftp crate.
//!
//! Implements RFC 1350 (RRQ; WRQ is refused with ERROR 2), RFC 2347 option
//! negotiation, RFC 2348 blksize, RFC 2349 tsize/timeout and RFC 7440
//! windowsize, with block-number rollover for files of any size. Every
//! transfer runs on its own task and ephemeral UDP socket; a client ERROR
//! (such as EDK2's code 8 after a tsize probe) ends it at once.
//!
//! This module owns the protocol only. Content comes from a [`Handler`],
//! which also owns path resolution and security: the engine never interprets
//! the requested path beyond decoding it (lossily) to a `String`.
//!
//! Layout: [`packet`] (pure wire codec), `options` (limits and negotiation),
//! `source` (block access to bytes and files, with read-ahead), `sender`
//! (batched DATA sends with UDP GSO), `udp` (the transfer socket, registered
//! for read readiness only), `transfer` (one transfer's state
//! machine), `server` (accept loop), `handler` (the daemon-facing types),
//! [`client`] (minimal client for tests and benchmarks).
//!
//! Netascii requests are served as the stored bytes (no CR/LF conversion).

pub mod client;
mod handler;
mod lockstep;
mod options;
pub mod packet;
mod sender;
mod server;
mod source;
mod transfer;
mod udp;

pub use handler::{Content, Handler, Outcome, ReadRequest, TftpError, TransferReport};
pub use options::{TftpConfig, DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE};
pub use server::serve;

#[cfg(test)]
mod tests;
