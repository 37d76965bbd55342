//! What the image takes from the host: the daemon, built by cargo, and the shared libraries it
//! loads. (The host's Debian packages are `crate::host`'s business, done before the build.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::project_root;

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
}
