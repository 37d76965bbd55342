//! DHCP: ProxyDHCP DISCOVER->OFFER at a fixed offered rate (latency) and closed-loop (the
//! most it answers), and full DORA (server mode), ours against dnsmasq. Each server runs
//! alone inside the server namespace on port 67, freshly started for each measurement (empty
//! lease table); the load generator is this binary inside the client namespace
//! (`--internal`), broadcasting on its end of the veth pair, so both servers are measured
//! through the same path. The generator runs on plain threads (a sender and a receiver),
//! not tokio, so the sending schedule is not tied to a 1 ms timer.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::netns::{self, CLIENT_IF, SERVER_IF};
use super::ours;
use super::packets::{self, Firmware, Reply};
use super::peers::Proc;
use super::report::{median, num, percentile, ratio, Report, Table};
use super::Ctx;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Case {
    ProxyRate,
    ProxyMax,
    Dora,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::ProxyRate => "proxy_rate",
            Case::ProxyMax => "proxy_max",
            Case::Dora => "dora",
        }
    }
}

/// Closed-loop concurrency (requests in flight).
const PROXY_MAX_INFLIGHT: usize = 32;
const DORA_INFLIGHT: usize = 16;

fn start_dnsmasq(ctx: &Ctx, ns: &str, case: Case, n: usize) -> Result<Proc> {
    let log = ctx.work.join(format!("dnsmasq-dhcp-{n}.log"));
    let leases = ctx.work.join(format!("dnsmasq-{n}.leases"));
    let _ = std::fs::remove_file(&leases);
    let mut cmd = netns::command(ns, &ctx.peers.dnsmasq);
    cmd.env("LD_LIBRARY_PATH", ctx.peers.library_path());
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        &format!("--interface={SERVER_IF}"),
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        "--pid-file=",
    ])
    .arg(format!("--log-facility={}", log.display()))
    .arg(format!("--dhcp-leasefile={}", leases.display()));
    match case {
        Case::ProxyRate | Case::ProxyMax => {
            cmd.args([
                "--dhcp-range=10.213.0.0,proxy,255.255.0.0",
                "--pxe-service=x86PC,Network boot,undionly.kpxe,10.213.0.1",
            ]);
        }
        Case::Dora => {
            // --no-ping: our server does not probe addresses either (docs/firmware.md#dhcp-address-probes).
            cmd.args([
                "--dhcp-range=10.213.1.1,10.213.250.254,255.255.0.0,1h",
                "--dhcp-lease-max=100000",
                "--no-ping",
                "--dhcp-boot=undionly.kpxe",
            ]);
        }
    }
    let mut p = Proc::start("dnsmasq (dhcp)", cmd, &ctx.work.join(format!("dnsmasq-dhcp-{n}.out")))?;
    std::thread::sleep(Duration::from_millis(200));
    p.check_alive()?;
    Ok(p)
}

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let ns = netns::create().context("creating the network namespaces")?;
    let config = ctx.scratch("dhcp-config")?;
    ours::write_config(
        &config,
        &ours::data_file(ctx, "small-kernel", 100_000)?,
        &ours::data_file(ctx, "small-initrd", 50_000)?,
    )?;
    eprintln!(
        "bench: dhcp: proxy at {}/s for {} s, proxy closed-loop ({PROXY_MAX_INFLIGHT} in flight), {} DORAs \
         ({DORA_INFLIGHT} in flight); {} round(s)",
        plan.dhcp_rate, plan.dhcp_rate_secs, plan.dhcp_dora_clients, plan.rounds
    );
    let mut results: BTreeMap<(Case, &str), Vec<Value>> = BTreeMap::new();
    let mut n = 0usize;
    for round in 0..plan.rounds {
        for case in [Case::ProxyRate, Case::ProxyMax, Case::Dora] {
            for server in ["ours", "dnsmasq"] {
                n += 1;
                let proc = if server == "ours" {
                    let mode = if case == Case::Dora { "server" } else { "proxy" };
                    ours::start_in_ns(ctx, &format!("dhcp-ours-{n}"), ns.server.name(), &config, mode, None)?.proc
                } else {
                    start_dnsmasq(ctx, ns.server.name(), case, n)?
                };
                let secs = if case == Case::ProxyRate { plan.dhcp_rate_secs } else { plan.dhcp_max_secs };
                let spec = json!({
                    "role": "dhcp", "mode": case.name(), "iface": CLIENT_IF, "run": (n % 250) as u8,
                    "rate": plan.dhcp_rate, "secs": secs,
                    "inflight": if case == Case::Dora { DORA_INFLIGHT } else { PROXY_MAX_INFLIGHT },
                    "count": plan.dhcp_dora_clients,
                });
                let log = ctx.work.join(format!("dhcp-gen-{n}.log"));
                let cpu_before = proc.cpu_secs();
                let drops_before = (udp_drops(ns.server.name()), udp_drops(ns.client.name()));
                let out = super::run_internal(ns.client.name(), &spec, &log, Duration::from_secs(300));
                let cpu = proc.cpu_secs() - cpu_before;
                let drops =
                    (udp_drops(ns.server.name()) - drops_before.0, udp_drops(ns.client.name()) - drops_before.1);
                drop(proc);
                let mut out = out.with_context(|| format!("{server} {}", case.name()))?;
                out["server_cpu_s"] = json!(cpu);
                out["udp_drops_server_ns"] = json!(drops.0);
                out["udp_drops_client_ns"] = json!(drops.1);
                out["server_cpu_us_per_answer"] = json!(cpu * 1e6 / out["answered"].as_f64().unwrap_or(f64::NAN));
                eprintln!(
                    "bench: dhcp: round {}/{} {:<10} {:<7} {:>8.0}/s answered, p50 {:.3} ms, p99 {:.3} ms, {} lost",
                    round + 1,
                    plan.rounds,
                    case.name(),
                    server,
                    out["answered_per_s"].as_f64().unwrap_or(f64::NAN),
                    out["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    out["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    out["lost"].as_u64().unwrap_or(0),
                );
                results.entry((case, server)).or_default().push(out);
            }
        }
    }
    drop(ns);

    let mut t = Table::new(
        format!(
            "DHCP over a veth pair, load generator (dhcproto) in the other namespace (median of {} rounds)",
            plan.rounds
        ),
        &["case", "server", "offered", "answered/s", "vs dnsmasq", "latency p50", "latency p99", "lost", "server CPU"],
    );
    let get = |v: &[Value], k: &str| v.iter().map(|x| x[k].as_f64().unwrap_or(f64::NAN)).collect::<Vec<f64>>();
    let mut rows = Vec::new();
    for case in [Case::ProxyRate, Case::ProxyMax, Case::Dora] {
        let reference = median(&get(&results[&(case, "dnsmasq")], "answered_per_s"));
        for server in ["ours", "dnsmasq"] {
            let v = &results[&(case, server)];
            let rate = median(&get(v, "answered_per_s"));
            let lost: u64 = v.iter().map(|x| x["lost"].as_u64().unwrap_or(0)).sum();
            let drops = |k: &str| v.iter().map(|x| x[k].as_i64().unwrap_or(0)).sum::<i64>();
            let (drops_server, drops_client) = (drops("udp_drops_server_ns"), drops("udp_drops_client_ns"));
            let sent: u64 = v.iter().map(|x| x["sent"].as_u64().unwrap_or(0)).sum();
            let (label, offered) = match case {
                Case::ProxyRate => ("proxy DISCOVER->OFFER, fixed rate", format!("{}/s", plan.dhcp_rate)),
                Case::ProxyMax => ("proxy DISCOVER->OFFER, closed loop", format!("{PROXY_MAX_INFLIGHT} in flight")),
                Case::Dora => ("server, full DORA", format!("{DORA_INFLIGHT} in flight")),
            };
            t.row(vec![
                label.to_string(),
                server.to_string(),
                offered,
                num(rate),
                ratio(rate / reference),
                format!("{} ms", num(median(&get(v, "p50_ms")))),
                format!("{} ms", num(median(&get(v, "p99_ms")))),
                if drops_server + drops_client > 0 {
                    format!("{lost} of {sent} (socket drops: server {drops_server}, generator {drops_client})")
                } else {
                    format!("{lost} of {sent}")
                },
                format!("{} us/answer", num(median(&get(v, "server_cpu_us_per_answer")))),
            ]);
            rows.push(json!({ "case": case.name(), "server": server, "runs": v }));
        }
    }
    t.notes.push(
        "Latency: from the request leaving the generator to the reply's arrival (DORA: DISCOVER to ACK), both \
         servers through the same veth path. dnsmasq runs with --no-ping in server mode, as ours never pings. \
         Both servers log every exchange (ours at info to a file, dnsmasq to its log file). \"lost\": requests \
         without a reply within 1 s (closed loop) or by the end of the run (fixed rate); socket drops are UDP \
         receive-buffer overflows (RcvbufErrors) in the server's and the generator's namespace. Server CPU: \
         user + system time of the server process (cpuacct cgroup) per answered exchange."
            .to_string(),
    );
    report.tables.push(t);
    report.sections.insert("dhcp".into(), json!({ "rows": rows }));
    let v = &results[&(Case::ProxyRate, "ours")];
    let p99 = median(&get(v, "p99_ms"));
    let lost: u64 = v.iter().map(|x| x["lost"].as_u64().unwrap_or(0)).sum();
    let achieved = median(&get(v, "sent_per_s"));
    report.target(
        format!("DHCP proxy p99 < 5 ms at {} DISCOVER/s", plan.dhcp_rate),
        Some(p99 < 5.0 && lost == 0 && achieved >= plan.dhcp_rate as f64 * 0.95),
        format!("p99 {p99:.3} ms, {lost} lost, sent at {achieved:.0}/s"),
    );
    Ok(())
}

