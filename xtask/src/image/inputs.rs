//! The image's inputs: the recipe and the config as the appliance gets them (the recipe's DHCP
//! settings written in), and the pinned Debian packages the appliance itself is made of
//! (kernel, busybox, GRUB), unpacked, with the recipe's bootloaders on the data partition.

use std::fs as stdfs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use appliance_core::catalog::Catalog;
use xshell::{cmd, Shell};

use super::recipe::{self, Recipe};
use crate::debian::{self, Lock, Pin};
use crate::project_root;

/// A relative input path: from the current directory if it exists there, else from the
/// workspace root (so `cargo xtask image` works from any directory of the checkout).
pub fn input_path(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        p.to_path_buf()
    } else {
        project_root().join(p)
    }
}

/// The recipe and the config as the appliance gets them.
pub struct Config {
    pub recipe: Recipe,
    /// The config from `data/config` (the recipe's DHCP settings written in, the overlay merged).
    pub catalog: Catalog,
    /// The recipe's on-site overlay, as `data/overlay.yaml`.
    pub overlay: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: every timestamp in the image.
    pub epoch: u64,
}

/// Validates the recipe and its config, checks the host tools, and writes the config into the
/// data partition's tree (`data/config`, `data/overlay.yaml`).
pub fn config(sh: &Shell, recipe_path: &Path, data: &Path) -> Result<Config> {
    let recipe = recipe::load(recipe_path)
        .map_err(|e| anyhow::anyhow!("{e}\n{} error(s) in the recipe {}", e.0.len(), recipe_path.display()))?;
    // The config as it is in the repository: errors name the operator's files.
    appliance::config_dir::load(&recipe.config, recipe.overlay.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} error(s) in the config {} (`appliance check` says the same)",
            e.0.len(),
            recipe.config.display()
        )
    })?;
    let epoch = source_date_epoch(sh);
    println!(
        "  recipe {} ({}), config {}, SOURCE_DATE_EPOCH={epoch}",
        recipe.name,
        recipe_path.display(),
        recipe.config.display()
    );

    // The config as the appliance gets it, with the recipe's DHCP overrides written in.
    let config_dir = data.join("config");
    copy_tree(&recipe.config, &config_dir)?;
    let overridden = apply_dhcp_overrides(&recipe, &config_dir)?;
    let overlay = match &recipe.overlay {
        Some(o) => {
            let dest = data.join("overlay.yaml");
            stdfs::copy(o, &dest).with_context(|| format!("failed to copy {}", o.display()))?;
            Some(dest)
        }
        None => None,
    };
    let catalog = appliance::config_dir::load(&config_dir, overlay.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} error(s) in the config after applying the recipe's dhcp settings ({})",
            e.0.len(),
            overridden.join(", ")
        )
    })?;
    recipe.check_against(&catalog).map_err(|e| anyhow::anyhow!("{e}\n{} error(s) in the recipe", e.0.len()))?;
    Ok(Config { recipe, catalog, overlay, epoch })
}

/// The pinned packages the appliance is made of, unpacked.
pub struct Pinned {
    pub lock: Lock,
    /// Debian's generic amd64 kernel.
    pub kernel_pin: Pin,
    pub kernel: PathBuf,
    pub busybox: PathBuf,
    pub grub_pc: PathBuf,
    pub grub_efi: PathBuf,
    /// `data/bootloaders`: the recipe's bootloaders and their SOURCES lines.
    pub bootloaders: PathBuf,
}

