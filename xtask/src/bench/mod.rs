//! `cargo xtask bench`: our daemon against tftpd-hpa, dnsmasq and nginx, on loopback and
//! inside two network namespaces joined by a veth pair (DHCP needs broadcast and an
//! interface; the boot storm needs DHCP). Not part of `cargo xtask test`.
//!
//! Every peer is a Debian package downloaded with `apt-get download` and unpacked into
//! `target/bench/peers/` (`peers`), started and stopped by PID. Our daemon is the release
//! binary (`target/release/appliance serve`) on a generated config (`ours`), so its peak RSS
//! is a process's. Each case runs several rounds, alternating servers (ours, peer, ours,
//! peer...), and the tables show medians and ratios (`report`); `target/bench/results.json`
//! has every sample.
//!
//! Sections: `tftp` (one client, many clients), `http` (big file, small scripts), `dhcp`
//! (proxy DISCOVER->OFFER, full DORA; the load generator runs inside the client namespace as
//! this same binary, `--internal`), `storm` (many simulated machines booting at once).
//!
//! The bench measures with the release build of this very crate: run from a debug build
//! (what `cargo xtask` is) it builds `-p xtask -p appliance` in release and re-executes.

mod cgroups;
mod dhcp;
mod http;
mod httpc;
mod netns;
mod ours;
mod packets;
mod peers;
mod report;
mod storm;
mod tftp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::project_root;
use report::{Report, Target};

/// Set in the environment of the re-executed release build.
const RELEASE_ENV: &str = "XTASK_BENCH_RELEASE";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fast smoke run (under a minute once built): small files, few clients, one round.
    #[arg(long)]
    pub quick: bool,
    /// Run one section only.
    #[arg(long, value_enum)]
    pub only: Option<Section>,
    /// Rounds per case; each round measures every server once, alternating [default: 3, and 7
    /// for one-client TFTP; quick: 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Let idle CPUs halt. By default the bench holds /dev/cpu_dma_latency at 0 (idle CPUs
    /// poll) so that wake-up latency, which depends on what else the machine is doing, does
    /// not dominate lockstep round trips. Our daemon still makes the same request itself
    /// while it sends (its default `--cpu-latency 0`); the peers do not, so with this flag
    /// each server runs as it ships.
    #[arg(long)]
    pub no_idle_poll: bool,
    /// An extra argument for every `appliance serve` the bench starts, to measure a setting
    /// (repeatable): e.g. `--daemon-arg=--tftp-spin=0`. The row `ours ws=1 async` already
    /// passes `--tftp-lockstep-threads 0`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub daemon_arg: Vec<String>,
    /// Runs every section twice, our daemon with its boot journal on (`--journal on`, the
    /// default) and off (`--journal off`), one right after the other, so the journal's cost is
    /// read from one run under one load; the tables and targets of each are marked "[journal
    /// on]" / "[journal off]".
    #[arg(long)]
    pub journal_compare: bool,
    /// Another build of our daemon to measure beside this one, labelled "ours (baseline)" in
    /// the TFTP tables, with targets that this build is no slower: e.g. the release binary of
    /// the branch a change starts from, so before and after share one run and its load.
    #[arg(long, value_name = "PATH")]
    pub baseline_appliance: Option<PathBuf>,
    /// Internal: run a load generator role (JSON spec) and print its result as JSON.
    #[arg(long, hide = true, value_name = "JSON")]
    pub internal: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Tftp,
    /// The one-client TFTP cases only (part of `tftp`).
    TftpOne,
    /// The many-client TFTP cases only (part of `tftp`).
    TftpMany,
    Http,
    Dhcp,
    Storm,
}

/// One section's entry point.
type SectionFn = fn(&Ctx, &mut Report) -> Result<()>;

