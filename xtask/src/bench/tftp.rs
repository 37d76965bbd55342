//! TFTP: one client downloading a big file at several block sizes (ours with windowsize 1, 4
//! and 16; tftpd-hpa and dnsmasq, which have no RFC 7440, lockstep), cross-checked with curl;
//! then many concurrent clients of a smaller file (ours and tftpd-hpa) with completion times,
//! failures, retransmissions and the servers' memory. Every download uses our client
//! (`appliance::tftp::client::get`, with tsize as firmware sends it) and is compared with the
//! file byte for byte.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use testkit::tftp_client::{get, ClientOptions};

use super::ours::{self, Ours};
use super::peers::{self, MemSampler, Proc};
use super::report::{median, mib, num, percentile, ratio, Report, Table};
use super::Ctx;

const FILE: &str = "bench.bin";

/// A TFTP server under test.
#[derive(Clone)]
struct Server<'a> {
    label: String,
    addr: SocketAddr,
    windowsize: u16,
    proc: &'a Proc,
}

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    single(ctx, report)?;
    many(ctx, report)
}

fn client_options(blksize: u16, windowsize: u16) -> ClientOptions {
    ClientOptions {
        blksize: Some(blksize),
        windowsize: (windowsize > 1).then_some(windowsize),
        tsize: true,
        retry_timeout: Duration::from_secs(1),
        max_retries: 5,
        ..Default::default()
    }
}

/// A config dir with tiny artifacts (TFTP benches serve from `--tftp-root`).
fn small_config(ctx: &Ctx, name: &str) -> Result<std::path::PathBuf> {
    let dir = ctx.scratch(name)?;
    let k = ours::data_file(ctx, "small-kernel", 100_000)?;
    let i = ours::data_file(ctx, "small-initrd", 50_000)?;
    ours::write_config(&dir, &k, &i)?;
    Ok(dir)
}

/// Sends an RRQ for `ready.txt` and waits briefly for any answer (then ends the transfer
/// with an ERROR so the server does not retransmit).
fn tftp_probe(addr: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind((addr.ip(), 0)).or_else(|_| UdpSocket::bind("0.0.0.0:0")) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let rrq = b"\x00\x01ready.txt\x00octet\x00";
    if s.send_to(rrq, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    match s.recv_from(&mut buf) {
        Ok((_, from)) => {
            let _ = s.send_to(b"\x00\x05\x00\x00done\x00", from);
            true
        }
        Err(_) => false,
    }
}

fn start_tftpd(ctx: &Ctx, root: &Path) -> Result<(Proc, SocketAddr)> {
    let port = peers::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = ctx.peers.command(&ctx.peers.tftpd);
    // -L: standalone, foreground; -u root: do not drop to `nobody` (the files are ours);
    // -s: chroot into the root, as deployed.
    cmd.args(["-L", "-a", &addr.to_string(), "-u", "root", "-s"]).arg(root);
    let mut p = Proc::start("tftpd-hpa", cmd, &ctx.work.join("tftpd-hpa.log"))?;
    peers::wait_ready(&mut p, Duration::from_secs(10), || tftp_probe(addr))?;
    Ok((p, addr))
}

/// dnsmasq's TFTP server only listens on port 69, so it gets 127.0.0.2:69 to itself.
fn start_dnsmasq_tftp(ctx: &Ctx, root: &Path) -> Result<(Proc, SocketAddr)> {
    let addr: SocketAddr = ([127, 0, 0, 2], 69).into();
    if UdpSocket::bind(addr).is_err() {
        bail!("127.0.0.2:69 is in use: dnsmasq's TFTP server cannot use another port");
    }
    let mut cmd = ctx.peers.command(&ctx.peers.dnsmasq);
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--enable-tftp",
        "--listen-address=127.0.0.2",
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        "--pid-file=",
        "--log-facility=-",
        "--tftp-max=1000",
    ])
    .arg(format!("--tftp-root={}", root.display()));
    let mut p = Proc::start("dnsmasq (tftp)", cmd, &ctx.work.join("dnsmasq-tftp.log"))?;
    peers::wait_ready(&mut p, Duration::from_secs(10), || tftp_probe(addr))?;
    Ok((p, addr))
}

