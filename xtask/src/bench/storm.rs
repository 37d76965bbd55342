//! Boot storm: many simulated machines booting at once against our daemon (server mode, in
//! the server namespace), each doing what a BIOS machine chaining iPXE does: DHCP as the PXE
//! ROM (DORA, told undionly.kpxe), TFTP of undionly.kpxe, DHCP again as iPXE (DORA, told the
//! script URL), HTTP GET of the entry script, of its per-machine script (the `chain` URL with
//! iPXE's variables filled in), then of the kernel and initrd the script names. All must
//! finish; we report completion times and the daemon's peak RSS, and a second storm with
//! bigger files shows whether peak RSS follows file size (it must not).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use testkit::netns::Pair;
use testkit::tftp_client::{get, ClientOptions};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Barrier};

use super::dhcp::BROADCAST;
use super::httpc::Conn;
use super::netns::{self, CLIENT_IF, SERVER_IP};
use super::ours;
use super::packets::{self, Firmware, Reply};
use super::peers::{self, MemSampler};
use super::report::{median, mib, num, percentile, Report, Table};
use super::Ctx;

struct Storm {
    label: String,
    /// Every machine waits for all others before downloading kernel and initrd.
    sync: bool,
    kernel: u64,
    initrd: u64,
    out: Value,
    hwm_kib: u64,
    idle_kib: u64,
    pss_kib: u64,
    cpu_secs: f64,
}