/// Sizes and counts of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub tftp_single_size: u64,
    /// Rounds of the one-client TFTP cases: lockstep against tftpd-hpa is close, so it gets
    /// more samples than the other cases.
    pub tftp_single_rounds: usize,
    pub tftp_blksizes: Vec<u16>,
    pub tftp_windows: Vec<u16>,
    pub tftp_many_size: u64,
    pub tftp_many_clients: Vec<usize>,
    pub tftp_many_rounds: usize,
    pub http_big_size: u64,
    pub http_big_single_repeats: usize,
    pub http_clients: Vec<usize>,
    pub http_script_secs: f64,
    pub http_script_conns: usize,
    pub dhcp_rate: u32,
    pub dhcp_rate_secs: f64,
    pub dhcp_max_secs: f64,
    pub dhcp_dora_clients: usize,
    pub storm_clients: usize,
    pub storm_kernel: u64,
    pub storm_initrd: u64,
    /// Bigger files for the second storm that shows peak RSS does not follow file size.
    pub storm_scale: Option<u64>,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        const MB: u64 = 1_000_000;
        if args.quick {
            Plan {
                quick: true,
                rounds: args.rounds.unwrap_or(1).max(1),
                tftp_single_size: 4 * MB,
                tftp_single_rounds: args.rounds.unwrap_or(1).max(1),
                tftp_blksizes: vec![512, 1468, 8192],
                tftp_windows: vec![1, 4, 16],
                tftp_many_size: MB,
                tftp_many_clients: vec![20],
                tftp_many_rounds: 1,
                http_big_size: 20 * MB,
                http_big_single_repeats: 2,
                http_clients: vec![1, 8],
                http_script_secs: 0.5,
                http_script_conns: 8,
                dhcp_rate: 5000,
                dhcp_rate_secs: 0.5,
                dhcp_max_secs: 0.5,
                dhcp_dora_clients: 200,
                storm_clients: 20,
                storm_kernel: 2 * MB,
                storm_initrd: MB,
                storm_scale: Some(3),
            }
        } else {
            let rounds = args.rounds.unwrap_or(3).max(1);
            Plan {
                quick: false,
                rounds,
                tftp_single_size: 30 * MB,
                tftp_single_rounds: args.rounds.unwrap_or(7).max(1),
                tftp_blksizes: vec![512, 1468, 8192],
                tftp_windows: vec![1, 4, 16],
                tftp_many_size: 5 * MB,
                tftp_many_clients: vec![100, 500],
                tftp_many_rounds: rounds.min(2),
                http_big_size: 100 * MB,
                http_big_single_repeats: 10,
                http_clients: vec![1, 64],
                http_script_secs: 2.0,
                http_script_conns: 16,
                dhcp_rate: 5000,
                dhcp_rate_secs: 2.0,
                dhcp_max_secs: 2.0,
                dhcp_dora_clients: 1000,
                storm_clients: 200,
                storm_kernel: 14 * MB,
                storm_initrd: 2 * MB,
                storm_scale: Some(3),
            }
        }
    }
}

/// Paths and binaries shared by the sections.
pub struct Ctx {
    pub plan: Plan,
    /// `target/bench`
    pub dir: PathBuf,
    /// `target/bench/work`: per-run scratch (configs, state, logs), replaced on each run.
    pub work: PathBuf,
    /// `target/bench/data`: generated content, kept between runs.
    pub data: PathBuf,
    pub appliance: PathBuf,
    /// `--daemon-arg`s.
    pub daemon_args: Vec<String>,
    /// `--journal=on|off` while `--journal-compare` runs a section: this build's only.
    pub journal_args: Vec<String>,
    /// `--baseline-appliance`, absolute.
    pub baseline: Option<PathBuf>,
    pub peers: peers::Peers,
    pub rt: tokio::runtime::Runtime,
    pub load: peers::LoadMonitor,
}

