//! `cargo xtask test`: the full check suite, as CI runs it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::{fetch, fuzz, host, project_root};

/// How long `test` runs each fuzz target.
const FUZZ_SECONDS: u64 = 45;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Extra arguments for `cargo test --workspace`, after `--`
    /// (e.g. `cargo xtask test -- --no-fail-fast -- --nocapture`).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_test_args: Vec<OsString>,
}

/// Environment variable telling the tests where the bootloaders are.
const BOOTLOADERS_ENV: &str = "APPLIANCE_BOOTLOADERS";
/// Environment variable telling the tests where the fetched profile artifacts are.
const BLOBS_ENV: &str = "APPLIANCE_BLOBS";

type Step<'a> = (String, Box<dyn Fn() -> Result<()> + 'a>);

pub fn run(args: &Args) -> Result<()> {
    let sh = Shell::new().context("failed to create a shell")?;
    sh.change_dir(project_root());
    // `cargo run` tells us which cargo is running us; use the same one.
    let cargo = sh.var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let bootloaders = fetch::default_out_dir();
    let blobs = crate::blobs::default_dir();
    let extra = &args.cargo_test_args;

    let steps: Vec<Step<'_>> = vec![
        (
            // First: everything below (fetch's apt downloads, the image tests' tools, the boot
            // tests' QEMU and firmware) needs the host's Debian packages.
            "prepare the host (Debian packages, dpkg architectures, apt lists)".to_owned(),
            Box::new(|| host::prepare(host::Task::Test, host::Pins::Download)),
        ),
        (
            "cargo fmt --all -- --check".to_owned(),
            Box::new(|| Ok(cmd!(sh, "{cargo} fmt --all -- --check").quiet().run()?)),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings".to_owned(),
            Box::new(|| Ok(cmd!(sh, "{cargo} clippy --workspace --all-targets -- -D warnings").quiet().run()?)),
        ),
        ("cargo xtask fetch".to_owned(), Box::new(|| fetch::fetch(&fetch::Args::default()))),
        (
            // The QEMU boot tests run the release daemon (what operators run; its lockstep TFTP
            // is what the matrix times). Built here so its progress shows and no test waits on it.
            "cargo build --release -p appliance --bin appliance".to_owned(),
            Box::new(|| Ok(cmd!(sh, "{cargo} build --release -p appliance --bin appliance").run()?)),
        ),
        (
            format!(
                "{BOOTLOADERS_ENV}={} cargo test --workspace{}",
                bootloaders.display(),
                extra.iter().map(|arg| format!(" {}", arg.to_string_lossy())).collect::<String>()
            ),
            Box::new(|| {
                let mut child = std::process::Command::new(&cargo)
                    .args(["test", "--workspace"])
                    .args(extra)
                    .current_dir(project_root())
                    .env(BOOTLOADERS_ENV, &bootloaders)
                    .env(BLOBS_ENV, &blobs)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .context("failed to start cargo test")?;
                // Pass the output through, adding up every binary's "test result:" line.
                let mut totals = Totals::default();
                let stdout = child.stdout.take().context("cargo test has no stdout")?;
                for line in BufReader::new(stdout).lines() {
                    let line = line.context("reading cargo test's output")?;
                    println!("{line}");
                    totals.add(&line);
                }
                let status = child.wait().context("waiting for cargo test")?;
                // One closing line for the whole workspace, after the per-binary ones.
                let closing = format!(
                    "workspace: {} passed, {} failed, {} skipped",
                    totals.passed, totals.failed, totals.ignored
                );
                println!("{closing}");
                // .ci/run repeats it as the very last line of the run.
                let _ = std::fs::write(project_root().join("target/test-totals.txt"), format!("{closing}\n"));
                anyhow::ensure!(status.success(), "cargo test failed ({status})");
                Ok(())
            }),
        ),
        (
            // Each fuzz target for 45 s: a regression in what the daemon reads from the
            // network or its config shows here, not only in a long run.
            format!("cargo xtask fuzz --seconds {FUZZ_SECONDS} (each of {})", fuzz::TARGETS.join(", ")),
            Box::new(|| {
                for report in fuzz::fuzz(&fuzz::TARGETS, FUZZ_SECONDS)? {
                    println!(
                        "fuzz {}: {} executions, coverage {} edges, {} features",
                        report.target, report.executions, report.edges, report.features
                    );
                }
                Ok(())
            }),
        ),
    ];

    let total = steps.len();
    let started = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    for (index, (name, step)) in steps.iter().enumerate() {
        let number = index + 1;
        println!("\n==> [{number}/{total}] {name}");
        let step_started = Instant::now();
        let result = step();
        let elapsed = step_started.elapsed();
        if let Err(err) = result {
            println!("==> [{number}/{total}] FAILED after {}", secs(elapsed));
            print_summary(&timings, started.elapsed());
            return Err(err.context(format!("step {number}/{total} `{name}` failed")));
        }
        println!("==> [{number}/{total}] ok in {}", secs(elapsed));
        timings.push((name.clone(), elapsed));
    }
    print_summary(&timings, started.elapsed());
    println!("all {total} steps passed");
    Ok(())
}

fn print_summary(timings: &[(String, Duration)], total: Duration) {
    println!("\nstep timings:");
    for (name, elapsed) in timings {
        println!("  {:>8}  {name}", secs(*elapsed));
    }
    println!("  {:>8}  total", secs(total));
}

fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Sums of cargo test's `test result: ok. N passed; M failed; K ignored; ...` lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_up_test_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 137 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 6.40s");
        t.add("test result: FAILED. 8 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.26s");
        t.add("running 3 tests");
        assert_eq!(t, Totals { passed: 145, failed: 1, ignored: 1 });
    }
}
