//! What each HTTP request on the boot port tells the operator: the in-flight gauge, a file
//! response in the in-flight list while it is sent, then its count in the metrics and (with the
//! journal on) a record: an installer's report, an answer-file fetch, or the request with the
//! decision behind a script.

use super::routes::Notes;
use super::HttpContext;
use crate::observe::{now_ms, peer_v4};
use crate::state::Shared;
use appliance_core::journal::{Answer, Event, Http, Installer};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

/// Responses at least this long are listed as transfers in progress (scripts are not).
const LISTED_FROM: u64 = 64 * 1024;

/// Lists the response as a transfer in progress when it is a file; the id ends it.
pub(super) fn running(
    ctx: &HttpContext,
    notes: &Notes,
    peer: SocketAddr,
    path: &str,
    length: Option<u64>,
) -> Option<u64> {
    let len = length.filter(|l| *l >= LISTED_FROM)?;
    let mac = notes.mac.or_else(|| peer_v4(peer).and_then(|ip| ctx.shared.mac_for_ip(ip)));
    Some(ctx.shared.telemetry.transfers.start(appliance_core::status::Transfer {
        protocol: "http",
        mac,
        peer: peer.to_string(),
        path: path.to_string(),
        size: Some(len),
        started_at: now_ms(),
    }))
}

/// How a response ended.
pub(super) struct Done<'a> {
    pub method: &'a hyper::Method,
    pub path: String,
    pub status: u16,
    /// Body bytes sent, and the length announced (`None` for HEAD).
    pub bytes: u64,
    pub length: Option<u64>,
    pub started: Instant,
    pub peer: SocketAddr,
}

/// The response's body was sent, or dropped (the client went away).
pub(super) fn finished(shared: &Shared, notes: Notes, done: Done<'_>, running: Option<u64>) {
    let t = &shared.telemetry;
    t.metrics.http.in_flight.dec();
    if let Some(id) = running {
        t.transfers.end(id);
    }
    let duration = done.started.elapsed();
    let aborted = done.length.is_some_and(|len| done.bytes < len);
    t.metrics.http_finished(done.status, done.bytes, aborted, duration);
    if !t.journal.enabled() {
        return;
    }
    let ip = peer_v4(done.peer);
    let mac = notes.mac.or_else(|| ip.and_then(|ip| shared.mac_for_ip(ip)));
    let event = if let Some((event, message)) = notes.installer {
        Event::Installer(Installer { event, message, status: done.status, note: notes.decision })
    } else if let Some(name) = notes.answer {
        Event::Answer(Answer {
            name,
            status: done.status,
            bytes: done.bytes,
            decision: notes.decided,
            note: notes.decision,
        })
    } else {
        Event::Http(Http {
            method: method_words(done.method),
            path: done.path,
            status: done.status,
            bytes: done.bytes,
            length: done.length,
            duration_ms: duration.as_millis() as u64,
            note: if notes.decided.is_none() { notes.decision } else { None },
            decision: notes.decided,
        })
    };
    t.journal.record(mac, ip, event);
}

/// The method as the record spells it: borrowed for those the boot port serves.
fn method_words(m: &hyper::Method) -> Cow<'static, str> {
    match *m {
        hyper::Method::GET => Cow::Borrowed("GET"),
        hyper::Method::HEAD => Cow::Borrowed("HEAD"),
        hyper::Method::POST => Cow::Borrowed("POST"),
        ref other => Cow::Owned(other.to_string()),
    }
}
