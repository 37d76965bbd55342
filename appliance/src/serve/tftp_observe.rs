//! What each TFTP request tells the operator: the transfer in the in-flight list while it runs,
//! then its count in the metrics and (with the journal on) a record with the machine, the
//! path, how it ended and the decision behind a rendered config.
//!
//! A request's decision is made in `Handler::read` and its end is reported to
//! `Handler::finished`; what the first learns waits here, keyed by the client's address and
//! port (its transfer ID) and the path, until the second takes it. The engine calls `finished`
//! exactly once for every request whose transfer task ran `read`, so nothing is left behind.

use crate::observe::{now_ms, peer_v4, Telemetry};
use crate::tftp::{ReadRequest, TransferReport};
use appliance_core::decide::Decision;
use appliance_core::journal::{Decided, Event, Tftp, TftpEnd};
use appliance_core::mac::MacAddr;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

/// What `read` learned about a request, for `finished`.
#[derive(Default)]
struct Started {
    mac: Option<MacAddr>,
    decision: Option<Decided>,
    /// Its entry in the in-flight list.
    running: Option<u64>,
}

#[derive(Default)]
pub struct Pending(Mutex<HashMap<(SocketAddr, String), Started>>);

impl Pending {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(SocketAddr, String), Started>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `decide` answered the request (a rendered config, a boot file with `--dhcp off`).
    pub fn decided(&self, t: &Telemetry, req: &ReadRequest, d: &Decision) {
        if !t.journal.enabled() {
            return;
        }
        let decided = Decided::new(d);
        self.with(|m| {
            let s = m.entry((req.peer, req.path.clone())).or_default();
            s.mac = d.machine.mac;
            s.decision = Some(decided);
        });
    }

    /// The content was found: the transfer runs now. `mac_for` maps the client's address.
    pub fn running(
        &self,
        t: &Telemetry,
        req: &ReadRequest,
        size: u64,
        mac_for: impl FnOnce(Ipv4Addr) -> Option<MacAddr>,
    ) {
        t.metrics.tftp.in_flight.inc();
        self.with(|m| {
            let s = m.entry((req.peer, req.path.clone())).or_default();
            if s.mac.is_none() {
                s.mac = peer_v4(req.peer).and_then(mac_for);
            }
            s.running = Some(t.transfers.start(appliance_core::status::Transfer {
                protocol: "tftp",
                mac: s.mac,
                peer: req.peer.to_string(),
                path: req.path.clone(),
                size: Some(size),
                started_at: now_ms(),
            }));
        });
    }

    /// The transfer (or refusal) ended.
    pub fn finished(&self, t: &Telemetry, report: &TransferReport, mac_for: impl FnOnce(Ipv4Addr) -> Option<MacAddr>) {
        let started = self.with(|m| m.remove(&(report.peer, report.path.clone()))).unwrap_or_default();
        if let Some(id) = started.running {
            t.transfers.end(id);
            t.metrics.tftp.in_flight.dec();
        }
        let end = TftpEnd::new(&report.outcome);
        t.metrics.tftp_finished(&end, report.bytes, report.retransmits, report.duration);
        if !t.journal.enabled() {
            return;
        }
        let ip = peer_v4(report.peer);
        let mac = started.mac.or_else(|| ip.and_then(mac_for));
        let record = Tftp {
            path: report.path.clone(),
            size: report.size,
            bytes: report.bytes,
            blksize: report.blksize,
            windowsize: report.windowsize,
            retransmits: report.retransmits,
            duration_ms: report.duration.as_millis() as u64,
            end,
            decision: started.decision,
        };
        t.journal.record(mac, ip, Event::Tftp(record));
    }
}
