//! The config directory each test serves: a copy of the example `profiles/` with the DHCP mode
//! set, the test's machines and vendor rules added to `machines.yaml`, and optionally a short
//! menu timeout. Loaded with `appliance::config_dir::load`, so the test knows the exact artifact
//! version the daemon will hand out.

use anyhow::{anyhow, bail, Context, Result};
use appliance_core::arch::Arch;
use appliance_core::catalog::{Catalog, DhcpMode, Source};
use serde_yaml::{Mapping, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// What a test changes in the example profiles.
#[derive(Clone, Debug, Default)]
pub struct ConfigSpec {
    pub mode: DhcpMode,
    /// Every menu's timeout, in seconds (the shipped menu waits 10 s).
    pub menu_timeout_secs: Option<u32>,
    /// `(MAC, YAML mapping)` entries for `machines:`, e.g.
    /// `("52:54:00:4d:00:01", "{ hostname: t1, profile: tiny-live }")`.
    pub machines: Vec<(String, String)>,
    /// YAML mappings appended to `vendors:`, e.g. `"{ oui: '52:54:01', arch: arm64 }"`.
    pub vendors: Vec<String>,
    /// `(MAC, YAML mapping)`: keys set in that machine's `vars` (an example entry of
    /// `profiles/machines.yaml` keeps everything else).
    pub machine_vars: Vec<(String, String)>,
}

pub struct TestConfig {
    pub dir: PathBuf,
    pub catalog: Catalog,
}

impl TestConfig {
    /// Copies `profiles` to `dir` with `spec` applied and loads it.
    pub fn build(profiles: &Path, dir: &Path, spec: &ConfigSpec) -> Result<TestConfig> {
        copy_tree(profiles, dir)?;
        edit_yaml(&dir.join("appliance.yaml"), |doc| {
            let server = child_map(doc, "server")?;
            server.insert("address".into(), testkit::lab::SERVER_IP.into());
            let dhcp = child_map(doc, "dhcp")?;
            dhcp.insert("mode".into(), spec.mode.to_string().into());
            Ok(())
        })?;
        edit_yaml(&dir.join("machines.yaml"), |doc| {
            let machines = child_map(doc, "machines")?;
            for (mac, entry) in &spec.machines {
                let value: Value =
                    serde_yaml::from_str(entry).with_context(|| format!("test machine {mac}: {entry}"))?;
                machines.insert(mac.as_str().into(), value);
            }
            for (mac, vars) in &spec.machine_vars {
                let set: Mapping =
                    serde_yaml::from_str(vars).with_context(|| format!("test vars for machine {mac}: {vars}"))?;
                let entry = machines
                    .get_mut(mac.as_str())
                    .ok_or_else(|| anyhow!("test vars for machine {mac}: machines.yaml has no such entry"))?;
                child_map(entry, "vars")?.extend(set);
            }
            let vendors = doc
                .as_mapping_mut()
                .ok_or_else(|| anyhow!("machines.yaml is not a mapping"))?
                .entry("vendors".into())
                .or_insert_with(|| Value::Sequence(Vec::new()));
            let Value::Sequence(list) = vendors else { bail!("machines.yaml: vendors is not a list") };
            for rule in &spec.vendors {
                list.push(serde_yaml::from_str(rule).with_context(|| format!("test vendor rule {rule}"))?);
            }
            Ok(())
        })?;
        if let Some(secs) = spec.menu_timeout_secs {
            edit_yaml(&dir.join("menus.yaml"), |doc| {
                for (_, menu) in child_map(doc, "menus")?.iter_mut() {
                    if let Value::Mapping(m) = menu {
                        m.insert("timeout".into(), secs.into());
                    }
                }
                Ok(())
            })?;
        }
        let catalog = appliance::config_dir::load(dir, None)
            .map_err(|errs| anyhow!("the test config in {} does not load:\n{errs}", dir.display()))?;
        Ok(TestConfig { dir: dir.to_path_buf(), catalog })
    }

    /// The version the catalog computes for `profile` on `arch`: what the marker must name.
    pub fn version(&self, profile: &str, arch: Arch) -> Result<String> {
        let p = self.catalog.profile(profile).ok_or_else(|| anyhow!("the test config has no profile {profile}"))?;
        let set = p.arches.get(&arch).ok_or_else(|| anyhow!("profile {profile} has no {arch} artifacts"))?;
        Ok(set.version.clone())
    }

    /// Fetched bytes (`deb`/`url` sources, also inside cpio initrds) missing from `blobs`.
    pub fn missing_blobs(&self, blobs: &Path) -> Vec<String> {
        let mut missing = Vec::new();
        for profile in self.catalog.profiles() {
            for (arch, set) in &profile.arches {
                for artifact in set.files() {
                    let mut sources = vec![&artifact.source];
                    if let Source::Cpio { entries, .. } = &artifact.source {
                        for e in entries {
                            if let appliance_core::catalog::CpioSource::File { source, .. } = &e.source {
                                sources.push(source);
                            }
                        }
                    }
                    for s in sources {
                        let (sha, what) = match s {
                            Source::Deb { package, file, sha256, .. } => (sha256, format!("{file} from {package}")),
                            Source::Url { url, sha256 } => (sha256, url.clone()),
                            _ => continue,
                        };
                        let hex = hex::encode(sha);
                        if !blobs.join(&hex).is_file() {
                            missing.push(format!("{}/{arch}: {what} (sha256 {hex})", profile.name));
                        }
                    }
                }
            }
        }
        missing.sort();
        missing.dedup();
        missing
    }
}

fn child_map<'a>(doc: &'a mut Value, key: &str) -> Result<&'a mut Mapping> {
    let map = doc.as_mapping_mut().ok_or_else(|| anyhow!("not a YAML mapping where {key} should be"))?;
    let child = map.entry(key.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
    child.as_mapping_mut().ok_or_else(|| anyhow!("{key} is not a mapping"))
}