fn one_storm(ctx: &Ctx, ns: &Pair, n: usize, kernel: u64, initrd: u64, sync: bool) -> Result<Storm> {
    let plan = &ctx.plan;
    let config = ctx.scratch(&format!("storm-config-{n}"))?;
    let k = ours::data_file(ctx, "storm-kernel", kernel)?;
    let i = ours::data_file(ctx, "storm-initrd", initrd)?;
    ours::write_config(&config, &k, &i)?;
    let boot = ours::bootloaders(ctx)?;
    let ours = ours::start_in_ns(ctx, &format!("storm-ours-{n}"), ns.server.name(), &config, "server", Some(&boot))?;
    let pid = ours.proc.pid();
    let idle_kib = peers::vm_hwm_kib(pid).unwrap_or(0);
    let cpu_before = ours.proc.cpu_secs();
    let sampler = MemSampler::start(pid, Duration::from_millis(100));
    let spec = json!({
        "role": "storm", "iface": CLIENT_IF, "clients": plan.storm_clients, "run": (200 + n) as u8,
        "kernel": kernel, "initrd": initrd, "sync": sync,
        "undionly": std::fs::metadata(boot.join("undionly.kpxe"))?.len(),
    });
    let out = super::run_internal(
        ns.client.name(),
        &spec,
        &ctx.work.join(format!("storm-gen-{n}.log")),
        Duration::from_secs(600),
    );
    let mem = sampler.stop();
    let hwm_kib = peers::vm_hwm_kib(pid).unwrap_or(0);
    let cpu_secs = ours.proc.cpu_secs() - cpu_before;
    drop(ours);
    let out = out?;
    Ok(Storm {
        label: format!(
            "{} MB kernel + {} MB initrd{}",
            kernel / 1_000_000,
            initrd / 1_000_000,
            if sync { ", downloads synchronized" } else { "" }
        ),
        sync,
        kernel,
        initrd,
        out,
        hwm_kib,
        idle_kib,
        pss_kib: mem.pss_kib,
        cpu_secs,
    })
}

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let ns = netns::create().context("creating the network namespaces")?;
    eprintln!(
        "bench: storm: {} clients (DHCP -> TFTP undionly.kpxe -> DHCP -> HTTP scripts -> kernel + initrd), {} round(s)",
        plan.storm_clients, plan.rounds
    );
    let mut storms = Vec::new();
    let mut n = 0;
    // The storms as they come, for times; then two with every machine's downloads started
    // together (same concurrency) at two file sizes, for whether peak RSS follows file size.
    let mut sizes = vec![(plan.storm_kernel, plan.storm_initrd, false); plan.rounds];
    if let Some(k) = plan.storm_scale {
        sizes.push((plan.storm_kernel, plan.storm_initrd, true));
        sizes.push((plan.storm_kernel * k, plan.storm_initrd * k, true));
    }
    for (kernel, initrd, sync) in sizes {
        n += 1;
        let s = one_storm(ctx, &ns, n, kernel, initrd, sync)?;
        eprintln!(
            "bench: storm {n}: {}: wall {:.2} s, p50 {:.2} s, p99 {:.2} s, {} failed, {} parallel downloads, \
             peak RSS {} (idle {})",
            s.label,
            s.out["wall_s"].as_f64().unwrap_or(f64::NAN),
            s.out["total_p50_s"].as_f64().unwrap_or(f64::NAN),
            s.out["total_p99_s"].as_f64().unwrap_or(f64::NAN),
            s.out["failed"].as_u64().unwrap_or(0),
            s.out["peak_downloads"].as_u64().unwrap_or(0),
            mib(s.hwm_kib),
            mib(s.idle_kib),
        );
        storms.push(s);
    }
    drop(ns);

    let mut t = Table::new(
        format!(
            "Boot storm: {} machines at once against our daemon (veth pair; one row per storm)",
            plan.storm_clients
        ),
        &[
            "files",
            "wall",
            "per machine p50 / p99",
            "DHCP+DHCP p50",
            "TFTP p50",
            "HTTP scripts p50",
            "HTTP kernel+initrd p50",
            "failed",
            "aggregate",
            "server CPU",
            "peak parallel downloads",
            "peak RSS (idle)",
        ],
    );
    let f = |s: &Storm, k: &str| s.out[k].as_f64().unwrap_or(f64::NAN);
    for s in &storms {
        let bytes = (s.kernel + s.initrd) as f64 * plan.storm_clients as f64;
        t.row(vec![
            s.label.clone(),
            format!("{} s", num(f(s, "wall_s"))),
            format!("{} / {} s", num(f(s, "total_p50_s")), num(f(s, "total_p99_s"))),
            format!("{} ms", num(f(s, "dhcp_p50_ms"))),
            format!("{} ms", num(f(s, "tftp_p50_ms"))),
            format!("{} ms", num(f(s, "scripts_p50_ms"))),
            format!("{} s", num(f(s, "files_p50_ms") / 1000.0)),
            s.out["failed"].as_u64().unwrap_or(0).to_string(),
            format!("{} MB/s", num(bytes / 1e6 / f(s, "wall_s"))),
            format!("{} s", num(s.cpu_secs)),
            s.out["peak_downloads"].as_u64().unwrap_or(0).to_string(),
            format!("{} ({})", mib(s.hwm_kib), mib(s.idle_kib)),
        ]);
    }
    t.notes.push(
        "Each machine: DORA as a BIOS PXE ROM, TFTP undionly.kpxe (blksize 1468), DORA as iPXE, GET /boot.ipxe, \
         GET the /ipxe/script URL it chains to, GET kernel and initrd on one keep-alive connection. Peak RSS is \
         the daemon's VmHWM (a fresh process per storm); idle is its VmHWM just after start. \
         \"downloads synchronized\": every machine waits for all the others before its kernel download, so \
         two storms with different file sizes have the same number of downloads in flight."
            .to_string(),
    );
    report.tables.push(t);
    let failed: u64 = storms.iter().map(|s| s.out["failed"].as_u64().unwrap_or(0)).sum();
    let base: Vec<&Storm> = storms.iter().filter(|s| !s.sync).collect();
    let walls: Vec<f64> = base.iter().map(|s| f(s, "wall_s")).collect();
    report.target(
        format!("Boot storm, {} machines: all finish", plan.storm_clients),
        Some(failed == 0),
        format!(
            "{failed} failed over {} storms; median wall {} s, p99 per machine {} s",
            storms.len(),
            num(median(&walls)),
            num(median(&base.iter().map(|s| f(s, "total_p99_s")).collect::<Vec<_>>()))
        ),
    );
    let base_hwm = base.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    let small = storms.iter().find(|s| s.sync && s.kernel == plan.storm_kernel);
    let big = storms.iter().find(|s| s.sync && s.kernel != plan.storm_kernel);
    match (small, big) {
        (Some(a), Some(b)) => {
            // Bounded: at the same concurrency, bigger files may not cost more than noise.
            let limit = a.hwm_kib + (a.hwm_kib / 4).max(8 * 1024);
            report.target(
                "Boot storm: peak RSS bounded (does not grow with file size)",
                Some(b.hwm_kib <= limit),
                format!(
                    "{} with files {:.0}x bigger vs {}, both with {} / {} downloads in flight at once \
                     (unsynchronized storms: up to {})",
                    mib(b.hwm_kib),
                    (b.kernel + b.initrd) as f64 / (a.kernel + a.initrd) as f64,
                    mib(a.hwm_kib),
                    b.out["peak_downloads"].as_u64().unwrap_or(0),
                    a.out["peak_downloads"].as_u64().unwrap_or(0),
                    mib(base_hwm),
                ),
            );
        }
        _ => report.target(
            "Boot storm: peak RSS bounded (does not grow with file size)",
            None,
            format!("peak RSS {} (no synchronized storms in this run)", mib(base_hwm)),
        ),
    }
    report.sections.insert(
        "storm".into(),
        json!({
            "clients": plan.storm_clients,
            "storms": storms.iter().map(|s| json!({
                "kernel_bytes": s.kernel, "initrd_bytes": s.initrd, "synchronized": s.sync, "vm_hwm_kib": s.hwm_kib,
                "idle_vm_hwm_kib": s.idle_kib, "peak_pss_kib": s.pss_kib, "server_cpu_s": s.cpu_secs,
                "clients": s.out,
            })).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The clients (run inside the client namespace).

/// One socket on port 68 for every simulated machine; replies are routed by xid.
struct Hub {
    sock: Arc<UdpSocket>,
    waiters: Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>,
}

impl Hub {
    async fn new(iface: &str) -> Result<Arc<Hub>> {
        let s = UdpSocket::bind("0.0.0.0:68").await?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        let hub = Arc::new(Hub { sock: Arc::new(s), waiters: Mutex::new(HashMap::new()) });
        let h = hub.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, _)) = h.sock.recv_from(&mut buf).await else { continue };
                let Some(r) = packets::parse(&buf[..n]) else { continue };
                let tx = h.waiters.lock().ok().and_then(|w| w.get(&r.xid).cloned());
                if let Some(tx) = tx {
                    let _ = tx.send(r);
                }
            }
        });
        Ok(hub)
    }

    /// Sends `packet` until a reply of `kind` to `xid` comes (1, 1, 2, 4 s, like firmware
    /// backing off). A NAK is an error.
    async fn exchange(&self, packet: &[u8], xid: u32, kind: u8) -> Result<Reply> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.waiters.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(xid, tx);
        let result = async {
            for wait in [1u64, 1, 2, 4] {
                self.sock.send_to(packet, BROADCAST).await?;
                let until = tokio::time::Instant::now() + Duration::from_secs(wait);
                loop {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(r)) if r.kind == kind => return Ok(r),
                        Ok(Some(r)) if r.kind == packets::NAK => bail!("NAK"),
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            bail!("no reply of type {kind} after 4 tries")
        }
        .await;
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&xid);
        }
        result
    }

    /// DISCOVER, OFFER, REQUEST, ACK; returns the ACK.
    async fn dora(&self, fw: Firmware, xid: u32, mac: [u8; 6]) -> Result<Reply> {
        let offer = self.exchange(&packets::discover(fw, xid, mac), xid, packets::OFFER).await.context("DISCOVER")?;
        let server = offer.server_id.unwrap_or(offer.siaddr);
        let req = packets::request(fw, xid, mac, offer.yiaddr, server);
        self.exchange(&req, xid, packets::ACK).await.context("REQUEST")
    }
}

