//! Developer and CI tasks for the appliance workspace (`cargo xtask ...`).
//!
//! This file only parses arguments and dispatches; each subcommand lives in
//! its own module.

mod bench;
mod blobs;
mod deb_members;
mod debian;
mod demo_disk;
mod fetch;
mod fuzz;
mod fuzz_seeds;
mod host;
mod image;
mod test;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer and CI tasks for the network-boot appliance.
///
/// Run from anywhere inside the repository as `cargo xtask <COMMAND>`.
/// Needs a Debian (bookworm) host. Every command first prepares it: as
/// root, it enables the architectures of xtask/debian.lock in dpkg (arm64),
/// runs `apt-get update` when apt lacks a package or pinned version, and
/// installs the Debian packages the command needs (without recommends).
/// Not as root, it only checks, and when something is missing it stops
/// before doing anything and prints the commands to run as root.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "\
Examples:
  cargo xtask fetch                  fill target/bootloaders from xtask/debian.lock
  cargo xtask fetch --update-lock    re-pin xtask/debian.lock to apt's current versions
  cargo xtask test                   fmt, clippy, fetch, then the tests (what CI runs)
  cargo xtask help fetch             everything about one command"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the bootloader directory from the pinned Debian packages.
    ///
    /// Downloads the packages pinned in xtask/debian.lock into
    /// target/cache/debs/ (reused while their sha256 matches), then writes
    /// undionly.kpxe, ipxe.efi and snponly.efi (from ipxe) and the GRUB
    /// network boot images grubnetx64.efi and grubnetaa64.efi (built with the
    /// host's grub-mkimage from grub-efi-{amd64,arm64}-bin), plus a SOURCES
    /// file with each file's origin and sha256. The output is deterministic.
    ///
    /// First prepares the host: as root, enables arm64 in dpkg, refreshes
    /// apt's lists when they lack a pinned version, installs grub-common;
    /// not as root, stops with the commands to run if any of that is missing.
    Fetch(fetch::Args),
    /// Run the full check suite, as CI does.
    ///
    /// In order: prepare the host (as root: enable arm64 in dpkg, refresh
    /// apt's lists if needed, install every Debian package the tests use,
    /// QEMU and firmware included; not as root: stop with the commands to
    /// run if anything is missing), `cargo fmt --all -- --check`, `cargo
    /// clippy --workspace --all-targets -- -D warnings`, `cargo xtask fetch`,
    /// the release daemon, then `cargo test --workspace` with
    /// APPLIANCE_BOOTLOADERS pointing at the bootloader directory. Stops at
    /// the first failing step and names it.
    Test(test::Args),
    /// Build the bootable appliance disk image (raw + qcow2) from a recipe.
    ///
    /// Reads images/<name>.yaml (default images/default.yaml) and the config
    /// directory it names, fetches the pinned inputs (bootloaders, the
    /// appliance's own kernel, busybox, GRUB), builds the daemon in release
    /// mode and writes target/images/<name>.img (for dd), <name>.qcow2 and
    /// <name>.toc. The same inputs give the same bytes.
    ///
    /// First prepares the host: as root, enables arm64 in dpkg, refreshes
    /// apt's lists if needed and installs the Debian packages the build uses
    /// (grub-common, mtools, e2fsprogs, qemu-utils, binutils); not as root, it
    /// stops with the commands to run if any is missing. Once they are there
    /// the build itself needs no root.
    Image(image::Args),
    /// Boot the appliance image in QEMU (TCG) on a private network.
    ///
    /// Builds the image (unless --no-build), then runs it with SeaBIOS (or
    /// --firmware uefi) and its serial console in this terminal. The private
    /// network is a point-to-point link over UDP on 127.0.0.1; the command
    /// prints how to attach a client, e.g. `cargo xtask vm --client bios` in
    /// another terminal. State (leases) survives between runs.
    ///
    /// First prepares the host as `image` does, plus QEMU and its firmware
    /// (as root it installs them; not as root it stops with the commands).
    Vm(vm::Args),
    /// Benchmark the daemon against tftpd-hpa, dnsmasq and nginx (not run by `test`).
    ///
    /// Needs root (network namespaces; dnsmasq's TFTP on 127.0.0.2:69). Builds the
    /// daemon in release mode, fetches the peers with `apt-get download` into
    /// target/bench/peers/, then measures TFTP (one and many clients), HTTP, DHCP
    /// (proxy and full DORA, over a veth pair between two namespaces) and a boot
    /// storm, alternating servers round by round. Prints Markdown tables with
    /// medians, ratios and the targets; writes target/bench/results.json.
    /// First prepares the host (iproute2, curl, procps), as the other commands do.
    Bench(bench::Args),
    /// Run the fuzz targets in fuzz/ (DHCP, TFTP, HTTP, config) with cargo-fuzz on stable.
    ///
    /// Installs cargo-fuzz into target/tools once (cargo install --locked) and g++ (libFuzzer)
    /// as a host package, writes seeds from the firmware fixtures and the repository's configs,
    /// runs each target for --seconds (60) with `--sanitizer none`, and prints executions and
    /// coverage per target. A crash fails it, with the input in target/fuzz/artifacts/.
    /// `cargo xtask test` runs it for 45 s per target.
    Fuzz(fuzz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fetch(args) => fetch::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Vm(args) => vm::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` at run time too; prefer that over
/// the compile-time value, which goes stale when a checkout is moved or
/// copied together with its `target/` directory.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

/// Human-readable byte size, e.g. `1.1 MiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