/// UDP datagrams dropped for a full receive buffer in namespace `ns` so far (RcvbufErrors).
fn udp_drops(ns: &str) -> i64 {
    let Ok(out) = std::process::Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/snmp"]).output() else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The generator (runs inside the client namespace).

/// UDP port 68 on the client interface, broadcast allowed, blocking. std has no
/// SO_BINDTODEVICE; tokio's socket does, so the socket passes through tokio once.
fn client_socket(iface: &str) -> Result<UdpSocket> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let sock = rt.block_on(async {
        let s = tokio::net::UdpSocket::bind("0.0.0.0:68").await?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.into_std()
    })?;
    sock.set_nonblocking(false)?;
    Ok(sock)
}

pub const BROADCAST: (Ipv4Addr, u16) = (Ipv4Addr::BROADCAST, 67);

/// Waits until the server answers a DISCOVER (it may still be starting).
pub fn wait_for_server(sock: &UdpSocket, run: u8) -> Result<()> {
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0u32;
    while Instant::now() < deadline {
        let xid = 0xfff0_0000 | i;
        sock.send_to(&packets::discover(Firmware::BiosPxe, xid, packets::mac(run, 0xff_0000 | i)), BROADCAST)?;
        i += 1;
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if packets::reply_xid(&buf[..n]).is_some_and(|x| x & 0xfff0_0000 == 0xfff0_0000) {
                    // Let late answers to other probes arrive and drop them.
                    std::thread::sleep(Duration::from_millis(200));
                    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
                    while sock.recv_from(&mut buf).is_ok() {}
                    return Ok(());
                }
            }
        }
    }
    bail!("no DHCP answer within 20 s")
}

