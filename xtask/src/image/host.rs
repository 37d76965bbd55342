//! What the image build needs from the host: tools (installed on the spot when we are root on
//! Debian), the daemon built in release mode, and the shared libraries it loads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::project_root;

/// A host tool and the Debian package that ships it.
pub struct Tool {
    pub command: &'static str,
    pub package: &'static str,
}

pub const IMAGE_TOOLS: &[Tool] = &[
    Tool { command: "apt-get", package: "apt" },
    Tool { command: "dpkg-deb", package: "dpkg" },
    Tool { command: "grub-mkimage", package: "grub-common" },
    Tool { command: "mformat", package: "mtools" },
    Tool { command: "mmd", package: "mtools" },
    Tool { command: "mcopy", package: "mtools" },
    Tool { command: "mke2fs", package: "e2fsprogs" },
    Tool { command: "debugfs", package: "e2fsprogs" },
    Tool { command: "qemu-img", package: "qemu-utils" },
    Tool { command: "ldd", package: "libc-bin" },
];

pub fn have(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]).any(|dir| {
        let p = dir.join(command);
        p.is_file()
            && std::fs::metadata(&p)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                .unwrap_or(false)
    })
}

fn is_root() -> bool {
    // `id -u` without libc: the owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Makes sure every tool is there. Missing ones are installed with apt-get when running as
/// root on a Debian system, otherwise the error names the packages to install.
pub fn ensure_tools(sh: &Shell, tools: &[Tool]) -> Result<()> {
    let missing: Vec<&Tool> = tools.iter().filter(|t| !have(t.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (list, packages) = describe(&missing);
    if !is_root() || !have("apt-get") {
        bail!("{}", missing_message(&missing));
    }
    println!("installing missing host tools: {list}");
    let install = || {
        let packages = packages.clone();
        cmd!(sh, "apt-get -q -y -o Dpkg::Use-Pty=0 install --no-install-recommends {packages...}")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
    };
    if install().is_err() {
        println!("apt-get install failed; refreshing the package lists and trying again");
        cmd!(sh, "apt-get -q -y update").run().context("apt-get update failed")?;
        install().with_context(|| format!("`apt-get install {}` failed", packages.join(" ")))?;
    }
    let still: Vec<&str> = missing.iter().filter(|t| !have(t.command)).map(|t| t.command).collect();
    if !still.is_empty() {
        bail!("installed {} but still cannot find {}", packages.join(" "), still.join(", "));
    }
    Ok(())
}

/// `tool (Debian package p), ...` and the package names.
fn describe(missing: &[&Tool]) -> (String, Vec<&'static str>) {
    let packages: BTreeSet<&'static str> = missing.iter().map(|t| t.package).collect();
    let list = missing.iter().map(|t| format!("{} (Debian package {})", t.command, t.package)).collect::<Vec<_>>();
    (list.join(", "), packages.into_iter().collect())
}

pub fn missing_message(missing: &[&Tool]) -> String {
    let (list, packages) = describe(missing);
    format!(
        "missing host tools: {list}; install them with `sudo apt-get install --no-install-recommends {}`",
        packages.join(" ")
    )
}

/// Which build of the daemon goes into the image.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DaemonProfile {
    /// `cargo build --release`, without debug info and stripped (what an appliance should run).
    #[default]
    Release,
    /// The workspace's ordinary debug build, stripped: what `cargo test --workspace` has
    /// already built, so tests on a cold cache skip a release build of the whole dependency tree.
    Dev,
}

/// Where the release daemon is built: its own target directory, so that building it stripped
/// and without debug info neither rebuilds nor replaces `target/release` (whose profile keeps
/// line tables; changing `strip` or `debug` rebuilds every dependency).
pub fn daemon_target_dir() -> PathBuf {
    project_root().join("target/image-build")
}

/// Builds `appliance` and returns a stripped binary (in `work`).
pub fn build_daemon(sh: &Shell, profile: DaemonProfile, work: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = project_root();
    let _dir = sh.push_dir(&root);
    match profile {
        DaemonProfile::Release => {
            let target = daemon_target_dir();
            cmd!(sh, "{cargo} build --release -p appliance --bin appliance --target-dir {target}")
                .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
                .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
                .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .run()
                .context("building the daemon (`cargo build --release -p appliance`) failed")?;
            let bin = target.join("release/appliance");
            if !bin.is_file() {
                bail!("cargo did not produce {}", bin.display());
            }
            Ok(bin)
        }
        DaemonProfile::Dev => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
            cmd!(sh, "{cargo} build -p appliance --bin appliance --target-dir {target}")
                .run()
                .context("building the daemon (`cargo build -p appliance`) failed")?;
            let bin = target.join("debug/appliance");
            let out = work.join("appliance");
            cmd!(sh, "strip -o {out} {bin}").quiet().run().context("strip (binutils) failed on the debug daemon")?;
            Ok(out)
        }
    }
}

/// A shared library the daemon loads, by its absolute path on the host (the same path it gets
/// in the image) and the file that path resolves to.
#[derive(Debug, Clone)]
pub struct Library {
    pub path: String,
    pub file: PathBuf,
}

/// The libraries and program interpreter `ldd` lists for `binary`.
pub fn shared_libraries(sh: &Shell, binary: &Path) -> Result<Vec<Library>> {
    let out = cmd!(sh, "ldd {binary}").quiet().read().with_context(|| format!("`ldd {}` failed", binary.display()))?;
    parse_ldd(&out)
        .into_iter()
        .map(|path| {
            let file = std::fs::canonicalize(&path).with_context(|| format!("library {path} not found"))?;
            Ok(Library { path, file })
        })
        .collect()
}

fn parse_ldd(text: &str) -> Vec<String> {
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.insert(path.to_owned());
        }
    }
    libs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib64/ld-linux-x86-64.so.2"]
        );
    }

    #[test]
    fn missing_tool_names_its_package() {
        let tools = [Tool { command: "qemu-img", package: "qemu-utils" }, Tool { command: "mcopy", package: "mtools" }];
        let msg = missing_message(&tools.iter().collect::<Vec<_>>());
        assert_eq!(
            msg,
            "missing host tools: qemu-img (Debian package qemu-utils), mcopy (Debian package mtools); \
             install them with `sudo apt-get install --no-install-recommends mtools qemu-utils`"
        );
        assert!(have("sh"));
        assert!(!have("no-such-tool-xyz"));
    }
}
