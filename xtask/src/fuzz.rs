//! `cargo xtask fuzz`: runs the fuzz targets in `fuzz/` with cargo-fuzz, on the stable
//! toolchain (`--sanitizer none`: libFuzzer's coverage guidance without a sanitizer, which
//! needs nightly), each for a while, and reports executions and coverage per target.
//!
//! cargo-fuzz itself is installed by this command (`cargo install --locked`, into
//! `target/tools`, once); libFuzzer's C++ needs g++ (a host package). Builds go to
//! `target/fuzz`; the corpus grows in `target/fuzz/corpus/<target>` from seeds written afresh
//! each run (`fuzz_seeds`), and a crash is saved in `target/fuzz/artifacts/<target>/` and
//! fails the command. `cargo xtask test` runs every target for 45 s (three minutes for the
//! four, plus the build).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{fuzz_seeds, host, project_root};

/// The targets in `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 4] = ["dhcp", "tftp", "http", "config"];
/// The cargo-fuzz release installed into `target/tools`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Targets to run (default: all of dhcp, tftp, http, config).
    pub targets: Vec<String>,
}

/// What one target's run did.
#[derive(Debug, Default)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub seconds: u64,
    /// libFuzzer's coverage counters at the end: edges (`cov`) and features (`ft`).
    pub edges: u64,
    pub features: u64,
    pub corpus: u64,
}

pub fn run(args: &Args) -> Result<()> {
    host::prepare(host::Task::Fuzz, host::Pins::Download)?;
    let targets: Vec<&str> =
        if args.targets.is_empty() { TARGETS.to_vec() } else { args.targets.iter().map(String::as_str).collect() };
    for report in fuzz(&targets, args.seconds)? {
        println!(
            "fuzz {}: {} executions in {} s, coverage {} edges, {} features, corpus {}",
            report.target, report.executions, report.seconds, report.edges, report.features, report.corpus
        );
    }
    Ok(())
}

/// Builds and runs each of `targets` for `seconds`; fails on the first crash.
pub fn fuzz(targets: &[&str], seconds: u64) -> Result<Vec<Report>> {
    let root = project_root();
    let cargo_fuzz = install_cargo_fuzz(&root)?;
    let work = root.join("target/fuzz");
    let mut reports = Vec::new();
    for target in targets {
        if !TARGETS.contains(target) {
            bail!("no fuzz target {target:?} (there are {})", TARGETS.join(", "));
        }
        let seeds = work.join("seeds").join(target);
        let corpus = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        fuzz_seeds::write(target, &seeds, &root)?;
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut child = Command::new(&cargo_fuzz)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &work)
            .args(["fuzz", "run", "--sanitizer", "none", "--release", "--fuzz-dir", "fuzz", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-print_final_stats=1", "-max_len=4096", "-timeout=10"])
            .stderr(Stdio::piped())
            .spawn()
            .context("starting cargo fuzz")?;
        let stderr = child.stderr.take().context("cargo fuzz has no stderr")?;
        let mut report = Report { target: target.to_string(), seconds, ..Report::default() };
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo fuzz's output")?;
            read_line(&line, &mut report);
            if !line.starts_with('#') || line.contains("DONE") || line.contains("INITED") {
                eprintln!("{line}");
            }
        }
        let status = child.wait().context("waiting for cargo fuzz")?;
        if !status.success() {
            // libFuzzer writes the input of a crash, leak, timeout or OOM into the artifacts
            // directory; without one, cargo fuzz itself failed (the build, most often).
            let found = std::fs::read_dir(&artifacts).map(|d| d.flatten().count()).unwrap_or(0);
            if found == 0 {
                bail!("cargo fuzz failed for target {target} ({status}) before fuzzing: see its output above");
            }
            bail!("fuzz target {target} failed ({status}); the input is in {}", artifacts.display());
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Takes what a line of libFuzzer's output says about the run.
fn read_line(line: &str, report: &mut Report) {
    let number = |key: &str| {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse::<u64>().ok()
    };
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        report.executions = n.trim().parse().unwrap_or(report.executions);
    }
    if line.starts_with('#') {
        report.edges = number("cov: ").unwrap_or(report.edges);
        report.features = number("ft: ").unwrap_or(report.features);
        report.corpus = number("corp: ").unwrap_or(report.corpus);
    }
}

/// `target/tools/bin/cargo-fuzz`, installed first if it is not there.
fn install_cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let tools = root.join("target/tools");
    let bin = tools.join("bin/cargo-fuzz");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if !installed {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["install", "--locked", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--root"])
            .arg(&tools)
            .status()
            .context("running cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("cargo install cargo-fuzz {CARGO_FUZZ_VERSION} failed ({status})");
        }
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_progress_and_final_stats() {
        let mut r = Report::default();
        for line in [
            "#2\tINITED cov: 120 ft: 130 corp: 10/1024b exec/s: 0 rss: 40Mb",
            "#65536\tpulse  cov: 1501 ft: 4020 corp: 321/22Kb lim: 4096 exec/s: 21845 rss: 60Mb",
            "#1200000\tDONE   cov: 1532 ft: 4117 corp: 330/23Kb lim: 4096 exec/s: 20000 rss: 61Mb",
            "stat::number_of_executed_units: 1200000",
        ] {
            read_line(line, &mut r);
        }
        assert_eq!((r.executions, r.edges, r.features, r.corpus), (1_200_000, 1532, 4117, 330));
    }

    #[test]
    fn every_target_has_seeds() {
        for target in TARGETS {
            let dir = tempfile::tempdir().unwrap();
            let n = fuzz_seeds::write(target, &dir.path().join("s"), &project_root()).unwrap();
            assert!(n >= 5, "{target}: {n} seeds");
        }
    }
}
