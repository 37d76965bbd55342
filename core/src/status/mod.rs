//! The operator's status pages (`GET /status`, `GET /status/machines/<mac>` on the admin
//! listener) and the shape of the JSON API (`/api/machines`, `/api/machines/<mac>`), from the
//! journal and the daemon's state.
//!
//! Server-rendered HTML from minijinja templates embedded in the binary, with undefined
//! variables an error and every value HTML-escaped (paths, vendor classes and installer
//! messages come from clients); plain CSS in the page, no JavaScript, and a refresh every few
//! seconds by `<meta http-equiv="refresh">`.
//!
//! Pure: the daemon gathers a [`Overview`] or a [`MachinePage`] and gets text back.

use crate::journal::{clock, Record, Severity, Step, Summary};
use crate::mac::MacAddr;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use std::sync::OnceLock;

/// Seconds between the pages' refreshes.
pub const REFRESH_SECS: u32 = 5;

/// The catalog being served, and what became of the last reloads.
#[derive(Clone, Debug, Serialize)]
pub struct CatalogView {
    /// The config directory.
    pub source: String,
    pub overlay: Option<String>,
    /// A digest of the config as loaded (see `appliance::serve`).
    pub version: String,
    /// Unix milliseconds.
    pub loaded_at: u64,
    pub profiles: usize,
    pub machines: usize,
    pub dhcp_mode: String,
    /// Newest first.
    pub reloads: Vec<Reload>,
}

/// One reload attempt.
#[derive(Clone, Debug, Serialize)]
pub struct Reload {
    pub at: u64,
    pub ok: bool,
    /// Every error of a refused config (`FILE:LINE:COL: field: message`), or the failure.
    pub errors: Vec<String>,
}

/// A transfer still running.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    pub protocol: &'static str,
    pub mac: Option<MacAddr>,
    pub peer: String,
    pub path: String,
    pub size: Option<u64>,
    pub started_at: u64,
}

/// What the journal itself is doing.
#[derive(Clone, Debug, Serialize)]
pub struct JournalInfo {
    pub machines_limit: usize,
    pub records_limit: usize,
    /// Records the hot path had to drop because the writer fell behind.
    pub dropped: u64,
    /// The journal file, or `None` when records are kept in memory only.
    pub file: Option<String>,
}

/// Everything `/status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    /// Unix milliseconds.
    pub now: u64,
    pub catalog: CatalogView,
    pub machines: Vec<Summary>,
    pub transfers: Vec<Transfer>,
    /// Recent records that name no machine, newest first.
    pub unattributed: Vec<Record>,
    pub journal: JournalInfo,
}

/// Everything a machine's page shows; also the JSON of `/api/machines/<mac>`.
#[derive(Clone, Debug, Serialize)]
pub struct MachinePage {
    pub summary: Summary,
    /// Oldest first.
    pub timeline: Vec<Record>,
    /// What `appliance explain` prints for this machine, from what it last said in DHCP.
    pub explain: String,
}

/// The JSON of `/api/machines`.
#[derive(Serialize)]
pub struct MachinesJson<'a> {
    pub now: u64,
    pub machines: &'a [Summary],
}

#[derive(Debug, thiserror::Error)]
#[error("status template {template}: {source:#}")]
pub struct StatusError {
    template: &'static str,
    source: minijinja::Error,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("index.html", include_str!("templates/index.html")),
    ("machine.html", include_str!("templates/machine.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_filter("clock", |ms: u64| clock(ms));
        for (name, src) in TEMPLATES {
            // Embedded and rendered by the tests below.
            env.add_template(name, src).expect("embedded status template compiles");
        }
        env
    })
}

fn run(template: &'static str, ctx: minijinja::Value) -> Result<String, StatusError> {
    let t = env().get_template(template).map_err(|source| StatusError { template, source })?;
    t.render(ctx).map_err(|source| StatusError { template, source })
}

/// A timeline row as the templates show it.
#[derive(Serialize)]
struct Row<'a> {
    at: u64,
    what: String,
    result: String,
    step: Step,
    severity: Severity,
    decision: Option<&'a crate::journal::Decided>,
    mac: Option<MacAddr>,
    ip: Option<std::net::Ipv4Addr>,
}

fn row(r: &Record) -> Row<'_> {
    Row {
        at: r.at,
        what: r.what(),
        result: r.result(),
        step: r.step(),
        severity: r.severity(),
        decision: r.decision(),
        mac: r.mac,
        ip: r.ip,
    }
}

/// `/status`.
pub fn render_overview(o: &Overview) -> Result<String, StatusError> {
    let unattributed: Vec<Row<'_>> = o.unattributed.iter().map(row).collect();
    run(
        "index.html",
        minijinja::context! { o => minijinja::Value::from_serialize(o), unattributed, refresh => REFRESH_SECS },
    )
}

/// `/status/machines/<mac>`.
pub fn render_machine(p: &MachinePage) -> Result<String, StatusError> {
    let rows: Vec<Row<'_>> = p.timeline.iter().rev().map(row).collect();
    run(
        "machine.html",
        minijinja::context! {
            p => minijinja::Value::from_serialize(p), mac => p.summary.mac, rows, refresh => REFRESH_SECS
        },
    )
}

/// `/status/machines/<mac>` for a machine the journal has not heard of.
pub fn render_unknown_machine(mac: MacAddr, explain: &str) -> Result<String, StatusError> {
    run(
        "machine.html",
        minijinja::context! {
            p => minijinja::context! { summary => (), explain }, mac, rows => Vec::<()>::new(), refresh => REFRESH_SECS
        },
    )
}

#[cfg(test)]
mod tests;