fn split_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").with_context(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr =
        if host.contains(':') { host.parse()? } else { SocketAddr::new(host.parse::<Ipv4Addr>()?.into(), 80) };
    Ok((addr, if path.is_empty() { "/".to_string() } else { path.to_string() }))
}

#[derive(Default)]
struct Phases {
    dhcp: f64,
    tftp: f64,
    scripts: f64,
    files: f64,
    total: f64,
}

/// In-flight kernel+initrd downloads: (now, peak).
type Streams = Arc<(AtomicUsize, AtomicUsize)>;

async fn boot_one(
    hub: Arc<Hub>,
    run: u8,
    i: u32,
    spec: Arc<Value>,
    start: Instant,
    barrier: Option<Arc<Barrier>>,
    streams: Streams,
) -> Result<Phases> {
    let pre = until_script(&hub, run, i, &spec).await;
    if let Some(b) = barrier {
        // Also when this machine failed: the others must not wait for it forever.
        b.wait().await;
    }
    let (mut p, mut conn, addr, script) = pre?;
    let now = streams.0.fetch_add(1, Ordering::Relaxed) + 1;
    streams.1.fetch_max(now, Ordering::Relaxed);
    let files = fetch_files(&mut conn, addr, &script, &spec).await;
    streams.0.fetch_sub(1, Ordering::Relaxed);
    p.files = files?;
    p.total = start.elapsed().as_secs_f64();
    Ok(p)
}

