//! Where the bench's CPU time is counted: a cpuacct cgroup per server (its forked children
//! included), one for the bench itself, and the machine's busy time, so that the report can say
//! how much of the two CPUs other processes took during a run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::peers::USER_HZ;

/// A cgroup (v1 cpuacct) holding one server and every process it forks, so its CPU time is
/// exact even for children that exit unreaped (tftpd-hpa ignores SIGCHLD, so their time never
/// reaches the parent's `cutime`). Removed when the server is stopped.
pub(super) struct CpuGroup {
    path: PathBuf,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup/cpuacct";
const CGROUP_PREFIX: &str = "nbbench-";

/// The bench's own group (this process and, below it, every server), when it could be made.
static BENCH_GROUP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

impl CpuGroup {
    pub(super) fn create() -> Option<CpuGroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = match BENCH_GROUP.get() {
            Some(bench) => bench.join(format!("server-{n}")),
            None => Path::new(CGROUP_ROOT).join(format!("{CGROUP_PREFIX}{}-{n}", std::process::id())),
        };
        fs::create_dir(&path).ok()?;
        Some(CpuGroup { path })
    }

    /// `cmd` wrapped so that it enters the group before it starts: a shell writes its own PID
    /// into the group and execs the program (same PID), so nothing it forks escapes.
    pub(super) fn wrap(&self, cmd: &Command) -> Command {
        let mut w = Command::new("sh");
        w.arg("-c").arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"").arg(&self.path);
        w.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w
    }

    pub(super) fn usage_secs(&self) -> Option<f64> {
        let ns: u64 = fs::read_to_string(self.path.join("cpuacct.usage")).ok()?.trim().parse().ok()?;
        Some(ns as f64 / 1e9)
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.path);
    }
}

/// Removes cpuacct groups of earlier bench runs whose process is gone (empty ones only).
pub fn cleanup_stale_cgroups() {
    let Ok(dir) = fs::read_dir(CGROUP_ROOT) else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            if let Ok(sub) = fs::read_dir(e.path()) {
                for s in sub.flatten().filter(|s| s.path().is_dir()) {
                    let _ = fs::remove_dir(s.path());
                }
            }
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// This process in a cpuacct group of its own, with the servers' groups below it: the group's
/// usage is everything the bench ran, so the machine's busy time minus it is what the other
/// tenants used meanwhile (the load average cannot tell: 500 tftpd-hpa processes count in it).
pub struct BenchGroup {
    path: PathBuf,
}

impl BenchGroup {
    pub fn enter() -> Option<BenchGroup> {
        let path = Path::new(CGROUP_ROOT).join(format!("{CGROUP_PREFIX}{}", std::process::id()));
        fs::create_dir(&path).ok()?;
        let group = BenchGroup { path };
        fs::write(group.path.join("cgroup.procs"), std::process::id().to_string()).ok()?;
        let _ = BENCH_GROUP.set(group.path.clone());
        Some(group)
    }

    /// CPU seconds used by the bench and all it started, so far.
    pub fn usage_secs(&self) -> f64 {
        fs::read_to_string(self.path.join("cpuacct.usage"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(f64::NAN, |ns| ns as f64 / 1e9)
    }
}

impl Drop for BenchGroup {
    fn drop(&mut self) {
        let _ = fs::write(Path::new(CGROUP_ROOT).join("cgroup.procs"), std::process::id().to_string());
        let _ = fs::remove_dir(&self.path);
    }
}

/// Busy CPU seconds of the whole machine so far (all CPUs; user, nice, system and steal), from
/// /proc/stat. Interrupt and softirq time are left out: the network stack's work for the bench's
/// own packets lands there and is charged to no cgroup.
pub fn machine_busy_secs() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return f64::NAN };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|s| s.parse().ok()).collect();
    if f.len() < 8 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    (f[0] + f[1] + f[2] + f[7]) as f64 / USER_HZ
}

/// CPU time other processes used during a stretch of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtherLoad {
    /// CPU seconds used by processes that are not the bench's.
    pub cpu_secs: f64,
    pub wall_secs: f64,
}

impl OtherLoad {
    /// Average number of CPUs the other processes kept busy.
    pub fn cpus(&self) -> f64 {
        self.cpu_secs / self.wall_secs
    }
}

/// Measures what other processes use between `start` and `stop`.
pub struct OtherMeter {
    busy: f64,
    ours: f64,
    at: Instant,
}

impl OtherMeter {
    pub fn start(group: Option<&BenchGroup>) -> OtherMeter {
        OtherMeter {
            busy: machine_busy_secs(),
            ours: group.map_or(f64::NAN, BenchGroup::usage_secs),
            at: Instant::now(),
        }
    }

    pub fn stop(&self, group: Option<&BenchGroup>) -> OtherLoad {
        let busy = machine_busy_secs() - self.busy;
        let ours = group.map_or(f64::NAN, BenchGroup::usage_secs) - self.ours;
        OtherLoad { cpu_secs: (busy - ours).max(0.0), wall_secs: self.at.elapsed().as_secs_f64() }
    }
}
