//! TFTP, many concurrent clients of a smaller file: a fresh server per measurement, with
//! completion times, failures, retransmissions and the server's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::{
    baseline_of, baseline_target, our_builds, round_order, run_load, small_config, start_ours, start_tftpd, tftp_root,
    Live, Load, BASELINE, BASELINE_TOLERANCE, FILE, OURS, TFTPD,
};
use crate::bench::peers::{self, MemSampler};
use crate::bench::report::{median, mib, num, percentile, ratio, Report, Table};
use crate::bench::Ctx;

/// Everything measured for one (clients, server) over the rounds.
#[derive(Default)]
struct Many {
    walls: Vec<f64>,
    completions: Vec<f64>,
    failures: usize,
    errors: Vec<String>,
    client_retransmits: u64,
    server_retransmits: Option<u64>,
    peak_pss: u64,
    peak_rss_sum: u64,
    peak_procs: u64,
    peak_threads: u64,
    cpu: Vec<f64>,
    client_cpu: Vec<f64>,
    hwm: Option<u64>,
}

pub fn many(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let size = plan.tftp_many_size;
    let root = tftp_root(ctx, size)?;
    let config = small_config(ctx, "tftp-config")?;
    let expected = Arc::new(std::fs::read(root.join(FILE))?);
    let mb = size as f64 / 1e6;
    eprintln!(
        "bench: tftp: {:?} concurrent clients, {mb:.0} MB each, blksize 1468, {} round(s)",
        plan.tftp_many_clients, plan.tftp_many_rounds
    );
    let builds = our_builds(ctx);
    let mut servers: Vec<&str> = builds.iter().map(|(label, _)| *label).collect();
    servers.push(TFTPD);
    let mut acc: BTreeMap<(usize, String), Many> = BTreeMap::new();
    for round in 0..plan.tftp_many_rounds {
        for &n in &plan.tftp_many_clients {
            for &label in round_order(&servers, round) {
                // A fresh server per measurement: its peak memory is this measurement's alone
                // (freed memory is not always returned to the system).
                let server = match builds.iter().find(|(l, _)| *l == label) {
                    Some((l, binary)) => {
                        let name = if *l == OURS { "tftp-many-ours" } else { "tftp-many-baseline" };
                        start_ours(ctx, binary, name, &root, &config, &[])?
                    }
                    None => start_tftpd(ctx, &root)?,
                };
                let pid = server.proc().pid();
                let log_at = match &server {
                    Live::Ours(o) => o.log_len(),
                    Live::Peer(..) => 0,
                };
                let sampler = MemSampler::start(pid, Duration::from_millis(100));
                let load = Load { clients: n, blksize: 1468, windowsize: 1 };
                let b = run_load(ctx, &server, load, &expected, Duration::from_millis(200))?;
                let mem = sampler.stop();
                let a = acc.entry((n, label.to_string())).or_default();
                a.walls.push(b.wall);
                a.completions.extend(&b.completions);
                a.failures += b.failures;
                a.errors.extend(b.first_error.clone());
                a.client_retransmits += b.client_retransmits;
                a.peak_pss = a.peak_pss.max(mem.pss_kib);
                a.peak_rss_sum = a.peak_rss_sum.max(mem.rss_kib);
                a.peak_procs = a.peak_procs.max(mem.processes);
                a.peak_threads = a.peak_threads.max(mem.threads);
                a.cpu.push(b.server_cpu);
                a.client_cpu.push(b.client_cpu);
                if let Live::Ours(o) = &server {
                    let (_, _, rexmit) = o.tftp_log_since(log_at);
                    *a.server_retransmits.get_or_insert(0) += rexmit;
                    a.hwm = a.hwm.max(peers::vm_hwm_kib(pid));
                }
                eprintln!(
                    "bench: tftp: round {}/{} {n:>4} clients {label:<16} wall {:>6.2} s, {:>6.1} MB/s aggregate, \
                     p99 {:>6.2} s, {} failed, peak PSS {}, server CPU {:.1} s",
                    round + 1,
                    plan.tftp_many_rounds,
                    b.wall,
                    (b.completions.len() as f64 * mb) / b.wall,
                    percentile(&b.completions, 99.0),
                    b.failures,
                    mib(mem.pss_kib),
                    b.server_cpu,
                );
            }
        }
    }
    let mut header = vec!["clients", "server", "wall", "aggregate MB/s", "vs tftpd-hpa"];
    if ctx.baseline.is_some() {
        header.push("vs baseline");
    }
    header.extend([
        "completion p50",
        "completion p99",
        "failures",
        "retransmits (client / server)",
        "server CPU",
        "server peak memory",
    ]);
    let mut t = Table::new(
        format!(
            "TFTP, many concurrent clients, {mb:.0} MB each, blksize 1468, lockstep ({} round(s); medians of the \
             rounds' wall times, percentiles over every transfer)",
            plan.tftp_many_rounds
        ),
        &header,
    );
    let mut rows = Vec::new();
    let wall = |n: usize, label: &str| median(&acc[&(n, label.to_string())].walls);
    for &n in &plan.tftp_many_clients {
        for &label in &servers {
            let a = &acc[&(n, label.to_string())];
            let agg = n as f64 * mb / wall(n, label);
            let vs_baseline =
                baseline_of(label).filter(|_| ctx.baseline.is_some()).map(|b| wall(n, &b) / wall(n, label));
            let memory = match a.hwm {
                Some(h) => format!("VmHWM {} (PSS {}, {} threads)", mib(h), mib(a.peak_pss), a.peak_threads),
                None => format!("PSS {} over {} processes", mib(a.peak_pss), a.peak_procs),
            };
            let mut row = vec![n.to_string(), label.to_string(), format!("{} s", num(wall(n, label))), num(agg)];
            row.push(ratio(wall(n, TFTPD) / wall(n, label)));
            if ctx.baseline.is_some() {
                row.push(vs_baseline.map_or("-".into(), ratio));
            }
            row.extend([
                format!("{} s", num(percentile(&a.completions, 50.0))),
                format!("{} s", num(percentile(&a.completions, 99.0))),
                a.failures.to_string(),
                format!("{} / {}", a.client_retransmits, a.server_retransmits.map_or("-".into(), |r| r.to_string())),
                format!(
                    "{} s ({} ms/MB; client {} s)",
                    num(median(&a.cpu)),
                    num(median(&a.cpu) * 1000.0 / (n as f64 * mb)),
                    num(median(&a.client_cpu))
                ),
                memory,
            ]);
            t.row(row);
            rows.push(json!({
                "clients": n, "server": label, "wall_s": a.walls, "median_wall_s": wall(n, label),
                "aggregate_mb_per_s": agg, "throughput_vs_tftpd_hpa": wall(n, TFTPD) / wall(n, label),
                "throughput_vs_baseline": vs_baseline,
                "completion_p50_s": percentile(&a.completions, 50.0),
                "completion_p99_s": percentile(&a.completions, 99.0),
                "failures": a.failures, "errors": a.errors,
                "client_retransmits": a.client_retransmits, "server_retransmits": a.server_retransmits,
                "peak_pss_kib": a.peak_pss, "peak_rss_sum_kib": a.peak_rss_sum, "peak_processes": a.peak_procs,
                "vm_hwm_kib": a.hwm, "peak_threads": a.peak_threads, "server_cpu_s": a.cpu,
                "client_cpu_s": a.client_cpu,
            }));
        }
    }
    t.notes.push(
        "Each measurement starts a fresh server. Memory: ours is one process (its VmHWM); \
         tftpd-hpa forks a process per transfer, so its figure is the peak sum of PSS (shared pages split \
         between processes) over the parent and its children, sampled every 100 ms. Server retransmits are \
         from our daemon's per-transfer log; tftpd-hpa does not report them. Server CPU: user + system time of \
         the server and its children during the run (median of the rounds); client: the load generator's \
         (this process, our TFTP client for every server), which shares the 2 CPUs with the server. \
         \"vs\" columns compare throughput (above 1 is faster)."
            .to_string(),
    );
    report.tables.push(t);
    report.sections.insert("tftp_many".into(), json!({ "file_bytes": size, "blksize": 1468, "rows": rows }));
    if let Some(&n) = plan.tftp_many_clients.iter().max() {
        let a = &acc[&(n, OURS.to_string())];
        let b = &acc[&(n, TFTPD.to_string())];
        report.target(
            format!("TFTP {n} concurrent clients: 0 failures (ours)"),
            Some(a.failures == 0),
            format!("{} failed of {} (tftpd-hpa: {})", a.failures, n * plan.tftp_many_rounds, b.failures),
        );
        let r = wall(n, TFTPD) / wall(n, OURS);
        report.target(
            format!("TFTP {n} concurrent clients: aggregate throughput >= tftpd-hpa's"),
            Some(r >= 1.0),
            format!("{} of tftpd-hpa's", ratio(r)),
        );
    }
    if ctx.baseline.is_some() {
        let ratios: Vec<(String, f64)> = plan
            .tftp_many_clients
            .iter()
            .map(|&n| (format!("{n} clients"), wall(n, OURS) / wall(n, BASELINE)))
            .collect();
        let name = format!("TFTP many clients: this build no slower than the baseline (<= {BASELINE_TOLERANCE}x)");
        baseline_target(report, name, &ratios);
    }
    Ok(())
}