/// Steps 1 to 4: DHCP, TFTP, DHCP, the scripts. Returns the phases so far, the connection,
/// its server and the per-machine script.
async fn until_script(hub: &Hub, run: u8, i: u32, spec: &Value) -> Result<(Phases, Conn, SocketAddr, String)> {
    let mac = packets::mac(run, i);
    let hyphen = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("-");
    let mut p = Phases::default();
    // 1. The PXE ROM.
    let t = Instant::now();
    let ack = hub.dora(Firmware::BiosPxe, i * 4, mac).await.context("PXE ROM DHCP")?;
    if ack.file != "undionly.kpxe" {
        bail!("PXE ROM was told {:?}, expected undionly.kpxe", ack.file);
    }
    p.dhcp += t.elapsed().as_secs_f64();
    // 2. TFTP the boot file from next-server.
    let t = Instant::now();
    let next = if ack.siaddr.is_unspecified() { SERVER_IP } else { ack.siaddr };
    let opts = ClientOptions { blksize: Some(1468), tsize: true, ..Default::default() };
    let dl = get((next, 69).into(), &ack.file, &opts).await.map_err(|e| anyhow::anyhow!("TFTP {}: {e}", ack.file))?;
    if dl.data.len() as u64 != spec["undionly"].as_u64().unwrap_or(0) {
        bail!("TFTP {} gave {} bytes", ack.file, dl.data.len());
    }
    p.tftp = t.elapsed().as_secs_f64();
    // 3. iPXE's own DHCP.
    let t = Instant::now();
    let ack = hub.dora(Firmware::Ipxe, i * 4 + 1, mac).await.context("iPXE DHCP")?;
    p.dhcp += t.elapsed().as_secs_f64();
    // 4. The entry script, then the per-machine script it chains to.
    let t = Instant::now();
    let (addr, path) = split_url(&ack.file)?;
    let mut conn = Conn::connect(addr).await?;
    let entry = String::from_utf8_lossy(&conn.get_body(&path).await?).into_owned();
    let chain = entry
        .lines()
        .find_map(|l| l.trim().strip_prefix("chain --autofree "))
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("no chain line in the entry script:\n{entry}"))?
        .replace("${net0/mac:hexhyp}", &hyphen)
        .replace("${buildarch}", "i386")
        .replace("${platform}", "pcbios");
    let (addr2, path2) = split_url(&chain)?;
    if addr2 != addr {
        conn = Conn::connect(addr2).await?;
    }
    let script = String::from_utf8_lossy(&conn.get_body(&path2).await?).into_owned();
    p.scripts = t.elapsed().as_secs_f64();
    Ok((p, conn, addr2, script))
}

