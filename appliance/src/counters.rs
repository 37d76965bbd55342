//! Counts of what the daemon refused or withheld, kept in the shared state for a metrics
//! endpoint to read (none exists yet) and for tests. Each counter only ever grows; names say
//! what happened, with the unit in the name where it is not "events".
//!
//! This module owns only the counters; the code that does the thing counts it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The daemon's event counters. Read with [`Counters::get`] (relaxed: they are statistics,
/// nothing is ordered by them).
#[derive(Debug, Default)]
pub struct Counters {
    /// Writes of the lease file that failed (full or read-only disk, permissions).
    pub dhcp_lease_write_failures: AtomicU64,
    /// ACKs not sent because the lease they confirm could not be put on disk.
    pub dhcp_acks_withheld: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