/// Runs `cargo xtask fetch`, unpacks the appliance's own packages and copies the recipe's
/// bootloaders into the data partition's tree.
pub fn pinned(sh: &Shell, recipe: &Recipe, data: &Path) -> Result<Pinned> {
    crate::fetch::fetch(&crate::fetch::Args {
        out: None,
        update_lock: false,
        all_packages: false,
        config: recipe.config.canonicalize()?,
        blobs: None,
    })?;
    let lock = Lock::load()?;
    let kernel_pin = lock
        .pins()
        .iter()
        .find(|p| {
            p.arch == "amd64"
                && p.name.starts_with("linux-image-")
                && p.name.ends_with("-amd64")
                && !p.name.contains("cloud")
        })
        .cloned()
        .with_context(|| {
            format!(
                "no generic amd64 kernel (linux-image-<version>-amd64, from linux-image-amd64) is pinned in {}; \
                 run `cargo xtask fetch --update-lock`",
                debian::LOCK_PATH
            )
        })?;
    println!("packages for the appliance itself:");
    let kernel = extracted(sh, &lock, &kernel_pin.name, "amd64")?;
    let busybox = extracted(sh, &lock, "busybox-static", "amd64")?;
    let grub_pc = extracted(sh, &lock, "grub-pc-bin", "amd64")?;
    let grub_efi = extracted(sh, &lock, "grub-efi-amd64-bin", "amd64")?;

    let bootloaders = data.join("bootloaders");
    copy_bootloaders(&recipe.bootloaders, &crate::fetch::default_out_dir(), &bootloaders)?;
    Ok(Pinned { lock, kernel_pin, kernel, busybox, grub_pc, grub_efi, bootloaders })
}

/// SOURCE_DATE_EPOCH from the environment, else the time of the last commit, else the day
/// Debian 12 was released.
fn source_date_epoch(sh: &Shell) -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return v;
    }
    let root = project_root();
    cmd!(sh, "git -C {root} log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_686_355_200)
}

/// An extracted copy of a pinned package in target/cache/extracted (verified download first).
pub fn extracted(sh: &Shell, lock: &Lock, name: &str, arch: &str) -> Result<PathBuf> {
    let pin = lock.get(name, arch)?;
    let deb = debian::ensure_deb(sh, lock, name, arch)?;
    let tree = project_root().join("target/cache/extracted").join(format!(
        "{}_{}_{}",
        pin.name,
        pin.version.replace(':', "%3a"),
        pin.arch
    ));
    if !tree.is_dir() {
        let tmp = tree.with_file_name(format!(
            ".{}.{}.tmp",
            tree.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = stdfs::remove_dir_all(&tmp);
        debian::extract(sh, &deb, &tmp)?;
        if let Err(e) = stdfs::rename(&tmp, &tree) {
            // A concurrent build may have extracted the same package first.
            let _ = stdfs::remove_dir_all(&tmp);
            if !tree.is_dir() {
                return Err(e).with_context(|| format!("failed to move {}", tmp.display()));
            }
        }
    }
    Ok(tree)
}

/// The one directory in `dir` (e.g. the kernel's `lib/modules/<version>`).
pub fn single_dir(dir: &Path) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = stdfs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        n => bail!("expected one directory in {}, found {n}", dir.display()),
    }
}

