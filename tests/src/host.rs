//! The host side of a cell: where things are (the workspace, the target directory the tests
//! were built into, the bootloaders and blobs `cargo xtask fetch` wrote, the daemon binary, each
//! test's output folder `target/qemu-tests/<test>/`) and what the host must have. A missing piece
//! fails the test with its name and where to get it (a Debian package, `cargo xtask fetch`): the
//! matrix never skips silently.

use crate::client::Client;
use anyhow::{bail, Context, Result};
use appliance_core::boot_file::BootFile;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use testkit::procs::find_program;

/// `cargo xtask test` sets these; without them the default `target/` folders are used.
pub const BOOTLOADERS_ENV: &str = "APPLIANCE_BOOTLOADERS";
pub const BLOBS_ENV: &str = "APPLIANCE_BLOBS";
/// Optional: run this daemon binary instead of `<target>/debug/appliance`.
pub const APPLIANCE_BIN_ENV: &str = "APPLIANCE_BIN";

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The example profiles every test config starts from.
pub fn profiles_dir() -> PathBuf {
    workspace_root().join("profiles")
}

/// The cargo profile folder the running test executable lives in (`target/debug`): the test is
/// `target/debug/deps/qemu_matrix-<hash>`.
pub fn build_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .and_then(|deps| {
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent().map(Path::to_path_buf)
            } else {
                Some(deps)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target").join("debug"))
}

/// The target directory (`target/`), parent of `target/debug`.
pub fn target_dir() -> PathBuf {
    let build = build_dir();
    // `target/debug` or `target/<triple>/debug`: look for the folder holding CACHEDIR.TAG.
    build
        .ancestors()
        .skip(1)
        .take(2)
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| build.parent().map(Path::to_path_buf).unwrap_or(build))
}

fn env_or(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => default,
    }
}

pub fn bootloaders_dir() -> PathBuf {
    env_or(BOOTLOADERS_ENV, workspace_root().join("target").join("bootloaders"))
}

pub fn blobs_dir() -> PathBuf {
    env_or(BLOBS_ENV, workspace_root().join("target").join("blobs"))
}

/// `target/qemu-tests/<test>/`, emptied.
pub fn fresh_out_dir(test: &str) -> Result<PathBuf> {
    let dir = target_dir().join("qemu-tests").join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// One line per finished cell, appended by every test: `target/qemu-tests/summary.tsv`.
pub fn summary_file() -> PathBuf {
    target_dir().join("qemu-tests").join("summary.tsv")
}

/// The `appliance` binary: `$APPLIANCE_BIN`, else the release build, `target/release/appliance`,
/// which is what an operator runs: the debug build's lockstep TFTP is measurably slower (GRUB's
/// 33 MB kernel took 5.6–6.3 s instead of 3.8–4.0 s), and the cells' times are compared with a
/// reference. `cargo xtask test` builds it before the tests; when it is missing or older than the
/// daemon's sources it is built here, once per test process, with
/// `cargo build --release -p appliance --bin appliance` (a no-op when it is fresh).
pub fn appliance_bin() -> Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(bin) = std::env::var_os(APPLIANCE_BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("{APPLIANCE_BIN_ENV}={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = built.as_ref() {
        return Ok(bin.clone());
    }
    let bin = target_dir().join("release").join(format!("appliance{}", std::env::consts::EXE_SUFFIX));
    let why = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
        Err(_) => Some("is missing"),
        Ok(bin_time) => newest_source_time().filter(|t| *t > bin_time).map(|_| "is older than its sources"),
    };
    if let Some(why) = why {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("{} {why}: running `cargo build --release -p appliance --bin appliance`", bin.display());
        let status = Command::new(&cargo)
            .args(["build", "--release", "-p", "appliance", "--bin", "appliance"])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir())
            .status()
            .with_context(|| format!("running {cargo:?} build -p appliance"))?;
        if !status.success() {
            bail!(
                "`cargo build --release -p appliance --bin appliance` failed ({status}) and {} {why}; the boot tests \
                 need a current daemon binary (or set {APPLIANCE_BIN_ENV})",
                bin.display()
            );
        }
        if !bin.is_file() {
            bail!("`cargo build -p appliance` succeeded but {} is still missing", bin.display());
        }
    }
    *built = Some(bin.clone());
    Ok(bin)
}

/// The newest modification time among the daemon's sources (`appliance/`, the `core/` it links,
/// `Cargo.lock`): a change to `decide` alone must rebuild the daemon too.
fn newest_source_time() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // Test data does not go into the binary.
                if path.file_name().is_some_and(|n| n == "tests") {
                    continue;
                }
                walk(&path, newest);
            } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(t));
            }
        }
    }
    let root = workspace_root();
    let mut newest = None;
    for dir in ["appliance", "core"] {
        walk(&root.join(dir), &mut newest);
    }
    let lock = std::fs::metadata(root.join("Cargo.lock")).and_then(|m| m.modified()).ok();
    newest.max(lock)
}

// --- prerequisites ---------------------------------------------------------------------------

pub struct Needs<'a> {
    pub client: Client,
    /// dnsmasq for the proxy and off columns.
    pub site_dhcp: bool,
    pub bootloaders: &'a Path,
    pub blobs: &'a Path,
}

/// Everything missing, one line each; empty when the cell can run.
pub fn missing(needs: &Needs<'_>) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root: the boot tests create network namespaces, bridges and taps (run as root)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun: the kernel's tun/tap driver (modprobe tun)".into());
    }
    let mut programs = vec![("ip", "iproute2"), ("timeout", "coreutils")];
    if needs.site_dhcp {
        programs.push(("dnsmasq", "dnsmasq-base"));
    }
    for (program, package) in programs {
        if find_program(program).is_none() {
            missing.push(format!("{program}: install the Debian package {package}"));
        }
    }
    for m in testkit::qemu::firmware::missing(&[needs.client.firmware()], needs.client.extra_files()) {
        missing.push(format!("{}: install the Debian package {}", m.what, m.package));
    }
    // The bootloaders the daemon hands out (`cargo xtask fetch` fills the folder).
    for file in BootFile::bootloaders() {
        let p = needs.bootloaders.join(file.file_name());
        if !p.is_file() {
            missing.push(format!("{}: run `cargo xtask fetch` (bootloaders)", p.display()));
        }
    }
    if !needs.blobs.is_dir() {
        missing.push(format!("{}: run `cargo xtask fetch` (profile artifacts)", needs.blobs.display()));
    }
    missing
}

/// The failure message for a non-empty `missing` list.
pub fn report(missing: &[String]) -> String {
    let mut msg = "cannot run, prerequisites missing (the boot tests fail rather than skip):\n".to_string();
    for m in missing {
        msg.push_str(&format!("  - {m}\n"));
    }
    msg
}
