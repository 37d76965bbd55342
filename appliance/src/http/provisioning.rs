//! The provisioning routes of the boot HTTP port: answer files for installers and the events
//! they report.
//!
//! - `GET|HEAD /answers/<mac>/<name>[?profile=P]`: answer `<name>` of the profile the machine
//!   is sent to (its entry, vendor rule or the unknown-machine policy; `?profile=` picks one of
//!   its menu's profiles), rendered for it by `appliance_core::answers`. The MAC in any
//!   spelling (`52:54:00:…`, `52-54-00-…`). A rendering failure is a 500 with the reason
//!   logged beside the MAC; the body is never a half-rendered file.
//! - `POST /events/<mac>`: `event` = started | progress | installed | failed, optional
//!   `message`, as JSON or form data (`appliance_core::events`), with the machine's token as
//!   `Authorization: Bearer <token>`, a `token` query parameter or a `token` field. Answers:
//!   404 for a machine the catalog does not serve, 413 for a body over 4 KiB, 403 for a
//!   missing or wrong token, 400 for a body that does not parse; 200 only once the event is
//!   durable in the install log (`install_store`). Nothing is recorded on any error.

use super::body::Body;
use super::routes::{internal_error, not_found, script_response, text, Notes};
use super::HttpContext;
use appliance_core::answers::{self, AnswerError};
use appliance_core::arch::Firmware;
use appliance_core::catalog::{Catalog, MenuAction, Profile, Target};
use appliance_core::client::{Client, Learned};
use appliance_core::decide::{decide, target_of, Stage};
use appliance_core::events::{self, Report};
use appliance_core::install::{entry_digest, Recorded};
use appliance_core::mac::MacAddr;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::time::Instant;

/// `/answers/<mac>/<name>`: `rest` is what follows `/answers/`.
pub(super) fn answer(ctx: &HttpContext, rest: &str, query: &str, notes: &mut Notes, head: bool) -> Response<Body> {
    let Some((mac, name)) = rest.split_once('/').filter(|(_, n)| !n.contains('/')) else { return not_found(head) };
    let Ok(mac) = MacAddr::parse(mac) else { return not_found(head) };
    notes.mac = Some(mac);
    notes.answer = Some(name.to_string());
    let catalog = ctx.shared.catalog();
    let mut client = Client::new(Firmware::Unknown).with_mac(mac, Learned::HttpQuery);
    // The architecture, when only the machine's DHCP said it.
    if let Some(dhcp) = ctx.shared.recalled_dhcp(mac, Instant::now()) {
        client.merge_overheard(&dhcp);
    }
    let picked =
        events::form_pairs(query).ok().and_then(|q| q.into_iter().find(|(k, _)| k == "profile")).map(|(_, v)| v);
    let Some((profile, direct)) = profile_for(&catalog, mac, picked.as_deref()) else {
        notes.decision = Some(format!("answer {name}: none (the machine is not sent to a profile)"));
        return text(StatusCode::NOT_FOUND, "no answer files for this machine", head);
    };
    let d = decide(&catalog, &client, Stage::IpxeScript);
    notes.decision = Some(format!("answer {name} of profile {}", profile.name));
    if ctx.shared.telemetry.journal.enabled() {
        notes.decided = Some(appliance_core::journal::Decided::new(&d));
    }
    notes.rule = Some(d.target_rule.to_string());
    match answers::render(&catalog, profile, name, d.arch, &d.machine, &ctx.shared.server(), direct) {
        Ok(a) => {
            let mut r = script_response(a.text, head);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
            r
        }
        Err(AnswerError::NoSuchAnswer { .. }) => not_found(head),
        Err(e) => internal_error(format_args!("answer {name} for {mac}: {e}"), head),
    }
}

/// The profile whose answers `mac` gets: its target's, or `picked` when that is one of its
/// menu's profiles (then `false`: not its direct target).
fn profile_for<'c>(catalog: &'c Catalog, mac: MacAddr, picked: Option<&str>) -> Option<(&'c Profile, bool)> {
    match (target_of(catalog, Some(mac)).0, picked) {
        (Target::Profile(p), None) => Some((&**p, true)),
        (Target::Profile(p), Some(name)) if p.name == name => Some((&**p, true)),
        (Target::Menu(m), Some(name)) => m.entries.iter().find_map(|e| match &e.action {
            MenuAction::Profile(p) if p.name == name => Some((&**p, false)),
            _ => None,
        }),
        _ => None,
    }
}

