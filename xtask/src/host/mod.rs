//! Host preparation, the first thing `cargo xtask image`, `test`, `fetch`, `vm` and `bench` do:
//! the Debian packages of `packages.rs` installed, the architectures of `xtask/debian.lock`
//! known to dpkg, and every pinned version still to download known to apt.
//!
//! This file is the I/O shell: it reads dpkg's and apt's state, hands it to `plan.rs` (which
//! decides), and runs the resulting commands as root. Without root it runs nothing and stops
//! with the exact commands to run, so a host is never left half-prepared by us.

pub mod packages;
pub mod plan;

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::debian::{self, Lock};
pub use packages::Task;
use plan::{Apt, Dpkg, Needs, PackageRef, PinnedDownload, Step, Unmet};

/// What a command does with the pinned packages of `xtask/debian.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pins {
    /// Downloads the pinned versions: apt must offer every one not in the download cache.
    Download,
    /// Re-pins (`fetch --update-lock`): apt's current versions count, not the old pins.
    Repin,
}

/// How many times the steps are planned and run before giving up (see the loop in `prepare`).
const MAX_ROUNDS: u32 = 3;

/// Makes the host ready for `task`, or fails before doing anything when that needs root and we
/// are not.
pub fn prepare(task: Task, pins: Pins) -> Result<()> {
    let started = Instant::now();
    let dpkg = read_dpkg().with_context(|| {
        let names: Vec<&str> = packages::needed_by(task).map(|p| p.name).collect();
        format!("cargo xtask {task} needs a Debian host (bookworm) with dpkg and apt, to install: {}", names.join(" "))
    })?;
    let needs = needs(task, pins, &dpkg.native)?;
    let apt = read_apt(&plan::apt_questions(&needs, &dpkg), &dpkg.native)?;
    let unmet = plan::unmet(&needs, &dpkg, &apt);
    let steps = plan::plan(&unmet, &dpkg.native);
    if steps.is_empty() {
        let arches: Vec<&str> = needs.architectures.iter().map(String::as_str).collect();
        let pins = match needs.download.len() {
            0 => String::new(),
            n => format!("; apt offers the {n} pinned versions still to download"),
        };
        println!(
            "host: ready for `cargo xtask {task}`: its {} Debian packages are installed, dpkg knows {}{pins} \
             (checked in {:.1}s)",
            needs.install.len(),
            arches.join(" and "),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    println!("host: `cargo xtask {task}` needs:");
    for u in &unmet {
        println!("  - {}", describe(u, &dpkg.native));
    }
    if !is_root() {
        let commands: String = steps.iter().map(|s| format!("  {s}\n")).collect();
        bail!(
            "this host is not ready for `cargo xtask {task}` and only root can prepare it; nothing was changed. \
             Run as root:\n{commands}then `cargo xtask {task}` again (run as root, it does this itself)"
        );
    }

    let mut culprits = Vec::new();
    let mut steps = steps;
    let mut round = 1;
    let (dpkg, left) = loop {
        for step in &steps {
            culprits.extend(execute(step)?);
        }
        let dpkg = read_dpkg()?;
        let apt = read_apt(&plan::apt_questions(&needs, &dpkg), &dpkg.native)?;
        let left = plan::unmet(&needs, &dpkg, &apt);
        // apt may remove an installed package to make room for another one: bookworm's
        // qemu-system-x86 removes a backported qemu-utils that declares it breaks the older
        // qemu-system-common. What is missing after such a round is installed in the next.
        if left.is_empty() || !culprits.is_empty() || round == MAX_ROUNDS {
            break (dpkg, left);
        }
        round += 1;
        steps = plan::plan(&left, &dpkg.native);
        println!("host: apt removed or left out some of what is needed; round {round}:");
        for u in &left {
            println!("  - {}", describe(u, &dpkg.native));
        }
    };
    if !left.is_empty() || !culprits.is_empty() {
        let mut problems: Vec<String> =
            culprits.iter().map(|spec| format!("apt-get could not install {spec} (its output is above)")).collect();
        problems.extend(left.iter().filter_map(|u| after_the_steps(u, &dpkg.native, &culprits)));
        bail!("the host is still not ready for `cargo xtask {task}`:\n  - {}", problems.join("\n  - "));
    }
    println!("host: prepared for `cargo xtask {task}` in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What `task` needs: its packages, the lock's architectures and, when it downloads, the
/// pinned versions the download cache does not have yet.
fn needs(task: Task, pins: Pins, native: &str) -> Result<Needs> {
    let mut needs = Needs::default();
    for p in packages::needed_by(task) {
        let package = PackageRef::new(p.name, p.arch.unwrap_or(native));
        needs.architectures.insert(package.arch.clone());
        needs.install.push(package);
    }
    if task.uses_lock() {
        needs.architectures.extend(debian::ARCHES.iter().map(|a| a.to_string()));
        if pins == Pins::Download {
            let lock = Lock::load()?;
            let cache = debian::cache_dir();
            needs.download = lock
                .pins()
                .iter()
                .filter(|pin| !cache.join(pin.cache_file_name()).is_file())
                .map(|pin| PinnedDownload {
                    package: PackageRef::new(&pin.name, &pin.arch),
                    version: pin.version.clone(),
                })
                .collect();
        }
    }
    Ok(needs)
}

/// One line on what is missing and why it is needed.
fn describe(unmet: &Unmet, native: &str) -> String {
    match unmet {
        Unmet::Architecture(arch) => {
            format!(
                "the {arch} architecture in dpkg ({} pins {arch} packages, downloaded through apt)",
                debian::LOCK_PATH
            )
        }
        Unmet::NotInstalled { package, candidate } => format!(
            "{}: {}{}",
            package.spec(native),
            packages::find(&package.name).map_or("", |p| p.why),
            if *candidate { "" } else { " (apt's lists do not offer it yet)" }
        ),
        Unmet::PinUnknown(pin) => format!(
            "{} {} (pinned in {}): apt's lists do not offer this version yet",
            pin.package.spec(native),
            pin.version,
            debian::LOCK_PATH
        ),
    }
}

/// Why `unmet` is still there after the steps ran; `None` when an install failure already
/// named it.
fn after_the_steps(unmet: &Unmet, native: &str, culprits: &[String]) -> Option<String> {
    Some(match unmet {
        Unmet::Architecture(arch) => format!("dpkg still does not know the {arch} architecture"),
        Unmet::NotInstalled { package, .. } if culprits.contains(&package.spec(native)) => return None,
        Unmet::NotInstalled { package, candidate: false } => format!(
            "{}: apt has no installation candidate even after `apt-get update`; do /etc/apt/sources.list \
             and /etc/apt/sources.list.d/ name Debian bookworm (main)?",
            package.spec(native)
        ),
        Unmet::NotInstalled { package, candidate: true } => {
            format!("{}: still not installed after `apt-get install` (its output is above)", package.spec(native))
        }
        Unmet::PinUnknown(pin) => format!(
            "{} {}, pinned in {lock}: no package list offers this version even after `apt-get update`, so the lock \
             may be stale (the mirror no longer carries it); re-pin with `cargo xtask fetch --update-lock` and \
             commit {lock}",
            pin.package.spec(native),
            pin.version,
            lock = debian::LOCK_PATH
        ),
    })
}

/// Runs one step; returns the packages an install could not install. A failed bulk install is
/// retried one package at a time, so the error names the culprits rather than the whole set.
fn execute(step: &Step) -> Result<Vec<String>> {
    if run(&step.argv())? {
        return Ok(Vec::new());
    }
    let Step::Install(specs) = step else { bail!("`{step}` failed") };
    println!("host: installing everything at once failed; trying one package at a time");
    let mut failed = Vec::new();
    for spec in specs {
        if !run(&Step::Install(vec![spec.clone()]).argv())? {
            failed.push(spec.clone());
        }
    }
    Ok(failed)
}

/// Runs a command with its output shown, without stdin and with debconf told not to ask.
fn run(argv: &[String]) -> Result<bool> {
    println!("+ {}", argv.join(" "));
    let started = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("failed to run {}", argv[0]))?;
    println!("  ({} {status} after {:.1}s)", argv[0], started.elapsed().as_secs_f64());
    Ok(status.success())
}

fn read_dpkg() -> Result<Dpkg> {
    let native = output("dpkg", &["--print-architecture"])?.trim().to_owned();
    let foreign = plan::parse_architectures(&output("dpkg", &["--print-foreign-architectures"])?);
    let query = output("dpkg-query", &["-W", "-f", "${binary:Package}\t${db:Status-Abbrev}\n"])?;
    let installed = plan::parse_dpkg_query(&query, &native);
    Ok(Dpkg { native, foreign, installed })
}

/// apt's view of `specs`, from one `apt-cache policy` call (none when there is nothing to ask).
fn read_apt(specs: &[String], native: &str) -> Result<Apt> {
    if specs.is_empty() {
        return Ok(Apt::default());
    }
    let mut args = vec!["policy"];
    args.extend(specs.iter().map(String::as_str));
    Ok(plan::parse_policy(&output("apt-cache", &args)?, native))
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{program} printed something that is not UTF-8"))
}

fn is_root() -> bool {
    // The effective user owns /proc/self: `id -u` without libc.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Unmet {
        Unmet::PinUnknown(PinnedDownload {
            package: PackageRef::new("grub-efi-arm64-bin", "arm64"),
            version: "2.06-13+deb12u3".to_owned(),
        })
    }

    #[test]
    fn a_pin_apt_still_lacks_points_at_a_stale_lock_and_how_to_re_pin() {
        let msg = after_the_steps(&pin(), "amd64", &[]).unwrap();
        assert!(msg.starts_with("grub-efi-arm64-bin:arm64 2.06-13+deb12u3, pinned in xtask/debian.lock"), "{msg}");
        assert!(msg.contains("stale") && msg.contains("cargo xtask fetch --update-lock"), "{msg}");
        assert!(describe(&pin(), "amd64").contains("apt's lists do not offer this version yet"));
    }

    #[test]
    fn packages_are_described_by_why_they_are_needed() {
        let mtools = Unmet::NotInstalled { package: PackageRef::new("mtools", "amd64"), candidate: true };
        assert_eq!(describe(&mtools, "amd64"), format!("mtools: {}", packages::find("mtools").unwrap().why));
        let without = Unmet::NotInstalled { package: PackageRef::new("mtools", "amd64"), candidate: false };
        assert!(describe(&without, "amd64").ends_with("(apt's lists do not offer it yet)"));
        assert!(after_the_steps(&without, "amd64", &[]).unwrap().contains("no installation candidate"));
        // A package the one-by-one install already named is not reported twice.
        assert_eq!(after_the_steps(&mtools, "amd64", &["mtools".to_owned()]), None);
        assert!(after_the_steps(&mtools, "amd64", &["cpio".to_owned()]).is_some());
    }
}
