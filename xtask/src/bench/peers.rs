//! The peers (tftpd-hpa, dnsmasq, nginx) from their Debian packages, processes started and
//! stopped by PID, and what we read from /proc: memory of a process tree, the load average.
//! The CPU accounting groups are `cgroups`.
//!
//! Packages are fetched with `apt-get download` (not installed: installing tftpd-hpa or nginx
//! would start system services) and unpacked with `dpkg-deb -x` into `target/bench/peers/root`;
//! the binaries run from there, with the unpacked library directories on LD_LIBRARY_PATH
//! (tftpd-hpa needs libwrap0). A binary already unpacked is reused.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::procs;

use super::cgroups::CpuGroup;
pub use super::cgroups::{cleanup_stale_cgroups, BenchGroup, OtherLoad, OtherMeter};

/// The unpacked peers.
pub struct Peers {
    pub root: PathBuf,
    pub tftpd: PathBuf,
    pub dnsmasq: PathBuf,
    pub nginx: PathBuf,
    /// Package name -> version, for the report.
    pub versions: BTreeMap<String, String>,
}

/// One peer: the packages to unpack (first one must provide `binary`) and alternatives for
/// the main package on other Debian releases.
struct Wanted {
    binary: &'static str,
    packages: &'static [&'static [&'static str]],
}

const TFTPD: Wanted = Wanted { binary: "usr/sbin/in.tftpd", packages: &[&["tftpd-hpa", "libwrap0"]] };
const DNSMASQ: Wanted = Wanted { binary: "usr/sbin/dnsmasq", packages: &[&["dnsmasq-base"]] };
// bookworm's `nginx` carries the binary (`nginx-light` is a transitional package there);
// bullseye's carried it in nginx-light / nginx-core.
const NGINX: Wanted = Wanted { binary: "usr/sbin/nginx", packages: &[&["nginx"], &["nginx-light"], &["nginx-core"]] };

impl Peers {
    /// Makes sure every peer is unpacked under `dir`, downloading what is missing.
    pub fn ensure(dir: &Path) -> Result<Peers> {
        let root = dir.join("root");
        let debs = dir.join("debs");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&debs)?;
        let mut versions = BTreeMap::new();
        for w in [&TFTPD, &DNSMASQ, &NGINX] {
            if !root.join(w.binary).is_file() {
                let mut errors = Vec::new();
                for set in w.packages {
                    match set.iter().try_for_each(|p| fetch_and_unpack(p, &debs, &root)) {
                        Ok(()) if root.join(w.binary).is_file() => break,
                        Ok(()) => errors.push(format!("{} has no /{}", set[0], w.binary)),
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                if !root.join(w.binary).is_file() {
                    bail!("cannot set up /{}: {}", w.binary, errors.join("; "));
                }
            }
            check_libs(&root, &root.join(w.binary), w.packages[0][0])?;
        }
        for entry in fs::read_dir(&debs)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".deb") {
                let mut parts = stem.splitn(3, '_');
                if let (Some(pkg), Some(ver)) = (parts.next(), parts.next()) {
                    versions.insert(pkg.to_string(), ver.replace("%3a", ":"));
                }
            }
        }
        Ok(Peers {
            tftpd: root.join(TFTPD.binary),
            dnsmasq: root.join(DNSMASQ.binary),
            nginx: root.join(NGINX.binary),
            root,
            versions,
        })
    }

    /// LD_LIBRARY_PATH for the unpacked binaries.
    pub fn library_path(&self) -> String {
        library_path(&self.root)
    }

    pub fn command(&self, binary: &Path) -> Command {
        let mut c = Command::new(binary);
        c.env("LD_LIBRARY_PATH", self.library_path());
        c
    }
}

