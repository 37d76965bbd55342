//! The status pages in a real browser. After a cell has booted, Debian's headless Chromium
//! loads the daemon's `/status` and the machine's page from inside the server namespace (the
//! daemon's admin listener is on its default address, the namespace's own loopback), and the
//! cell checks the DOM Chromium built (`--dump-dom`): the machine's row names its MAC, profile
//! and version, and its page shows the boot's stages. A screenshot of each page stays in the
//! cell's folder (`status.png`, `machine.png`), the artifact CI keeps.
//!
//! The flags are the ones this closed network needs: no sandbox (we run as root), no GPU, and
//! nothing that would make Chromium reach out on its own (first-run pages, component updates,
//! sync, background requests); a fresh profile folder for every run.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use testkit::netns::Netns;
use testkit::procs::{self, find_program};

/// The daemon's admin listener inside the namespace (`appliance serve`'s default).
pub const ADMIN: &str = "127.0.0.1:9090";

/// The longest one Chromium run may take (a cold start on a loaded machine takes seconds).
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// The window the screenshots are taken in.
const WINDOW: &str = "--window-size=1400,900";

/// What the pages must show about the machine that booted.
pub struct Expected<'a> {
    pub mac: &'a str,
    pub profile: &'a str,
    pub version: &'a str,
    /// Timeline steps (`data-step` of the machine page's rows) the boot went through.
    pub steps: &'a [&'a str],
}

/// A line for the cell's list of missing prerequisites, if Chromium is not installed.
pub fn missing() -> Option<String> {
    find_program("chromium").is_none().then(|| "chromium: install the Debian package chromium".to_string())
}

/// Loads both pages, checks their DOM and keeps the screenshots in `out`.
pub fn check_status_pages(ns: &Netns, out: &Path, want: &Expected<'_>) -> Result<()> {
    let overview_url = format!("http://{ADMIN}/status");
    let machine_url = format!("http://{ADMIN}/status/machines/{}", want.mac);

    let dom = chromium(ns, &["--dump-dom", &overview_url])?;
    std::fs::write(out.join("status.dom.html"), &dom)?;
    let row = element_with(&dom, "tr", &format!("data-mac=\"{}\"", want.mac))
        .with_context(|| format!("/status has no row for {} (DOM in status.dom.html)", want.mac))?;
    for (what, text) in [("profile", want.profile), ("version", want.version)] {
        if !row.contains(text) {
            bail!("the /status row of {} does not show its {what} {text}:\n{row}", want.mac);
        }
    }

    let dom = chromium(ns, &["--dump-dom", &machine_url])?;
    std::fs::write(out.join("machine.dom.html"), &dom)?;
    let summary = element_with(&dom, "dl", "id=\"summary\"")
        .with_context(|| format!("the page of {} has no summary (DOM in machine.dom.html)", want.mac))?;
    for text in [want.profile, want.version] {
        if !summary.contains(text) {
            bail!("the page of {} does not show {text} in its summary:\n{summary}", want.mac);
        }
    }
    if !dom.contains(want.mac) {
        bail!("the page of {} does not name it", want.mac);
    }
    for step in want.steps {
        if !dom.contains(&format!("data-step=\"{step}\"")) {
            bail!("the timeline of {} has no {step} step (DOM in machine.dom.html)", want.mac);
        }
    }

    for (url, file) in [(&overview_url, "status.png"), (&machine_url, "machine.png")] {
        let path = out.join(file);
        chromium(ns, &[WINDOW, &format!("--screenshot={}", path.display()), url])?;
        if !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            bail!("chromium wrote no screenshot {}", path.display());
        }
    }
    Ok(())
}

/// One headless Chromium run in the namespace with a fresh profile; its stdout.
fn chromium(ns: &Netns, args: &[&str]) -> Result<String> {
    let profile = tempfile::Builder::new().prefix("boot-test-chromium-").tempdir()?;
    let mut cmd = ns.command("chromium", Some(RUN_LIMIT));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args);
    procs::run(&mut cmd).with_context(|| format!("headless chromium {}", args.join(" ")))
}

/// The first `<tag …>…</tag>` whose opening tag contains `attr` (tags of this kind do not nest
/// in the pages).
fn element_with<'a>(dom: &'a str, tag: &str, attr: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let from = &rest[i..];
        let head_end = from.find('>')?;
        let end = from.find(&close).map_or(from.len(), |e| e + close.len());
        if from[..head_end].contains(attr) {
            return Some(&from[..end]);
        }
        rest = &from[head_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_element_by_its_attribute() {
        let dom = r#"<table><tr data-mac="a"><td>x</td></tr><tr data-mac="b"><td>live</td></tr></table>"#;
        assert_eq!(element_with(dom, "tr", r#"data-mac="b""#), Some(r#"<tr data-mac="b"><td>live</td></tr>"#));
        assert_eq!(element_with(dom, "tr", r#"data-mac="c""#), None);
    }
}
