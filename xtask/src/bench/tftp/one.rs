//! TFTP, one client: a big file at several block sizes from every server, alternating, with
//! curl as a cross-check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{
    baseline_of, baseline_target, our_builds, round_order, run_load, small_config, start_dnsmasq_tftp, start_ours,
    start_tftpd, tftp_root, Live, Load, BASELINE, BASELINE_TOLERANCE, FILE, OURS, TFTPD,
};
use crate::bench::report::{median, num, percentile, ratio, Report, Table};
use crate::bench::Ctx;

/// A row of the one-client table: a server and the windowsize our client asks it for.
struct Case<'a> {
    label: String,
    server: &'a Live,
    windowsize: u16,
}

pub fn single(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let size = plan.tftp_single_size;
    let root = tftp_root(ctx, size)?;
    let config = small_config(ctx, "tftp-config")?;
    let expected = Arc::new(std::fs::read(root.join(FILE))?);
    // Each build twice: lockstep transfers on their threads, and (`--tftp-lockstep-threads 0`)
    // on the async engine, to show what the threads buy.
    let mut builds = Vec::new();
    for (label, binary) in our_builds(ctx) {
        let tag = if label == OURS { "ours" } else { "baseline" };
        let threads = start_ours(ctx, &binary, &format!("tftp-{tag}"), &root, &config, &[])?;
        let engine = ["--tftp-lockstep-threads", "0"];
        let async_only = start_ours(ctx, &binary, &format!("tftp-{tag}-async"), &root, &config, &engine)?;
        builds.push((label, threads, async_only));
    }
    let tftpd = start_tftpd(ctx, &root)?;
    let dnsmasq = start_dnsmasq_tftp(ctx, &root).map_err(|e| eprintln!("bench: tftp: dnsmasq skipped: {e:#}")).ok();
    let mut peer_cases = vec![Case { label: TFTPD.into(), server: &tftpd, windowsize: 1 }];
    peer_cases.extend(dnsmasq.as_ref().map(|d| Case { label: "dnsmasq".into(), server: d, windowsize: 1 }));
    // Interleaved: each windowsize of every build, then a peer; the async rows last.
    let mut cases = Vec::new();
    let mut peer_cases = peer_cases.into_iter();
    for &ws in &plan.tftp_windows {
        for (label, threads, _) in &builds {
            cases.push(Case { label: format!("{label} ws={ws}"), server: threads, windowsize: ws });
        }
        cases.extend(peer_cases.next());
    }
    cases.extend(peer_cases);
    for (label, _, async_only) in &builds {
        cases.push(Case { label: format!("{label} ws=1 async"), server: async_only, windowsize: 1 });
    }

    let mb = size as f64 / 1e6;
    let rounds = plan.tftp_single_rounds;
    eprintln!("bench: tftp: one client, {mb:.0} MB, blksize {:?}, {rounds} round(s)", plan.tftp_blksizes);
    let mut times: BTreeMap<(u16, String), Vec<f64>> = BTreeMap::new();
    let mut rexmit: BTreeMap<(u16, String), u64> = BTreeMap::new();
    let mut cpu: BTreeMap<(u16, String), Vec<f64>> = BTreeMap::new();
    let mut curl_times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for &blksize in &plan.tftp_blksizes {
            for case in round_order(&cases, round) {
                let load = Load { clients: 1, blksize, windowsize: case.windowsize };
                let b = run_load(ctx, case.server, load, &expected, Duration::from_millis(30))?;
                if let Some(e) = b.first_error {
                    bail!("{} blksize {blksize}: {e}", case.label);
                }
                eprintln!(
                    "bench: tftp: round {}/{rounds} blksize {blksize:>5} {:<26} {:>7.3} s {:>7.1} MB/s, server CPU {:.2} s",
                    round + 1,
                    case.label,
                    b.wall,
                    mb / b.wall,
                    b.server_cpu
                );
                let key = (blksize, case.label.clone());
                times.entry(key.clone()).or_default().push(b.wall);
                cpu.entry(key.clone()).or_default().push(b.server_cpu);
                *rexmit.entry(key).or_default() += b.client_retransmits;
            }
        }
        // The cross-check: curl, lockstep at blksize 1468, against every server.
        for case in cases.iter().filter(|c| c.windowsize == 1) {
            let label = case.label.replace(" ws=1", "");
            let secs = curl_get(case.server.addr(), size).with_context(|| format!("curl against {label}"))?;
            eprintln!("bench: tftp: round {}/{rounds} curl blksize 1468 {label:<26} {secs:>7.3} s", round + 1);
            curl_times.entry(label).or_default().push(secs);
        }
    }

    let med = |blk: u16, label: &str| median(times.get(&(blk, label.to_string())).map_or(&[][..], Vec::as_slice));
    let mut header = vec!["blksize", "server", "time", "best", "MB/s", "time vs tftpd-hpa"];
    if ctx.baseline.is_some() {
        header.push("time vs baseline");
    }
    header.extend(["server CPU", "client retransmits"]);
    let mut t = Table::new(
        format!("TFTP, one client, {mb:.0} MB file (median of {rounds} rounds; our client for every server)"),
        &header,
    );
    let mut rows = Vec::new();
    for &blk in &plan.tftp_blksizes {
        let reference = med(blk, TFTPD);
        for case in &cases {
            let key = (blk, case.label.clone());
            let v = &times[&key];
            let m = median(v);
            let mut row = vec![
                blk.to_string(),
                case.label.clone(),
                format!("{} s", num(m)),
                format!("{} s", num(percentile(v, 0.0))),
            ];
            row.extend([num(mb / m), ratio(m / reference)]);
            let vs_baseline = baseline_of(&case.label).filter(|_| ctx.baseline.is_some()).map(|b| m / med(blk, &b));
            if ctx.baseline.is_some() {
                row.push(vs_baseline.map_or("-".into(), ratio));
            }
            row.extend([format!("{} s", num(median(&cpu[&key]))), rexmit[&key].to_string()]);
            t.row(row);
            rows.push(json!({
                "blksize": blk, "server": case.label, "median_s": m, "samples_s": v,
                "mb_per_s": mb / m, "vs_tftpd_hpa": m / reference, "vs_baseline": vs_baseline,
                "client_retransmits": rexmit[&key], "server_cpu_s": cpu[&key],
            }));
        }
    }
    let curl_ref = median(curl_times.get(TFTPD).map_or(&[][..], Vec::as_slice));
    let curl_row: Vec<String> =
        curl_times.iter().map(|(k, v)| format!("{k} {} s ({})", num(median(v)), ratio(median(v) / curl_ref))).collect();
    t.notes.push(format!(
        "Cross-check with curl (`curl --tftp-blksize 1468 tftp://...`, lockstep, median time and ratio to \
         tftpd-hpa): {}.",
        curl_row.join(", ")
    ));
    t.notes.push(
        "\"time\" is the median, \"best\" the fastest round (the least disturbed by other load); \
         \"time vs tftpd-hpa\" compares medians, below 1 is faster. tftpd-hpa and dnsmasq do not implement \
         RFC 7440 windowsize, so they always run lockstep. Server CPU: user + system time of the server and \
         everything it forked during the download (its cpuacct cgroup; median); less sensitive than wall time \
         to other load on the machine. Rows `ws=1 async` run with `--tftp-lockstep-threads 0`."
            .to_string(),
    );
    if let Some(b) = &ctx.baseline {
        t.notes.push(format!(
            "\"ours (baseline)\" is {}, measured in the same rounds; \"time vs baseline\" compares medians.",
            b.display()
        ));
    }
    report.tables.push(t);
    report
        .sections
        .insert("tftp_single".into(), json!({ "file_bytes": size, "rows": rows, "curl_blksize_1468_s": curl_times }));

    // Targets.
    for blk in [512u16, 1468] {
        if !plan.tftp_blksizes.contains(&blk) {
            continue;
        }
        let r = med(blk, "ours ws=1") / med(blk, TFTPD);
        // Each round measures ours and tftpd-hpa close together, so a round's ratio is less
        // exposed to the machine's drift over the run than the ratio of medians.
        let samples = |label: &str| times.get(&(blk, label.to_string())).cloned().unwrap_or_default();
        let paired: Vec<f64> = samples("ours ws=1").iter().zip(&samples(TFTPD)).map(|(o, p)| o / p).collect();
        let faster = paired.iter().filter(|x| **x <= 1.0).count();
        report.target(
            format!("TFTP one client, blksize {blk}: ours (lockstep) <= 1.0x tftpd-hpa's time"),
            Some(r <= 1.0),
            format!(
                "{} of tftpd-hpa's time (per round: {}; ours as fast or faster in {faster} of {} rounds)",
                ratio(r),
                paired.iter().map(|x| ratio(*x)).collect::<Vec<_>>().join(", "),
                paired.len()
            ),
        );
    }
    if plan.tftp_windows.contains(&16) {
        // The target is for the lockstep targets' block sizes; 8192 is in the table only.
        let peer_labels: Vec<&str> =
            cases.iter().filter(|c| !c.label.starts_with(OURS)).map(|c| &c.label[..]).collect();
        for &blk in plan.tftp_blksizes.iter().filter(|b| [512, 1468].contains(*b)) {
            let best_peer = peer_labels.iter().map(|p| med(blk, p)).fold(f64::INFINITY, f64::min);
            let best_any = peer_labels
                .iter()
                .flat_map(|p| plan.tftp_blksizes.iter().map(|b| med(*b, p)))
                .fold(f64::INFINITY, f64::min);
            let speedup = med(blk, TFTPD) / med(blk, "ours ws=16");
            report.target(
                format!("TFTP one client, blksize {blk}: ours ws=16 >= 3x faster than tftpd-hpa"),
                Some(speedup >= 3.0),
                format!(
                    "{speedup:.2}x faster (vs best peer at this blksize {:.2}x; vs best peer at any blksize {:.2}x)",
                    best_peer / med(blk, "ours ws=16"),
                    best_any / med(blk, "ours ws=16")
                ),
            );
        }
    }
    if ctx.baseline.is_some() {
        for case in cases.iter().filter(|c| c.label.starts_with(OURS) && !c.label.starts_with(BASELINE)) {
            let Some(base) = baseline_of(&case.label) else { continue };
            let ratios: Vec<(String, f64)> = plan
                .tftp_blksizes
                .iter()
                .map(|&blk| (format!("blksize {blk}"), med(blk, &case.label) / med(blk, &base)))
                .collect();
            let name = format!(
                "TFTP one client, {}: this build no slower than the baseline (<= {BASELINE_TOLERANCE}x)",
                case.label
            );
            baseline_target(report, name, &ratios);
        }
    }
    Ok(())
}

/// `curl` download at blksize 1468; returns curl's own total time.
fn curl_get(addr: SocketAddr, size: u64) -> Result<f64> {
    let url = if addr.port() == 69 { format!("tftp://{}/{FILE}", addr.ip()) } else { format!("tftp://{addr}/{FILE}") };
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "--tftp-blksize", "1468", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"])
        .arg(&url)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("curl {url} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut it = text.split_whitespace();
    let got: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    if got != size {
        bail!("curl {url} got {got} bytes, expected {size}");
    }
    Ok(secs)
}
