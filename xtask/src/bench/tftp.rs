//! TFTP: one client downloading a big file at several block sizes (ours with windowsize 1, 4
//! and 16, and lockstep on the async engine; tftpd-hpa and dnsmasq, which have no RFC 7440,
//! lockstep), cross-checked with curl; then many concurrent clients of a smaller file (ours
//! and tftpd-hpa) with completion times, failures, retransmissions and the servers' memory.
//! With `--baseline-appliance`, another build of our daemon runs beside ours in every case
//! ("ours (baseline)"), so a change is measured before and after in one run.
//!
//! One runner ([`run_load`]) measures both parts (`one`, `many`): N concurrent downloads with
//! our client (`testkit::tftp_client::get`, with tsize as firmware sends it), each compared with
//! the file byte for byte, with the server's and the client's CPU time. This file has the
//! runner and the servers; the parts have their cases, tables and targets.

mod many;
mod one;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use testkit::tftp_client::{get, ClientOptions};

use super::ours::{self, Ours};
use super::peers::{self, Proc};
use super::report::{ratio, Report};
use super::Ctx;

pub use many::many;
pub use one::single;

const FILE: &str = "bench.bin";
const OURS: &str = "ours";
const BASELINE: &str = "ours (baseline)";
const TFTPD: &str = "tftpd-hpa";
/// How much slower than the baseline build still counts as "no slower": the spread of
/// repeated measurements of one binary on this shared machine.
const BASELINE_TOLERANCE: f64 = 1.03;

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    single(ctx, report)?;
    many(ctx, report)
}

/// Our builds under test: this one, and the baseline if given.
fn our_builds(ctx: &Ctx) -> Vec<(&'static str, PathBuf)> {
    let mut builds = vec![(OURS, ctx.appliance.clone())];
    builds.extend(ctx.baseline.clone().map(|b| (BASELINE, b)));
    builds
}

/// The baseline's row for one of this build's rows ("ours ws=4" -> "ours (baseline) ws=4").
fn baseline_of(label: &str) -> Option<String> {
    let rest = label.strip_prefix(OURS)?;
    (!label.starts_with(BASELINE)).then(|| format!("{BASELINE}{rest}"))
}

/// A server the bench started, stopped when dropped.
enum Live {
    Ours(Ours),
    Peer(Proc, SocketAddr),
}

impl Live {
    fn addr(&self) -> SocketAddr {
        match self {
            Live::Ours(o) => o.tftp,
            Live::Peer(_, a) => *a,
        }
    }

    fn proc(&self) -> &Proc {
        match self {
            Live::Ours(o) => &o.proc,
            Live::Peer(p, _) => p,
        }
    }
}

/// Starts our daemon `binary` serving `root` (`extra` after the bench's own arguments).
fn start_ours(ctx: &Ctx, binary: &Path, name: &str, root: &Path, config: &Path, extra: &[&str]) -> Result<Live> {
    Ok(Live::Ours(ours::start_loopback_binary(ctx, binary, name, config, Some(root), None, extra)?))
}

/// What one measurement asks of a server: `clients` concurrent downloads of the file.
#[derive(Debug, Clone, Copy)]
struct Load {
    clients: usize,
    blksize: u16,
    windowsize: u16,
}

/// What one measurement saw.
#[derive(Debug, Default)]
struct Batch {
    wall: f64,
    /// Seconds from the start to each successful download's end.
    completions: Vec<f64>,
    failures: usize,
    first_error: Option<String>,
    client_retransmits: u64,
    server_cpu: f64,
    client_cpu: f64,
}

