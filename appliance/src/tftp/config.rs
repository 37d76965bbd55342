//! The TFTP server's settings ([`TftpConfig`]): the protocol limits the transfer machine
//! applies (`appliance_core::tftp::Limits`) and how the drivers run transfers.
//!
//! This module owns only the settings and their defaults.

use std::time::Duration;

use appliance_core::fair_share::ShareLimits;
use appliance_core::tftp::Limits;

/// Server-side limits and timers.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Retransmission timeout when the client sends no `timeout` option.
    pub timeout: Duration,
    /// Retransmissions without progress before a transfer is abandoned.
    pub max_retries: u32,
    /// Upper bound for a negotiated blksize (clamped to 8..=65464).
    pub max_blksize: u16,
    /// Upper bound for a negotiated windowsize (clamped to >= 1).
    pub max_windowsize: u16,
    /// Concurrent transfers. A request beyond this takes the place of the
    /// transfer that has made no progress for longest, if that one has made
    /// none for `evict_after`; otherwise it is dropped (the client retries
    /// its request after its own timeout). See `appliance_core::fair_share`.
    pub max_transfers: usize,
    /// Concurrent transfers from one source address, with the same rule among
    /// that source's own transfers: one host cannot take every slot.
    pub max_per_source: usize,
    /// How long a transfer must have made no progress (no new ACK) before a
    /// new request may take its place.
    pub evict_after: Duration,
    /// Longest retransmission timeout a client's `timeout` option is granted;
    /// a longer one is ignored (RFC 2349 allows it) and `timeout` applies.
    pub max_timeout: Duration,
    /// Lockstep (windowsize 1) transfers that may run at once on a thread of
    /// their own with blocking socket calls, the shortest path from an ACK to
    /// the next DATA; further ones run on the async engine. 0 keeps every
    /// transfer on the async engine.
    pub lockstep_threads: usize,
    /// How long a lockstep thread polls its socket for the next ACK before
    /// sleeping in `recv`, for clients that answer that fast (same host,
    /// fast LAN): it saves the sleep and the wake-up on both sides. Clients
    /// that answer slower stop being polled (exponential backoff up to 1,023
    /// blocks), and no thread polls while more transfers run than there are
    /// lockstep threads. Zero never polls.
    pub lockstep_spin: Duration,
}

impl Default for TftpConfig {
    fn default() -> Self {
        let limits = Limits::default();
        TftpConfig {
            timeout: limits.timeout,
            max_retries: limits.max_retries,
            max_blksize: limits.max_blksize,
            max_windowsize: limits.max_windowsize,
            max_transfers: 1024,
            max_per_source: 32,
            evict_after: Duration::from_secs(3),
            max_timeout: limits.max_timeout,
            lockstep_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lockstep_spin: Duration::from_micros(20),
        }
    }
}

impl TftpConfig {
    /// The fair-share limits on transfers.
    pub(crate) fn shares(&self) -> ShareLimits {
        ShareLimits { per_source: self.max_per_source, total: self.max_transfers, evict_after: self.evict_after }
    }

    /// What the transfer machine grants each transfer.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            max_retries: self.max_retries,
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            max_timeout: self.max_timeout,
        }
    }
}
