//! `cargo xtask test`: the full check suite, as CI runs it.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::{fetch, project_root};

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
            "cargo fmt --all -- --check".to_owned(),
            Box::new(|| Ok(cmd!(sh, "{cargo} fmt --all -- --check").quiet().run()?)),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings".to_owned(),
            Box::new(|| Ok(cmd!(sh, "{cargo} clippy --workspace --all-targets -- -D warnings").quiet().run()?)),
        ),
        ("cargo xtask fetch".to_owned(), Box::new(|| fetch::run(&fetch::Args::default()))),
        (
            format!(
                "{BOOTLOADERS_ENV}={} cargo test --workspace{}",
                bootloaders.display(),
                extra.iter().map(|arg| format!(" {}", arg.to_string_lossy())).collect::<String>()
            ),
            Box::new(|| {
                Ok(cmd!(sh, "{cargo} test --workspace {extra...}")
                    .env(BOOTLOADERS_ENV, &bootloaders)
                    .env(BLOBS_ENV, &blobs)
                    .quiet()
                    .run()?)
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