impl Batch {
    fn record(&mut self, result: Result<(f64, u64), String>) {
        match result {
            Ok((t, retransmits)) => {
                self.completions.push(t);
                self.client_retransmits += retransmits;
            }
            Err(e) => {
                self.failures += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Runs `load` against `server` and measures it; `settle` is how long to wait before reading
/// the server's CPU time (a forking server's children may still be exiting).
///
/// One client runs on a current-thread runtime of its own, inline: on the shared multi-thread
/// runtime every datagram it waits for would be picked up by a worker thread and handed to this
/// one (two cross-thread wake-ups per lockstep round trip), which made the client, not the
/// server, the largest and noisiest part of each round trip. Many clients share the bench's
/// two-worker runtime.
fn run_load(ctx: &Ctx, server: &Live, load: Load, expected: &Arc<Vec<u8>>, settle: Duration) -> Result<Batch> {
    let (addr, expected) = (server.addr(), Arc::clone(expected));
    let cpu_before = server.proc().cpu_secs();
    let client_before = peers::self_cpu_secs();
    let mut batch = if load.clients == 1 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let start = Instant::now();
            let mut batch = Batch::default();
            batch.record(download(addr, load, &expected, start).await);
            batch.wall = start.elapsed().as_secs_f64();
            batch
        })
    } else {
        ctx.rt.block_on(async move {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..load.clients {
                let expected = Arc::clone(&expected);
                set.spawn(async move { download(addr, load, &expected, start).await });
            }
            let mut batch = Batch::default();
            while let Some(joined) = set.join_next().await {
                batch.record(joined.unwrap_or_else(|e| Err(e.to_string())));
            }
            batch.wall = start.elapsed().as_secs_f64();
            batch
        })
    };
    batch.client_cpu = peers::self_cpu_secs() - client_before;
    std::thread::sleep(settle);
    batch.server_cpu = server.proc().cpu_secs() - cpu_before;
    Ok(batch)
}

/// One download, checked byte for byte: (seconds since `start`, client retransmissions).
async fn download(addr: SocketAddr, load: Load, expected: &[u8], start: Instant) -> Result<(f64, u64), String> {
    let opts = ClientOptions {
        blksize: Some(load.blksize),
        windowsize: (load.windowsize > 1).then_some(load.windowsize),
        tsize: true,
        retry_timeout: Duration::from_secs(1),
        max_retries: 5,
        ..Default::default()
    };
    let dl = get(addr, FILE, &opts).await.map_err(|e| e.to_string())?;
    let t = start.elapsed().as_secs_f64();
    if dl.data != expected {
        return Err(format!("content differs ({} bytes, expected {})", dl.data.len(), expected.len()));
    }
    Ok((t, dl.stats.retransmits))
}

/// `items` in the order round `round` measures them: every odd round runs the round before it
/// backwards, so that of any two items each runs first as often as the other (in every two
/// rounds); every two rounds the order starts one further on, so that nothing always runs
/// first or last.
fn round_order<T>(items: &[T], round: usize) -> Vec<&T> {
    let start = (round / 2) % items.len().max(1);
    let mut order: Vec<&T> = items.iter().cycle().skip(start).take(items.len()).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Adds the target "this build no slower than the baseline" from `(case, ours, baseline)`
/// ratios.
fn baseline_target(report: &mut Report, name: String, ratios: &[(String, f64)]) {
    let met = ratios.iter().all(|(_, r)| *r <= BASELINE_TOLERANCE);
    let detail = ratios.iter().map(|(case, r)| format!("{case}: {}", ratio(*r))).collect::<Vec<_>>().join(", ");
    report.target(name, Some(met), format!("{detail} of the baseline's time"));
}

/// A config dir with tiny artifacts (TFTP benches serve from `--tftp-root`).
fn small_config(ctx: &Ctx, name: &str) -> Result<PathBuf> {
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

fn start_tftpd(ctx: &Ctx, root: &Path) -> Result<Live> {
    let port = peers::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = ctx.peers.command(&ctx.peers.tftpd);
    // -L: standalone, foreground; -u root: do not drop to `nobody` (the files are ours);
    // -s: chroot into the root, as deployed.
    cmd.args(["-L", "-a", &addr.to_string(), "-u", "root", "-s"]).arg(root);
    let mut p = Proc::start(TFTPD, cmd, &ctx.work.join("tftpd-hpa.log"))?;
    peers::wait_ready(&mut p, Duration::from_secs(10), || tftp_probe(addr))?;
    Ok(Live::Peer(p, addr))
}

/// dnsmasq's TFTP server only listens on port 69, so it gets 127.0.0.2:69 to itself.
fn start_dnsmasq_tftp(ctx: &Ctx, root: &Path) -> Result<Live> {
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
    Ok(Live::Peer(p, addr))
}

fn tftp_root(ctx: &Ctx, size: u64) -> Result<PathBuf> {
    let root = ctx.scratch("tftproot")?;
    let data = ours::data_file(ctx, "tftp", size)?;
    ours::link_or_copy(&data, &root.join(FILE))?;
    std::fs::write(root.join("ready.txt"), b"ready\n")?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_and_alternate_direction() {
        let items = ["a", "b", "c"];
        let orders: Vec<String> =
            (0..6).map(|r| round_order(&items, r).into_iter().copied().collect::<Vec<_>>().join("")).collect();
        assert_eq!(orders, ["abc", "cba", "bca", "acb", "cab", "bac"]);
        assert!(round_order::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn each_row_of_ours_has_a_baseline_row() {
        assert_eq!(baseline_of("ours ws=4").as_deref(), Some("ours (baseline) ws=4"));
        assert_eq!(baseline_of("ours").as_deref(), Some("ours (baseline)"));
        assert_eq!(baseline_of("ours (baseline) ws=4"), None);
        assert_eq!(baseline_of("tftpd-hpa"), None);
    }
}
