//! `appliance status [--url URL]`: the machines table of a running daemon's admin listener
//! (`GET /api/machines`), aligned for a terminal. A plain HTTP/1.1 GET over a TCP stream is all
//! it needs, so no HTTP client crate comes in for it.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The columns, their JSON fields and their widths' upper bounds (long errors are cut).
const COLUMNS: &[(&str, &str, usize)] = &[
    ("MAC", "mac", 17),
    ("HOSTNAME", "hostname", 24),
    ("ARCH", "arch", 8),
    ("FIRMWARE", "firmware", 10),
    ("LAST STAGE", "last_stage", 40),
    ("PROFILE", "profile", 16),
    ("VERSION", "version", 12),
    ("INSTALL", "install", 32),
    ("LAST SEEN", "last_seen", 23),
    ("LAST ERROR", "last_error", 80),
];

/// Fetches `<url>/api/machines` and returns the table.
pub fn run(url: &str) -> Result<String> {
    let body = get(url, "/api/machines")?;
    let v: serde_json::Value = serde_json::from_str(&body).context("the answer is not the machines JSON")?;
    let machines = v["machines"].as_array().context("the answer has no machines list")?;
    Ok(table(machines))
}

/// The aligned table of `/api/machines`' rows.
pub fn table(machines: &[serde_json::Value]) -> String {
    if machines.is_empty() {
        return "no machine has been heard from yet\n".into();
    }
    let cell = |m: &serde_json::Value, field: &str, max: usize| -> String {
        let text = match (&m[field], field) {
            (serde_json::Value::Number(n), "last_seen") => {
                n.as_u64().map(appliance_core::journal::clock).unwrap_or_default().trim_end_matches(" UTC").to_string()
            }
            (serde_json::Value::String(s), _) => s.clone(),
            (serde_json::Value::Null, _) => "-".into(),
            (other, _) => other.to_string(),
        };
        let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if text.chars().count() > max {
            text.chars().take(max.saturating_sub(1)).chain(['…']).collect()
        } else {
            text
        }
    };
    let rows: Vec<Vec<String>> =
        machines.iter().map(|m| COLUMNS.iter().map(|(_, f, max)| cell(m, f, *max)).collect()).collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (h, _, _))| rows.iter().map(|r| r[i].chars().count()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(COLUMNS.iter().map(|(h, _, _)| *h).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// `GET path` from `url` (`http://host:port`), returning the body of a 200.
fn get(url: &str, path: &str) -> Result<String> {
    let authority = url.strip_prefix("http://").context("the URL must start with http://")?.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
        format!("connecting to the admin listener at {addr} (is the daemon running? --admin-listen)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the answer")?;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("the answer has no header end")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{url}{path} answered {}", head.lines().next().unwrap_or(""));
    }
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        bail!("{url}{path} answered in chunks, which this client does not read");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_missing_values_show_a_dash() {
        let rows: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"mac":"52:54:00:00:00:01","hostname":"node1","arch":"x86_64","firmware":"ipxe-bios",
                "last_stage":"HTTP GET /artifacts/live/0123456789ab/vmlinuz","profile":"live",
                "version":"0123456789ab","install":"-","last_seen":1000000000123,"last_error":null},
               {"mac":"52:54:00:00:00:02","hostname":null,"arch":null,"firmware":"uefi-pxe",
                "last_stage":"DHCP DISCOVER -> no reply","profile":null,"version":null,"install":"-",
                "last_seen":1000000000999,"last_error":"DHCP DISCOVER -> no reply: not served: UEFI client\nof unknown architecture"}]"#,
        )
        .unwrap();
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l[..l.find("LAST SEEN").or_else(|| l.find("2001-")).unwrap()].chars().count();
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].contains("2001-09-09 01:46:40.123"), "{t}");
        assert!(!lines[2].contains("node1") && lines[2].contains(" - "), "{t}");
        assert!(lines[2].ends_with("UEFI client of unknown architecture"), "{t}");
    }
}