fn tftp_root(ctx: &Ctx, size: u64) -> Result<std::path::PathBuf> {
    let root = ctx.scratch("tftproot")?;
    let data = ours::data_file(ctx, "tftp", size)?;
    ours::link_or_copy(&data, &root.join(FILE))?;
    std::fs::write(root.join("ready.txt"), b"ready\n")?;
    Ok(root)
}

fn start_all(ctx: &Ctx, root: &Path, config: &Path) -> Result<(Ours, Proc, SocketAddr)> {
    let ours = ours::start_loopback(ctx, "tftp-ours", config, Some(root), None, &[])?;
    let (tftpd, taddr) = start_tftpd(ctx, root)?;
    Ok((ours, tftpd, taddr))
}

/// Label of our daemon run with every lockstep transfer on the async engine
/// (`--tftp-lockstep-threads 0`), to show what the blocking lockstep threads buy.
const OURS_ASYNC: &str = "ours ws=1 async";

// ---------------------------------------------------------------------------------------------
// One client.

pub fn single(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let size = plan.tftp_single_size;
    let root = tftp_root(ctx, size)?;
    let config = small_config(ctx, "tftp-config")?;
    let expected = Arc::new(std::fs::read(root.join(FILE))?);
    let (ours, tftpd, taddr) = start_all(ctx, &root, &config)?;
    let dnsmasq = match start_dnsmasq_tftp(ctx, &root) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("bench: tftp: dnsmasq skipped: {e:#}");
            None
        }
    };
    // Alternating: ours, peer, ours, peer, ours.
    let mut servers = Vec::new();
    let mut peers_list = vec![Server { label: "tftpd-hpa".into(), addr: taddr, windowsize: 1, proc: &tftpd }];
    if let Some((p, a)) = &dnsmasq {
        peers_list.push(Server { label: "dnsmasq".into(), addr: *a, windowsize: 1, proc: p });
    }
    for (i, ws) in plan.tftp_windows.iter().enumerate() {
        servers.push(Server { label: format!("ours ws={ws}"), addr: ours.tftp, windowsize: *ws, proc: &ours.proc });
        if let Some(p) = peers_list.get(i) {
            servers.push(p.clone());
        }
    }
    servers.extend(peers_list.iter().skip(plan.tftp_windows.len()).cloned());
    let ours_async =
        ours::start_loopback(ctx, "tftp-ours-async", &config, Some(&root), None, &["--tftp-lockstep-threads", "0"])?;
    servers.push(Server { label: OURS_ASYNC.into(), addr: ours_async.tftp, windowsize: 1, proc: &ours_async.proc });

    let mb = size as f64 / 1e6;
    eprintln!(
        "bench: tftp: one client, {mb:.0} MB, blksize {:?}, {} round(s)",
        plan.tftp_blksizes, plan.tftp_single_rounds
    );
    let mut times: BTreeMap<(u16, String), Vec<f64>> = BTreeMap::new();
    let mut rexmit: BTreeMap<(u16, String), u64> = BTreeMap::new();
    let mut cpu: BTreeMap<(u16, String), Vec<f64>> = BTreeMap::new();
    let mut curl_times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..plan.tftp_single_rounds {
        for &blk in &plan.tftp_blksizes {
            // Each round starts one server further on, so that no server always runs first
            // (just after the previous blksize's fastest case) or always right after the same one.
            for s in servers.iter().cycle().skip(round % servers.len()).take(servers.len()) {
                let cpu_before = s.proc.cpu_secs();
                let (secs, retrans) = download(ctx, s.addr, blk, s.windowsize, &expected)
                    .with_context(|| format!("{} blksize {blk}", s.label))?;
                // A forking server's child may still be exiting.
                std::thread::sleep(Duration::from_millis(30));
                let cpu_secs = s.proc.cpu_secs() - cpu_before;
                eprintln!(
                    "bench: tftp: round {}/{} blksize {blk:>5} {:<12} {:>7.3} s {:>7.1} MB/s, server CPU {:.2} s",
                    round + 1,
                    plan.tftp_single_rounds,
                    s.label,
                    secs,
                    mb / secs,
                    cpu_secs
                );
                let key = (blk, s.label.clone());
                times.entry(key.clone()).or_default().push(secs);
                cpu.entry(key.clone()).or_default().push(cpu_secs);
                *rexmit.entry(key).or_default() += retrans;
            }
        }
        // The cross-check: curl, lockstep at blksize 1468, against every server.
        for s in servers.iter().filter(|s| s.windowsize == 1) {
            let label = match s.label.as_str() {
                OURS_ASYNC => "ours async",
                l if l.starts_with("ours") => "ours",
                l => l,
            };
            let secs = curl_get(s.addr, size).with_context(|| format!("curl against {label}"))?;
            eprintln!(
                "bench: tftp: round {}/{} curl blksize 1468 {label:<12} {secs:>7.3} s",
                round + 1,
                plan.tftp_single_rounds
            );
            curl_times.entry(label.to_string()).or_default().push(secs);
        }
    }

    let mut t = Table::new(
        format!(
            "TFTP, one client, {mb:.0} MB file (median of {} rounds; our client for every server)",
            plan.tftp_single_rounds
        ),
        &["blksize", "server", "time", "best", "MB/s", "time vs tftpd-hpa", "server CPU", "client retransmits"],
    );
    let mut rows = Vec::new();
    for &blk in &plan.tftp_blksizes {
        let reference = median(times.get(&(blk, "tftpd-hpa".to_string())).map_or(&[][..], Vec::as_slice));
        for s in &servers {
            let key = (blk, s.label.clone());
            let v = &times[&key];
            let m = median(v);
            t.row(vec![
                blk.to_string(),
                s.label.clone(),
                format!("{} s", num(m)),
                format!("{} s", num(percentile(v, 0.0))),
                num(mb / m),
                ratio(m / reference),
                format!("{} s", num(median(&cpu[&key]))),
                rexmit[&key].to_string(),
            ]);
            rows.push(json!({
                "blksize": blk, "server": s.label, "median_s": m, "samples_s": v,
                "mb_per_s": mb / m, "vs_tftpd_hpa": m / reference, "client_retransmits": rexmit[&key],
                "server_cpu_s": cpu[&key],
            }));
        }
    }
    let curl_ref = median(curl_times.get("tftpd-hpa").map_or(&[][..], Vec::as_slice));
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
         to other load on the machine."
            .to_string(),
    );
    report.tables.push(t);
    report.sections.insert(
        "tftp_single".into(),
        json!({
            "file_bytes": size, "rows": rows,
            "curl_blksize_1468_s": curl_times,
        }),
    );

    // Targets.
    let med = |blk: u16, label: &str| median(times.get(&(blk, label.to_string())).map_or(&[][..], Vec::as_slice));
    for blk in [512u16, 1468] {
        if !plan.tftp_blksizes.contains(&blk) {
            continue;
        }
        let r = med(blk, "ours ws=1") / med(blk, "tftpd-hpa");
        // Each round measures ours and tftpd-hpa back to back, so a round's ratio is less
        // exposed to the machine's drift over the run than the ratio of medians.
        let samples = |label: &str| times.get(&(blk, label.to_string())).cloned().unwrap_or_default();
        let (ours, peer) = (samples("ours ws=1"), samples("tftpd-hpa"));
        let paired: Vec<f64> = ours.iter().zip(&peer).map(|(o, p)| o / p).collect();
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
        for &blk in plan.tftp_blksizes.iter().filter(|b| [512, 1468].contains(*b)) {
            let tftpd = med(blk, "tftpd-hpa");
            let best_peer = peers_list.iter().map(|p| med(blk, &p.label)).fold(f64::INFINITY, f64::min);
            let best_any = peers_list
                .iter()
                .flat_map(|p| plan.tftp_blksizes.iter().map(|b| med(*b, &p.label)))
                .fold(f64::INFINITY, f64::min);
            let speedup = tftpd / med(blk, "ours ws=16");
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
    drop(ours);
    Ok(())
}

/// One download with our client, checked byte for byte: (seconds, client retransmissions).
///
/// The client runs on a current-thread runtime of its own: on the shared multi-thread runtime
/// every datagram it waits for would be picked up by a worker thread and handed to this one
/// (two cross-thread wake-ups per lockstep round trip), which made the client, not the server,
/// the largest and noisiest part of each round trip.
fn download(_ctx: &Ctx, addr: SocketAddr, blk: u16, ws: u16, expected: &Arc<Vec<u8>>) -> Result<(f64, u64)> {
    let opts = client_options(blk, ws);
    let exp = expected.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let t = Instant::now();
        let dl = get(addr, FILE, &opts).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = t.elapsed().as_secs_f64();
        if dl.data != *exp {
            bail!("content differs ({} bytes, expected {})", dl.data.len(), exp.len());
        }
        Ok((secs, dl.stats.retransmits))
    })
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