fn summary(latencies_ms: &[f64], sent: u64, elapsed: f64, extra: Value) -> Value {
    let mut v = json!({
        "sent": sent,
        "answered": latencies_ms.len(),
        "lost": sent.saturating_sub(latencies_ms.len() as u64),
        "elapsed_s": elapsed,
        "sent_per_s": sent as f64 / elapsed,
        "answered_per_s": latencies_ms.len() as f64 / elapsed,
        "p50_ms": percentile(latencies_ms, 50.0),
        "p99_ms": percentile(latencies_ms, 99.0),
        "max_ms": percentile(latencies_ms, 100.0),
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

pub fn generator(spec: &Value) -> Result<Value> {
    let iface = spec["iface"].as_str().context("iface")?;
    let run = spec["run"].as_u64().unwrap_or(0) as u8;
    let sock = client_socket(iface)?;
    wait_for_server(&sock, run)?;
    let secs = spec["secs"].as_f64().unwrap_or(1.0);
    match spec["mode"].as_str() {
        Some("proxy_rate") => fixed_rate(sock, run, spec["rate"].as_u64().unwrap_or(1000) as u32, secs),
        Some("proxy_max") => closed_loop(sock, run, spec["inflight"].as_u64().unwrap_or(32) as usize, secs, None),
        Some("dora") => closed_loop(
            sock,
            run,
            spec["inflight"].as_u64().unwrap_or(16) as usize,
            f64::INFINITY,
            Some(spec["count"].as_u64().unwrap_or(1000) as usize),
        ),
        other => bail!("unknown dhcp mode {other:?}"),
    }
}

/// Open loop: DISCOVERs at `rate` per second for `secs`, each with its own xid and MAC.
fn fixed_rate(sock: UdpSocket, run: u8, rate: u32, secs: f64) -> Result<Value> {
    let n = (f64::from(rate) * secs).round() as usize;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let got: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let rx = sock.try_clone()?;
    rx.set_read_timeout(Some(Duration::from_millis(20)))?;
    let receiver = {
        let (sent_at, got, stop) = (sent_at.clone(), got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, _)) = rx.recv_from(&mut buf) else { continue };
                let now = t0.elapsed().as_nanos() as u64;
                let Some(xid) = packets::reply_xid(&buf[..len]) else { continue };
                let i = xid as usize;
                if i < n && got[i].load(Ordering::Relaxed) == 0 {
                    let s = sent_at[i].load(Ordering::Relaxed);
                    got[i].store(now.saturating_sub(s).max(1), Ordering::Relaxed);
                }
            }
        })
    };
    let packets: Vec<Vec<u8>> =
        (0..n).map(|i| packets::discover(Firmware::BiosPxe, i as u32, packets::mac(run, i as u32))).collect();
    let interval = 1.0 / f64::from(rate);
    let start = Instant::now();
    for (i, p) in packets.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 * interval);
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        sent_at[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        sock.send_to(p, BROADCAST)?;
    }
    let send_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    let lat: Vec<f64> =
        got.iter().map(|g| g.load(Ordering::Relaxed)).filter(|&g| g > 0).map(|g| g as f64 / 1e6).collect();
    let mut v = summary(&lat, n as u64, send_secs, json!({}));
    // Answers per second of the offered rate (all of them, if none was lost).
    v["answered_per_s"] = json!(lat.len() as f64 / send_secs);
    Ok(v)
}

