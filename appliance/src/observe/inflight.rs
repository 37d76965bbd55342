//! Transfers running now (TFTP transfers, HTTP file responses), for the status page and the
//! in-flight gauges. A transfer is registered when its content is found and removed when it
//! ends; the map holds only what runs, so it needs no bound of its own beyond the servers'.

use appliance_core::status::Transfer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct InFlight {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Transfer>>,
}

impl InFlight {
    /// Registers a transfer; the id ends it.
    pub fn start(&self, t: Transfer) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(id, t);
        id
    }

    pub fn end(&self, id: u64) -> Option<Transfer> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }

    /// The transfers running now, the oldest first.
    pub fn list(&self) -> Vec<Transfer> {
        let mut v: Vec<Transfer> = self.running.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|t| t.started_at);
        v
    }
}