// ---------------------------------------------------------------------------------------------
// Many clients.

struct ManyResult {
    wall: f64,
    completions: Vec<f64>,
    failures: usize,
    first_error: Option<String>,
    client_retransmits: u64,
}

fn many_once(ctx: &Ctx, addr: SocketAddr, n: usize, expected: &Arc<Vec<u8>>) -> ManyResult {
    let exp = expected.clone();
    ctx.rt.block_on(async move {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let exp = exp.clone();
            set.spawn(async move {
                let r = get(addr, FILE, &client_options(1468, 1)).await;
                let t = start.elapsed().as_secs_f64();
                match r {
                    Ok(dl) if dl.data == *exp => Ok((t, dl.stats.retransmits)),
                    Ok(dl) => Err(format!("content differs ({} bytes)", dl.data.len())),
                    Err(e) => Err(e.to_string()),
                }
            });
        }
        let mut res =
            ManyResult { wall: 0.0, completions: Vec::new(), failures: 0, first_error: None, client_retransmits: 0 };
        while let Some(j) = set.join_next().await {
            match j {
                Ok(Ok((t, r))) => {
                    res.completions.push(t);
                    res.client_retransmits += r;
                }
                Ok(Err(e)) => {
                    res.failures += 1;
                    res.first_error.get_or_insert(e);
                }
                Err(e) => {
                    res.failures += 1;
                    res.first_error.get_or_insert(e.to_string());
                }
            }
        }
        res.wall = start.elapsed().as_secs_f64();
        res
    })
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
    let servers = ["ours", "tftpd-hpa"];
    #[derive(Default)]
    struct Acc {
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
    let mut acc: BTreeMap<(usize, String), Acc> = BTreeMap::new();
    for round in 0..plan.tftp_many_rounds {
        for &n in &plan.tftp_many_clients {
            for label in servers {
                // A fresh server per measurement: its peak memory is this measurement's alone
                // (freed memory is not always returned to the system).
                let is_ours = label == "ours";
                let (ours, peer, addr) = if is_ours {
                    let o = ours::start_loopback(ctx, "tftp-many-ours", &config, Some(&root), None, &[])?;
                    let a = o.tftp;
                    (Some(o), None, a)
                } else {
                    let (p, a) = start_tftpd(ctx, &root)?;
                    (None, Some(p), a)
                };
                let proc = match (&ours, &peer) {
                    (Some(o), _) => &o.proc,
                    (None, Some(p)) => p,
                    (None, None) => unreachable!(),
                };
                let pid = proc.pid();
                let log_at = ours.as_ref().map_or(0, Ours::log_len);
                let cpu_before = proc.cpu_secs();
                let client_before = peers::self_cpu_secs();
                let sampler = MemSampler::start(pid, Duration::from_millis(100));
                let r = many_once(ctx, addr, n, &expected);
                let mem = sampler.stop();
                let client_cpu = peers::self_cpu_secs() - client_before;
                std::thread::sleep(Duration::from_millis(200));
                let cpu_secs = proc.cpu_secs() - cpu_before;
                let a = acc.entry((n, label.to_string())).or_default();
                a.walls.push(r.wall);
                a.completions.extend(&r.completions);
                a.failures += r.failures;
                a.errors.extend(r.first_error.clone());
                a.client_retransmits += r.client_retransmits;
                a.peak_pss = a.peak_pss.max(mem.pss_kib);
                a.peak_rss_sum = a.peak_rss_sum.max(mem.rss_kib);
                a.peak_procs = a.peak_procs.max(mem.processes);
                a.peak_threads = a.peak_threads.max(mem.threads);
                a.cpu.push(cpu_secs);
                a.client_cpu.push(client_cpu);
                if let Some(o) = &ours {
                    let (_, _, rexmit) = o.tftp_log_since(log_at);
                    *a.server_retransmits.get_or_insert(0) += rexmit;
                    a.hwm = a.hwm.max(peers::vm_hwm_kib(pid));
                }
                eprintln!(
                    "bench: tftp: round {}/{} {n:>4} clients {:<10} wall {:>6.2} s, {:>6.1} MB/s aggregate, \
                     p99 {:>6.2} s, {} failed, peak PSS {}, server CPU {:.1} s",
                    round + 1,
                    plan.tftp_many_rounds,
                    label,
                    r.wall,
                    (r.completions.len() as f64 * mb) / r.wall,
                    percentile(&r.completions, 99.0),
                    r.failures,
                    mib(mem.pss_kib),
                    cpu_secs,
                );
            }
        }
    }
    let mut t = Table::new(
        format!(
            "TFTP, many concurrent clients, {mb:.0} MB each, blksize 1468, lockstep ({} round(s); medians of the \
             rounds' wall times, percentiles over every transfer)",
            plan.tftp_many_rounds
        ),
        &[
            "clients",
            "server",
            "wall",
            "aggregate MB/s",
            "vs tftpd-hpa",
            "completion p50",
            "completion p99",
            "failures",
            "retransmits (client / server)",
            "server CPU",
            "server peak memory",
        ],
    );
    let mut rows = Vec::new();
    for &n in &plan.tftp_many_clients {
        let ref_wall = median(&acc[&(n, "tftpd-hpa".to_string())].walls);
        for label in servers {
            let a = &acc[&(n, label.to_string())];
            let wall = median(&a.walls);
            let agg = n as f64 * mb / wall;
            let memory = match a.hwm {
                Some(h) => format!("VmHWM {} (PSS {}, {} threads)", mib(h), mib(a.peak_pss), a.peak_threads),
                None => format!("PSS {} over {} processes", mib(a.peak_pss), a.peak_procs),
            };
            t.row(vec![
                n.to_string(),
                label.to_string(),
                format!("{} s", num(wall)),
                num(agg),
                ratio(ref_wall / wall),
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
            rows.push(json!({
                "clients": n, "server": label, "wall_s": a.walls, "median_wall_s": wall,
                "aggregate_mb_per_s": agg, "throughput_vs_tftpd_hpa": ref_wall / wall,
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
         (this process, our TFTP client for every server), which shares the 2 CPUs with the server."
            .to_string(),
    );
    report.tables.push(t);
    report.sections.insert("tftp_many".into(), json!({ "file_bytes": size, "blksize": 1468, "rows": rows }));
    if let Some(&n) = plan.tftp_many_clients.iter().max() {
        let a = &acc[&(n, "ours".to_string())];
        let b = &acc[&(n, "tftpd-hpa".to_string())];
        report.target(
            format!("TFTP {n} concurrent clients: 0 failures (ours)"),
            Some(a.failures == 0),
            format!("{} failed of {} (tftpd-hpa: {})", a.failures, n * plan.tftp_many_rounds, b.failures),
        );
        let r = median(&b.walls) / median(&a.walls);
        report.target(
            format!("TFTP {n} concurrent clients: aggregate throughput >= tftpd-hpa's"),
            Some(r >= 1.0),
            format!("{} of tftpd-hpa's", ratio(r)),
        );
    }
    Ok(())
}