/// Closed loop: `inflight` workers, each with one exchange at a time. Without `dora_count`:
/// DISCOVER->OFFER for `secs`; with it: full DORA for that many clients.
fn closed_loop(sock: UdpSocket, run: u8, inflight: usize, secs: f64, dora_count: Option<usize>) -> Result<Value> {
    let sock = Arc::new(sock);
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..inflight {
        let (tx, rx) = mpsc::channel::<(Reply, Instant)>();
        senders.push(tx);
        receivers.push(rx);
    }
    let receiver = {
        let stop = stop.clone();
        let rx_sock = sock.try_clone()?;
        rx_sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, _)) = rx_sock.recv_from(&mut buf) else { continue };
                let at = Instant::now();
                let Some(r) = packets::parse(&buf[..len]) else { continue };
                // Probe xids (wait_for_server) are 0xfff0_0000 and up; exchanges count from 0.
                if r.xid < 0xfff0_0000 {
                    let _ = senders[r.xid as usize % inflight].send((r, at));
                }
            }
        })
    };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs.min(3600.0));
    let mut workers = Vec::new();
    for (w, rx) in receivers.into_iter().enumerate() {
        let sock = sock.clone();
        workers.push(std::thread::spawn(move || -> Result<(Vec<f64>, u64, u64)> {
            let mut lat = Vec::new();
            let (mut sent, mut failed) = (0u64, 0u64);
            let mut k = 0usize;
            loop {
                let idx = w + k * inflight;
                k += 1;
                match dora_count {
                    Some(c) if idx >= c => break,
                    None if Instant::now() >= deadline => break,
                    _ => {}
                }
                let xid = idx as u32;
                let mac = packets::mac(run, xid);
                sent += 1;
                let t = Instant::now();
                let Some(offer) =
                    exchange(&sock, &rx, &packets::discover(Firmware::BiosPxe, xid, mac), xid, packets::OFFER)?
                else {
                    failed += 1;
                    continue;
                };
                if dora_count.is_none() {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    continue;
                }
                let server = offer.server_id.unwrap_or(offer.siaddr);
                let req = packets::request(Firmware::BiosPxe, xid, mac, offer.yiaddr, server);
                match exchange(&sock, &rx, &req, xid, packets::ACK)? {
                    Some(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    None => failed += 1,
                }
            }
            Ok((lat, sent, failed))
        }));
    }
    let mut lat = Vec::new();
    let (mut sent, mut failed) = (0, 0);
    for w in workers {
        let (l, s, f) = w.join().map_err(|_| anyhow::anyhow!("generator worker panicked"))??;
        lat.extend(l);
        sent += s;
        failed += f;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    Ok(summary(&lat, sent, elapsed, json!({ "failed": failed, "inflight": inflight })))
}

/// Sends `packet` and waits for a reply of `kind` to `xid` (1 s, no retransmission: a
/// timeout counts as lost). A NAK ends the exchange as failed.
fn exchange(
    sock: &UdpSocket,
    rx: &mpsc::Receiver<(Reply, Instant)>,
    packet: &[u8],
    xid: u32,
    kind: u8,
) -> Result<Option<Reply>> {
    sock.send_to(packet, BROADCAST)?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((r, _)) if r.xid == xid && r.kind == kind => return Ok(Some(r)),
            Ok((r, _)) if r.xid == xid && r.kind == packets::NAK => return Ok(None),
            Ok(_) => continue,
            Err(_) => return Ok(None),
        }
    }
}