fn fetch_and_unpack(package: &str, debs: &Path, root: &Path) -> Result<()> {
    let existing = find_deb(debs, package)?;
    let deb = match existing {
        Some(d) => d,
        None => {
            eprintln!("bench: apt-get download {package}");
            let out = Command::new("apt-get")
                .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
                .current_dir(debs)
                .output()
                .with_context(|| format!("running apt-get download {package}"))?;
            if !out.status.success() {
                bail!(
                    "`apt-get download {package}` failed ({}): {} (is the Debian package {package} in the apt \
                     sources? try `apt-get update`)",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            find_deb(debs, package)?.with_context(|| format!("apt-get download {package} left no .deb"))?
        }
    };
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root)
        .output()
        .with_context(|| format!("running dpkg-deb -x {}", deb.display()))?;
    if !out.status.success() {
        bail!("dpkg-deb -x {} failed: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn find_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(debs)? {
        let p = entry?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The library directories of an unpacked tree, for LD_LIBRARY_PATH.
fn library_path(root: &Path) -> String {
    ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib", "lib"]
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Fails, naming the package, when the unpacked binary misses a shared library.
fn check_libs(root: &Path, binary: &Path, package: &str) -> Result<()> {
    let out =
        Command::new("ldd").arg(binary).env("LD_LIBRARY_PATH", library_path(root)).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> =
        text.lines().filter(|l| l.contains("not found")).map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    if !missing.is_empty() {
        bail!(
            "{} (from the Debian package {package}) needs {} which neither the host nor the unpacked packages have; \
             install the package providing it",
            binary.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// A process we started, with its CPU group; stopped (SIGTERM, then SIGKILL after 5 s) by its
/// PID and reaped on drop (`testkit::procs::Proc`).
pub struct Proc {
    pub name: String,
    child: Option<procs::Proc>,
    pub log: PathBuf,
    cgroup: Option<CpuGroup>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log` (emptied first).
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let cgroup = CpuGroup::create();
        if let Some(g) = &cgroup {
            cmd = g.wrap(&cmd);
        }
        let mut child = procs::Proc::spawn(name, &mut cmd, log)?;
        child.grace = Duration::from_secs(5);
        Ok(Proc { name: name.to_string(), child: Some(child), log: log.to_path_buf(), cgroup })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, procs::Proc::pid)
    }

    /// CPU seconds used so far by the process and everything it forked (its cgroup), else
    /// (no cgroup) by the process tree as /proc shows it.
    pub fn cpu_secs(&self) -> f64 {
        self.cgroup.as_ref().and_then(CpuGroup::usage_secs).unwrap_or_else(|| tree_cpu_secs(self.pid()))
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().and_then(procs::Proc::exited) {
            self.child = None;
            bail!("{} exited ({status}); log {}:\n{}", self.name, self.log.display(), self.log_tail(20));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _cgroup = self.cgroup.take(); // removed once the process is gone
        child.stop();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `ready()` or the process dies or `timeout` passes.
pub fn wait_ready(proc: &mut Proc, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after {:?}; log {}:\n{}", proc.name, timeout, proc.log.display(), proc.log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP (and, separately checked, UDP) port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

// ---------------------------------------------------------------------------------------------
// /proc

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size (VmHWM) of one process, KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_field_kib(pid, "VmRSS:")
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on Linux).
pub(super) const USER_HZ: f64 = 100.0;

/// (own user+system, reaped children's user+system) CPU ticks of one process.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|s| s.parse().ok()).collect();
    (f.len() == 4).then(|| (f[0] + f[1], f[2] + f[3]))
}

/// CPU seconds used so far by `pid`, its reaped children and its live (or zombie)
/// descendants: a forking server's transfers are counted whether or not they were reaped.
pub fn tree_cpu_secs(pid: u32) -> f64 {
    let tree = process_tree(pid);
    let mut ticks = 0;
    for (i, p) in tree.iter().enumerate() {
        if let Some((own, children)) = cpu_ticks(*p) {
            // Reaped children of descendants are not in the tree; of the root, they are in `children`.
            ticks += own + if i == 0 { children } else { 0 };
        }
    }
    ticks as f64 / USER_HZ
}

/// CPU seconds used so far by this process (the load generators running in it).
pub fn self_cpu_secs() -> f64 {
    cpu_ticks(std::process::id()).map_or(0.0, |(own, _)| own as f64 / USER_HZ)
}

/// `pid` and all its descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            // The command name is in parentheses and may contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Samples the memory of a process tree every `every` until stopped: peak sum of PSS (shared
/// pages split between the processes sharing them, so a forking server is not over-counted)
/// and peak sum of RSS, plus the peak process count.
pub struct MemSampler {
    stop: Arc<AtomicBool>,
    peak_pss: Arc<AtomicU64>,
    peak_rss: Arc<AtomicU64>,
    peak_procs: Arc<AtomicU64>,
    peak_threads: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MemPeak {
    pub pss_kib: u64,
    pub rss_kib: u64,
    pub processes: u64,
    pub threads: u64,
}

impl MemSampler {
    pub fn start(pid: u32, every: Duration) -> MemSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_pss = Arc::new(AtomicU64::new(0));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_procs = Arc::new(AtomicU64::new(0));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let (s, pp, pr, pn, pt) =
            (stop.clone(), peak_pss.clone(), peak_rss.clone(), peak_procs.clone(), peak_threads.clone());
        let handle = std::thread::spawn(move || loop {
            let tree = process_tree(pid);
            let pss: u64 = tree.iter().filter_map(|p| pss_kib(*p)).sum();
            let rss: u64 = tree.iter().filter_map(|p| rss_kib(*p)).sum();
            pp.fetch_max(pss, Ordering::Relaxed);
            pr.fetch_max(rss, Ordering::Relaxed);
            pn.fetch_max(tree.len() as u64, Ordering::Relaxed);
            let threads: u64 = tree.iter().filter_map(|p| status_field_kib(*p, "Threads:")).sum();
            pt.fetch_max(threads, Ordering::Relaxed);
            if s.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(every);
        });
        MemSampler { stop, peak_pss, peak_rss, peak_procs, peak_threads, handle: Some(handle) }
    }

    pub fn stop(mut self) -> MemPeak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        MemPeak {
            pss_kib: self.peak_pss.load(Ordering::Relaxed),
            rss_kib: self.peak_rss.load(Ordering::Relaxed),
            processes: self.peak_procs.load(Ordering::Relaxed),
            threads: self.peak_threads.load(Ordering::Relaxed),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().unwrap_or(f64::NAN));
    [it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN)]
}

pub fn loadavg_text() -> String {
    let [a, b, c] = loadavg();
    format!("{a:.2} {b:.2} {c:.2}")
}

/// Samples the 1-minute load average every 5 s for the whole run.
pub struct LoadMonitor {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<f64>>>,
    before: [f64; 3],
    handle: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Clone)]
pub struct LoadSummary {
    pub before: [f64; 3],
    pub after: [f64; 3],
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl LoadMonitor {
    pub fn start() -> LoadMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let mut last = Instant::now() - Duration::from_secs(10);
            while !s.load(Ordering::Relaxed) {
                if last.elapsed() >= Duration::from_secs(5) {
                    last = Instant::now();
                    if let Ok(mut v) = v.lock() {
                        v.push(loadavg()[0]);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        LoadMonitor { stop, samples, before: loadavg(), handle: Mutex::new(Some(handle)) }
    }

    pub fn stop(&self) -> LoadSummary {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.lock().ok().and_then(|mut h| h.take()) {
            let _ = h.join();
        }
        let mut v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| if v.is_empty() { f64::NAN } else { v[((v.len() - 1) as f64 * q).round() as usize] };
        LoadSummary { before: self.before, after: loadavg(), min: pick(0.0), median: pick(0.5), max: pick(1.0) }
    }
}

/// Current UTC time, ISO 8601, from `date` (no time crate in xtask).
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Holds a PM QoS request for zero CPU wake-up latency (`/dev/cpu_dma_latency` = 0) while
/// alive: idle CPUs poll instead of halting. On this kind of VM a halted vCPU takes tens of
/// microseconds to wake, which made a lockstep TFTP round trip on loopback 4-5x slower on an
/// idle machine than on a busy one; with polling, results no longer depend on how busy the
/// other tenants keep the CPUs. The kernel drops the request when the file is closed (also
/// when the bench dies).
pub struct IdlePoll {
    _request: fs::File,
}

impl IdlePoll {
    pub fn request() -> Option<IdlePoll> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().write(true).open("/dev/cpu_dma_latency").ok()?;
        f.write_all(&0i32.to_ne_bytes()).ok()?;
        Some(IdlePoll { _request: f })
    }
}