/// `POST /events/<mac>`: `rest` is what follows `/events/`.
pub(super) async fn event(ctx: &HttpContext, req: Request<Incoming>, rest: &str, notes: &mut Notes) -> Response<Body> {
    let Ok(mac) = MacAddr::parse(rest) else { return not_found(false) };
    notes.mac = Some(mac);
    let catalog = ctx.shared.catalog();
    // A machine the catalog would not boot has no installer to hear from.
    if catalog.machine(mac).is_none() && *target_of(&catalog, Some(mac)).0 == Target::Ignore {
        notes.decision = Some("event refused: unknown machine".into());
        return text(StatusCode::NOT_FOUND, "unknown machine", false);
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > events::MAX_BODY as u64) {
        return too_large(notes);
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
    let keys = ctx.shared.server().tokens;
    // A token outside the body is checked before the body is read.
    let outside = bearer(&req).or_else(|| {
        let query = req.uri().query().unwrap_or("");
        events::form_pairs(query).ok()?.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v)
    });
    if outside.as_deref().is_some_and(|t| !keys.verify(mac, t)) {
        return forbidden(notes);
    }
    let body = match Limited::new(req.into_body(), events::MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return too_large(notes),
        Err(e) => {
            tracing::debug!(%mac, "event body not received: {e}");
            return text(StatusCode::BAD_REQUEST, "the body could not be read", false);
        }
    };
    let report = match events::parse(content_type.as_deref(), &body) {
        Ok(r) => {
            notes.installer = Some((Some(r.kind), r.message.clone()));
            r
        }
        Err(e) => {
            notes.decision = Some(format!("event refused: {e}"));
            return text(StatusCode::BAD_REQUEST, &e.to_string(), false);
        }
    };
    match (&outside, &report.token) {
        (Some(_), _) => {}
        (None, Some(t)) if keys.verify(mac, t) => {}
        _ => return forbidden(notes),
    }
    record(ctx, &catalog, mac, report, notes).await
}

/// Writes the report to the install log and answers once it is on disk.
async fn record(
    ctx: &HttpContext,
    catalog: &Catalog,
    mac: MacAddr,
    report: Report,
    notes: &mut Notes,
) -> Response<Body> {
    let entry = entry_digest(catalog.machine(mac));
    let installs = ctx.installs.clone();
    let (kind, message) = (report.kind, report.message.clone());
    let at = crate::install_store::now();
    let written = tokio::task::spawn_blocking(move || installs.update(|log| log.record(mac, &report, at, entry))).await;
    let recorded = match written {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return internal_error(format_args!("recording event {kind} of {mac}: {e}"), false),
        Err(e) => return internal_error(format_args!("recording event {kind} of {mac}: {e}"), false),
    };
    notes.decision = Some(match recorded {
        Recorded::Full => format!("event {kind} not recorded: the install log is full of installed machines"),
        _ => format!("event {kind} recorded"),
    });
    if recorded == Recorded::Full {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the install log is full", false);
    }
    tracing::info!(%mac, event = %kind, says = message.as_deref().map(tracing::field::debug), "installer event");
    let body = serde_json::json!({ "mac": mac.to_string(), "event": kind.as_str(), "installed": recorded == Recorded::Installed });
    let mut r = script_response(format!("{body}\n"), false);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer<B>(req: &Request<B>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn forbidden(notes: &mut Notes) -> Response<Body> {
    notes.decision = Some("event refused: missing or wrong token".into());
    text(StatusCode::FORBIDDEN, "missing or wrong token for this machine", false)
}

fn too_large(notes: &mut Notes) -> Response<Body> {
    notes.decision = Some("event refused: body too large".into());
    text(StatusCode::PAYLOAD_TOO_LARGE, &format!("an event body is at most {} bytes", events::MAX_BODY), false)
}