impl Ctx {
    /// A fresh directory under `work`.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let p = self.work.join(name);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(p)
    }
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(spec) = &args.internal {
        return internal(spec);
    }
    let root = project_root();
    if std::env::var_os(RELEASE_ENV).is_none() {
        // Once, in the debug build that re-executes the release one.
        crate::host::prepare(crate::host::Task::Bench, crate::host::Pins::Download)?;
        build_release(&root, cfg!(debug_assertions))?;
        if cfg!(debug_assertions) {
            return reexec_release(&root);
        }
    }
    preflight()?;
    let baseline = match &args.baseline_appliance {
        Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("--baseline-appliance {}", p.display()))?),
        None => None,
    };
    let plan = Plan::new(args);
    let dir = root.join("target/bench");
    let work = dir.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    netns::cleanup_stale();
    peers::cleanup_stale_cgroups();
    eprintln!("bench: peers (Debian packages, unpacked into {})", dir.join("peers").display());
    let peers = peers::Peers::ensure(&dir.join("peers"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let idle_poll = if args.no_idle_poll { None } else { peers::IdlePoll::request() };
    let group = peers::BenchGroup::enter();
    let whole = peers::OtherMeter::start(group.as_ref());
    let load = peers::LoadMonitor::start();
    let mut ctx = Ctx {
        plan,
        dir,
        work,
        data,
        appliance: root.join("target/release/appliance"),
        daemon_args: args.daemon_arg.clone(),
        journal_args: Vec::new(),
        baseline,
        peers,
        rt,
        load,
    };
    let started = Instant::now();
    eprintln!(
        "bench: {} run, {} round(s), idle CPUs {}, load average before: {}",
        if ctx.plan.quick { "quick" } else { "full" },
        ctx.plan.rounds,
        if idle_poll.is_some() { "poll (cpu_dma_latency 0)" } else { "may halt" },
        peers::loadavg_text()
    );

    let mut report = Report::default();
    let wanted = |s: Section| match args.only {
        None => !matches!(s, Section::TftpOne | Section::TftpMany),
        Some(only) => only == s,
    };
    let sections: [(Section, &str, SectionFn); 6] = [
        (Section::Tftp, "tftp", tftp::run),
        (Section::TftpOne, "tftp-one", tftp::single),
        (Section::TftpMany, "tftp-many", tftp::many),
        (Section::Http, "http", http::run),
        (Section::Dhcp, "dhcp", dhcp::run),
        (Section::Storm, "storm", storm::run),
    ];
    let mut others = Vec::new();
    for (section, name, run) in sections {
        if !wanted(section) {
            continue;
        }
        let meter = peers::OtherMeter::start(group.as_ref());
        for (tag, extra) in journal_variants(args.journal_compare) {
            ctx.journal_args = extra.iter().map(|a| a.to_string()).collect();
            let before = report.mark();
            run(&ctx, &mut report)
                .with_context(|| format!("{name} section{}", tag.map(|t| format!(" [{t}]")).unwrap_or_default()))?;
            if let Some(tag) = tag {
                report.tag_since(before, tag);
            }
        }
        let other = meter.stop(group.as_ref());
        eprintln!(
            "bench: {name}: done in {:.0} s; other processes kept {:.2} of {} CPUs busy meanwhile",
            other.wall_secs,
            other.cpus(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        others.push((name.to_string(), other));
    }
    let other_total = whole.stop(group.as_ref());

    let elapsed = started.elapsed();
    let load = ctx.load.stop();
    let command =
        std::iter::once("cargo xtask bench".to_string()).chain(std::env::args().skip(2)).collect::<Vec<_>>().join(" ");
    let header = report::RunInfo {
        date: peers::utc_now(),
        command,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        load,
        duration: elapsed,
        rounds: ctx.plan.rounds,
        quick: ctx.plan.quick,
        peers: ctx.peers.versions.clone(),
        idle_poll: idle_poll.is_some(),
        others: group.is_some().then_some((other_total, others)),
    };
    drop(idle_poll);
    let text = report.render(&header);
    println!("{text}");
    let json_path = ctx.dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report.json(&header))? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = ctx.dir.join("results.md");
    std::fs::write(&md_path, &text).with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!("bench: wrote {} and {} ({:.0} s)", json_path.display(), md_path.display(), elapsed.as_secs_f64());
    let missed: Vec<&Target> = report.targets.iter().filter(|t| t.met == Some(false)).collect();
    if !missed.is_empty() {
        eprintln!("bench: {} target(s) missed (see the table)", missed.len());
    }
    Ok(())
}

/// The daemon configurations each section runs with: as given, or (`--journal-compare`) with
/// the journal on and then off, each with its tag for the report.
fn journal_variants(compare: bool) -> Vec<(Option<&'static str>, &'static [&'static str])> {
    if compare {
        vec![(Some("journal on"), &["--journal=on"]), (Some("journal off"), &["--journal=off"])]
    } else {
        vec![(None, &[])]
    }
}

/// `cargo build --release -p appliance` (and `-p xtask` when we are about to re-execute).
fn build_release(root: &Path, with_xtask: bool) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(root).args(["build", "--release", "-p", "appliance"]);
    if with_xtask {
        cmd.args(["-p", "xtask"]);
    }
    eprintln!(
        "bench: cargo build --release -p appliance{}",
        if with_xtask { " -p xtask (the bench measures with release builds)" } else { "" }
    );
    let status = cmd.status().context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(())
}

/// Replaces this process with the release build of xtask, same arguments.
fn reexec_release(root: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = root.join("target/release/xtask");
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(RELEASE_ENV, "1")
        .env("CARGO_MANIFEST_DIR", root.join("xtask"))
        .exec();
    Err(err).with_context(|| format!("executing {}", exe.display()))
}

/// Root (namespaces, port 69 on 127.0.0.2, cpuacct cgroups) and the host tools we call.
fn preflight() -> Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("the bench needs root: it creates network namespaces and binds 127.0.0.2:69 for dnsmasq");
    }
    // The tools (ip, curl, kill) are there: `crate::host::prepare` saw to it before the build.
    Ok(())
}

/// The load-generator roles that run inside the client namespace.
fn internal(spec: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(spec).context("parsing the internal spec")?;
    let out = match v["role"].as_str() {
        Some("dhcp") => dhcp::generator(&v)?,
        Some("storm") => storm::clients(&v)?,
        other => bail!("unknown internal role {other:?}"),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Runs this binary with `--internal SPEC` inside namespace `ns` and parses its JSON output.
pub fn run_internal(ns: &str, spec: &serde_json::Value, log: &Path, timeout: Duration) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let stderr = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .args(["bench", "--internal"])
        .arg(spec.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("starting the load generator")?;
    let mut stdout = child.stdout.take().context("generator stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("load generator did not finish within {:?} (log: {})", timeout, log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let err = std::fs::read_to_string(log).unwrap_or_default();
        bail!("load generator failed ({status}): {}", err.trim());
    }
    serde_json::from_str(out.trim()).with_context(|| format!("parsing the generator's output {out:?}"))
}
