//! The admin listener's read-only routes (`Access::Public` in `admin::ROUTES`): the status
//! page, a machine's page, their JSON, and the Prometheus metrics. They read the journal, the
//! install log and the catalog; they never serve an artifact or change anything.

use crate::admin::{AdminContext, Reply};
use appliance_core::explain::{self, Query};
use appliance_core::journal::{summarize, Event, Record, Summary};
use appliance_core::mac::MacAddr;
use appliance_core::status::{self as page, CatalogView, JournalInfo, MachinePage, MachinesJson, Overview};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Records without a machine the status page lists.
const UNATTRIBUTED_SHOWN: usize = 20;

/// `GET /status`.
pub fn overview_page(ctx: Arc<AdminContext>, _: Vec<String>, _: Request<Incoming>) -> Reply {
    Box::pin(async move {
        match blocking(move || page::render_overview(&overview(&ctx)).map_err(|e| e.to_string())).await {
            Ok(html) => respond(StatusCode::OK, "text/html; charset=utf-8", html),
            Err(e) => failed(&e),
        }
    })
}

/// `GET /status/machines/<mac>`.
pub fn machine_page(ctx: Arc<AdminContext>, params: Vec<String>, _: Request<Incoming>) -> Reply {
    Box::pin(async move {
        let Some(mac) = mac_param(&params) else {
            return respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", "not a MAC address\n".into());
        };
        let rendered = blocking(move || match machine(&ctx, mac) {
            Some(p) => page::render_machine(&p),
            None => page::render_unknown_machine(mac, &explanation(&ctx, mac, &VecDeque::new())),
        })
        .await;
        match rendered {
            Ok(html) => respond(StatusCode::OK, "text/html; charset=utf-8", html),
            Err(e) => failed(&e.to_string()),
        }
    })
}

/// `GET /api/machines`.
pub fn machines_json(ctx: Arc<AdminContext>, _: Vec<String>, _: Request<Incoming>) -> Reply {
    Box::pin(async move {
        let text = blocking(move || {
            let machines = summaries(&ctx);
            serde_json::to_string_pretty(&MachinesJson { now: crate::observe::now_ms(), machines: &machines })
        })
        .await;
        match text {
            Ok(t) => respond(StatusCode::OK, "application/json", t + "\n"),
            Err(e) => failed(&e.to_string()),
        }
    })
}

/// `GET /api/machines/<mac>`: the summary, the timeline (oldest first) and the explanation.
pub fn machine_json(ctx: Arc<AdminContext>, params: Vec<String>, _: Request<Incoming>) -> Reply {
    Box::pin(async move {
        let Some(mac) = mac_param(&params) else {
            return respond(StatusCode::BAD_REQUEST, "application/json", "{\"error\":\"not a MAC address\"}\n".into());
        };
        match blocking(move || machine(&ctx, mac).map(|p| serde_json::to_string_pretty(&p))).await {
            Some(Ok(t)) => respond(StatusCode::OK, "application/json", t + "\n"),
            Some(Err(e)) => failed(&e.to_string()),
            None => respond(
                StatusCode::NOT_FOUND,
                "application/json",
                "{\"error\":\"the journal has no record of this machine\"}\n".into(),
            ),
        }
    })
}

/// `GET /metrics`.
pub fn metrics(ctx: Arc<AdminContext>, _: Vec<String>, _: Request<Incoming>) -> Reply {
    Box::pin(async move {
        let text = ctx.shared.telemetry.metrics.encode();
        respond(StatusCode::OK, crate::observe::metrics::CONTENT_TYPE, text)
    })
}

fn mac_param(params: &[String]) -> Option<MacAddr> {
    MacAddr::parse(params.first()?).ok()
}

/// Builds a page off the async threads: it locks the journal and renders templates.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `installed` times by MAC, read from the install log once.
fn installed(ctx: &AdminContext) -> HashMap<MacAddr, u64> {
    ctx.installs.read(|log| log.machines().filter_map(|(m, l)| l.installed.as_ref().map(|i| (m, i.at))).collect())
}

fn summaries(ctx: &AdminContext) -> Vec<Summary> {
    let installed = installed(ctx);
    ctx.shared
        .telemetry
        .journal
        .read(|j| j.machines().map(|(mac, records)| summarize(mac, records, installed.get(&mac).copied())).collect())
        .unwrap_or_default()
}

fn overview(ctx: &AdminContext) -> Overview {
    let t = &ctx.shared.telemetry;
    let catalog = t.catalog().unwrap_or_else(|| CatalogView {
        source: "-".into(),
        overlay: None,
        version: "-".into(),
        loaded_at: 0,
        profiles: 0,
        machines: 0,
        dhcp_mode: "-".into(),
        reloads: Vec::new(),
    });
    let (machines_limit, records_limit, unattributed) = t
        .journal
        .read(|j| {
            let l = j.limits();
            (l.machines, l.records, j.unattributed().iter().rev().take(UNATTRIBUTED_SHOWN).cloned().collect())
        })
        .unwrap_or((0, 0, Vec::new()));
    Overview {
        now: crate::observe::now_ms(),
        catalog,
        machines: summaries(ctx),
        transfers: t.transfers.list(),
        unattributed,
        journal: JournalInfo {
            machines_limit,
            records_limit,
            dropped: t.journal.dropped(),
            file: t.journal.file().map(|f| f.display().to_string()),
        },
    }
}

fn machine(ctx: &AdminContext, mac: MacAddr) -> Option<MachinePage> {
    let records = ctx.shared.telemetry.journal.read(|j| j.timeline(mac).cloned()).flatten()?;
    let installed = ctx.installs.installed(mac).map(|i| i.at);
    let explain = explanation(ctx, mac, &records);
    Some(MachinePage { summary: summarize(mac, &records, installed), timeline: records.into(), explain })
}

/// What `appliance explain` prints for the machine, from what it last said in DHCP. Tokens are
/// rendered with the check-only key: this page needs no password, so it shows no machine's
/// real token.
fn explanation(ctx: &AdminContext, mac: MacAddr, records: &VecDeque<Record>) -> String {
    let dhcp = records.iter().rev().find_map(|r| match &r.event {
        Event::Dhcp(d) => Some(d),
        _ => None,
    });
    let query = Query {
        mac: Some(mac),
        client_arch: dhcp.and_then(|d| d.client_arch),
        vendor_class: dhcp.and_then(|d| d.vendor_class.clone()),
        user_class: dhcp.filter(|d| d.firmware.starts_with("ipxe")).map(|_| "iPXE".to_string()),
        chained: ctx.shared.chained(mac, std::time::Instant::now()),
        install: Some(ctx.installs.machine(mac).unwrap_or_default()),
        ..Query::default()
    };
    let catalog = ctx.shared.catalog();
    let mut out = match dhcp {
        Some(_) => String::new(),
        None => "(no DHCP request of this machine in the journal: explained as a client that says nothing)\n\n".into(),
    };
    match explain::explain(&catalog, &query) {
        Ok(text) => out.push_str(&text),
        Err(e) => out.push_str(&format!("explain failed: {e}")),
    }
    out
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn failed(e: &str) -> Response<Full<Bytes>> {
    tracing::error!("status page: {e}");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/plain; charset=utf-8",
        "internal error (see the appliance log)\n".into(),
    )
}