/// Copies a directory tree (regular files and directories, following symlinks; hidden entries
/// are left out).
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    stdfs::create_dir_all(dest).with_context(|| format!("failed to create {}", dest.display()))?;
    let mut entries: Vec<_> = stdfs::read_dir(src)
        .with_context(|| format!("failed to list {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let from = e.path();
        let to = dest.join(&name);
        let meta = stdfs::metadata(&from).with_context(|| format!("failed to read {}", from.display()))?;
        if meta.is_dir() {
            copy_tree(&from, &to)?;
        } else if meta.is_file() {
            stdfs::copy(&from, &to).with_context(|| format!("failed to copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// Writes the recipe's `dhcp.mode` / `dhcp.pool` into the copied appliance.yaml. Returns what
/// was changed (empty when nothing was).
fn apply_dhcp_overrides(recipe: &Recipe, config: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    if recipe.dhcp_mode.is_none() && recipe.pool.is_none() {
        return Ok(changed);
    }
    let path = config.join(appliance_core::config::SETTINGS_FILE);
    let text = stdfs::read_to_string(&path).unwrap_or_default();
    let mut doc: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("failed to parse {}", path.display()))?
    };
    let root = doc.as_mapping_mut().context("appliance.yaml is not a mapping")?;
    let dhcp = root
        .entry("dhcp".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()))
        .as_mapping_mut()
        .context("appliance.yaml: dhcp is not a mapping")?;
    if let Some(mode) = recipe.dhcp_mode {
        dhcp.insert("mode".into(), mode.to_string().into());
        changed.push(format!("dhcp.mode = {mode}"));
    }
    if let Some((start, end)) = recipe.pool {
        let mut pool = serde_yaml::Mapping::new();
        pool.insert("start".into(), start.to_string().into());
        pool.insert("end".into(), end.to_string().into());
        dhcp.insert("pool".into(), pool.into());
        changed.push(format!("dhcp.pool = {start}..{end}"));
    }
    let body = serde_yaml::to_string(&doc)?;
    let header = format!(
        "# Written by `cargo xtask image` from {}: the repository's appliance.yaml with {}.\n",
        recipe.path.file_name().unwrap_or_default().to_string_lossy(),
        changed.join(", ")
    );
    stdfs::write(&path, header + &body)?;
    Ok(changed)
}

/// Copies the recipe's bootloaders (and their SOURCES lines) from `cargo xtask fetch`'s output.
fn copy_bootloaders(wanted: &[String], from: &Path, to: &Path) -> Result<()> {
    stdfs::create_dir_all(to)?;
    let sources = stdfs::read_to_string(from.join("SOURCES")).unwrap_or_default();
    let mut kept = String::new();
    for line in sources.lines() {
        let file = line.split_whitespace().next().unwrap_or_default();
        if line.starts_with('#') || wanted.iter().any(|w| w == file) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    for name in wanted {
        let src = from.join(name);
        stdfs::copy(&src, to.join(name))
            .with_context(|| format!("bootloader {name} is missing in {}", from.display()))?;
    }
    stdfs::write(to.join("SOURCES"), kept)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every recipe in images/ parses, and validates against its config as the build sees it
    /// (the recipe's DHCP settings written in, the overlay merged).
    #[test]
    fn every_shipped_recipe_validates_against_its_config() {
        let dir = project_root().join("images");
        let mut count = 0;
        for entry in stdfs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let recipe = recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let work = tempfile::tempdir().unwrap();
            let config = work.path().join("config");
            copy_tree(&recipe.config, &config).unwrap();
            apply_dhcp_overrides(&recipe, &config).unwrap();
            let catalog = appliance::config_dir::load(&config, recipe.overlay.as_deref())
                .unwrap_or_else(|e| panic!("{}: config: {e}", path.display()));
            recipe.check_against(&catalog).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
        assert!(count >= 2, "expected default.yaml and proxy.yaml in {}", dir.display());
    }

    #[test]
    fn recipe_dhcp_settings_are_written_into_the_copied_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        copy_tree(&project_root().join("profiles"), &config).unwrap();
        let recipe_path = project_root().join("images/proxy.yaml");
        let recipe = recipe::parse(
            &recipe_path,
            "config: ../profiles\nnetwork: { address: dhcp }\ndhcp: { mode: proxy, pool: { start: 10.77.0.150, end: 10.77.0.160 } }\n",
        )
        .unwrap();
        let changed = apply_dhcp_overrides(&recipe, &config).unwrap();
        assert_eq!(changed, ["dhcp.mode = proxy", "dhcp.pool = 10.77.0.150..10.77.0.160"]);
        let catalog = appliance::config_dir::load(&config, None).unwrap();
        assert_eq!(catalog.settings().dhcp.mode, appliance_core::catalog::DhcpMode::Proxy);
        assert_eq!(catalog.settings().dhcp.pool.unwrap().0.to_string(), "10.77.0.150");
        // Everything else is kept.
        assert_eq!(catalog.settings().dhcp.domain.as_deref(), Some("lab.internal"));
        recipe.check_against(&catalog).unwrap();
    }
}