fn edit_yaml(path: &Path, edit: impl FnOnce(&mut Value) -> Result<()>) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    edit(&mut doc).with_context(|| format!("editing {}", path.display()))?;
    let out = format!("# written by the boot tests from {}\n{}", path.display(), serde_yaml::to_string(&doc)?);
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Copies regular files and folders (the example profiles have no symlinks; any would be
/// copied as what they point to, which `config::load` would then see as plain files).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::mac::MacAddr;

    /// `machine_vars` sets keys of an example entry's `vars` and keeps the rest of the entry.
    #[test]
    fn machine_vars_are_merged_into_the_example_entry() {
        let mac = "52:54:00:77:00:13"; // deb-uboot: arm64, with vars of its own
        let dir = tempfile::tempdir().unwrap();
        let spec = ConfigSpec {
            machine_vars: vec![(mac.into(), "{ mirror: { hostname: 10.77.0.1, directory: /debian } }".into())],
            ..ConfigSpec::default()
        };
        let config = TestConfig::build(&crate::host::profiles_dir(), &dir.path().join("c"), &spec).unwrap();
        let m = config.catalog.machine(MacAddr::parse(mac).unwrap()).unwrap();
        assert_eq!(m.hostname, "deb-uboot");
        assert_eq!(m.vars["mirror"]["hostname"], "10.77.0.1");
        assert_eq!(m.vars["locale"], "en_GB.UTF-8", "the entry's other vars stay");
        let unknown = ConfigSpec { machine_vars: vec![("52:54:00:ff:ff:ff".into(), "{ a: 1 }".into())], ..spec };
        let err = TestConfig::build(&crate::host::profiles_dir(), &dir.path().join("d"), &unknown).err().unwrap();
        assert!(format!("{err:#}").contains("no such entry"), "{err:#}");
    }
}
