//! What the daemon tells operators about the boots it serves: the journal (every exchange,
//! transfer and request per machine, with the decision and the rule), the Prometheus metrics,
//! the transfers running now and the catalog's history of loads. One [`Telemetry`] lives in
//! `state::Shared`; the DHCP, TFTP and HTTP code feed it, the admin listener's read-only routes
//! (`status`) show it.
//!
//! - `journal`: the queue and writer thread of the journal, its file and rotation.
//! - `metrics`: the Prometheus registry and the handles the hot paths count with.
//! - `inflight`: transfers running now.
//! - `status`: `/status`, `/status/machines/<mac>`, `/api/machines[/<mac>]`, `/metrics`.

pub mod inflight;
pub mod journal;
pub mod metrics;
pub mod status;

use appliance_core::status::{CatalogView, Reload};
use std::collections::VecDeque;
use std::sync::Mutex;

pub use inflight::InFlight;
pub use journal::{now_ms, Journal, JournalSettings};
pub use metrics::Metrics;

/// Reloads the status page lists.
const RELOADS_KEPT: usize = 10;

#[derive(Default)]
pub struct Telemetry {
    pub journal: Journal,
    pub metrics: Metrics,
    pub transfers: InFlight,
    catalog: Mutex<Option<CatalogView>>,
}

impl Telemetry {
    pub fn new(journal: Journal, metrics: Metrics) -> Telemetry {
        Telemetry { journal, metrics, transfers: InFlight::default(), catalog: Mutex::new(None) }
    }

    /// A catalog was loaded (at start, or by a reload that was applied).
    pub fn catalog_loaded(&self, mut view: CatalogView, reload: bool) {
        let mut slot = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            view.reloads = old.reloads;
        }
        if reload {
            push_reload(&mut view.reloads, Reload { at: view.loaded_at, ok: true, errors: Vec::new() });
            self.metrics.reloaded(true);
        }
        self.metrics.set_catalog(&view.version, &view.source);
        *slot = Some(view);
    }

    /// A reload was refused: the catalog in force stays.
    pub fn reload_refused(&self, errors: Vec<String>) {
        self.metrics.reloaded(false);
        let mut slot = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(view) = slot.as_mut() {
            push_reload(&mut view.reloads, Reload { at: now_ms(), ok: false, errors });
        }
    }

    /// The catalog in force and its reloads.
    pub fn catalog(&self) -> Option<CatalogView> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A peer's IPv4 address (mapped ones included), by which a machine's MAC is looked up.
pub fn peer_v4(peer: std::net::SocketAddr) -> Option<std::net::Ipv4Addr> {
    match peer.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn push_reload(reloads: &mut Vec<Reload>, r: Reload) {
    let mut q: VecDeque<Reload> = std::mem::take(reloads).into();
    q.push_front(r);
    q.truncate(RELOADS_KEPT);
    *reloads = q.into();
}