/// Step 5: kernel and initrd on the script's connection. Returns the time it took.
async fn fetch_files(conn: &mut Conn, addr2: SocketAddr, script: &str, spec: &Value) -> Result<f64> {
    let t = Instant::now();
    let urls: Vec<String> = script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_string))
        .collect();
    if urls.len() != 2 {
        bail!("expected a kernel and an initrd in the script:\n{script}");
    }
    for (url, want) in urls.iter().zip([spec["kernel"].as_u64(), spec["initrd"].as_u64()]) {
        let (a, path) = split_url(url)?;
        if a != addr2 {
            *conn = Conn::connect(a).await?;
        }
        let (status, len) = conn.get(&path, |_| {}).await?;
        if status != 200 || Some(len) != want {
            bail!("GET {url}: status {status}, {len} bytes, expected {want:?}");
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn clients(spec: &Value) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let spec = Arc::new(spec.clone());
    rt.block_on(async move {
        let iface = spec["iface"].as_str().context("iface")?.to_string();
        let n = spec["clients"].as_u64().unwrap_or(10) as u32;
        let run = spec["run"].as_u64().unwrap_or(0) as u8;
        let hub = Hub::new(&iface).await?;
        // Wait for the daemon to answer at all.
        let probe_mac = packets::mac(run, 0xff_ffff);
        let ready = tokio::time::timeout(
            Duration::from_secs(20),
            hub.exchange(&packets::discover(Firmware::BiosPxe, 0xfff0_0000, probe_mac), 0xfff0_0000, packets::OFFER),
        )
        .await;
        if !matches!(ready, Ok(Ok(_))) {
            bail!("the daemon does not answer DHCP");
        }
        let barrier = spec["sync"].as_bool().unwrap_or(false).then(|| Arc::new(Barrier::new(n as usize)));
        let streams: Streams = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            set.spawn(boot_one(hub.clone(), run, i, spec.clone(), start, barrier.clone(), streams.clone()));
        }
        let mut done = Vec::new();
        let mut errors = Vec::new();
        while let Some(j) = set.join_next().await {
            match j {
                Ok(Ok(p)) => done.push(p),
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let col = |f: fn(&Phases) -> f64| done.iter().map(f).collect::<Vec<f64>>();
        let total = col(|p| p.total);
        errors.truncate(10);
        Ok(json!({
            "clients": n,
            "completed": done.len(),
            "peak_downloads": streams.1.load(Ordering::Relaxed),
            "failed": n as usize - done.len(),
            "errors": errors,
            "wall_s": wall,
            "total_p50_s": percentile(&total, 50.0),
            "total_p99_s": percentile(&total, 99.0),
            "total_max_s": percentile(&total, 100.0),
            "dhcp_p50_ms": percentile(&col(|p| p.dhcp), 50.0) * 1000.0,
            "dhcp_p99_ms": percentile(&col(|p| p.dhcp), 99.0) * 1000.0,
            "tftp_p50_ms": percentile(&col(|p| p.tftp), 50.0) * 1000.0,
            "tftp_p99_ms": percentile(&col(|p| p.tftp), 99.0) * 1000.0,
            "scripts_p50_ms": percentile(&col(|p| p.scripts), 50.0) * 1000.0,
            "scripts_p99_ms": percentile(&col(|p| p.scripts), 99.0) * 1000.0,
            "files_p50_ms": percentile(&col(|p| p.files), 50.0) * 1000.0,
            "files_p99_ms": percentile(&col(|p| p.files), 99.0) * 1000.0,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        let (a, p) = split_url("http://10.213.0.1:8080/ipxe/script?mac=02-be").unwrap();
        assert_eq!((a, p.as_str()), ("10.213.0.1:8080".parse().unwrap(), "/ipxe/script?mac=02-be"));
        let (a, p) = split_url("http://10.213.0.1").unwrap();
        assert_eq!((a, p.as_str()), ("10.213.0.1:80".parse().unwrap(), "/"));
        assert!(split_url("tftp://10.213.0.1/x").is_err());
    }
}
