//! Kernel modules for the initramfs: the wanted modules plus everything they depend on, in an
//! order `insmod` can load them (dependencies first).
//!
//! Debian's kernel package ships no `modules.dep` (its postinst runs depmod), so the
//! dependencies come from each module's own `.modinfo` ELF section (`depends=`, and the
//! `softdep=pre:` modules that exist under that name). Pure apart from reading the files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

/// `name` as the kernel spells module names (dashes and underscores are the same).
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// All loadable modules of a kernel: normalized name → path relative to the modules dir.
pub struct Index {
    pub root: PathBuf,
    pub by_name: BTreeMap<String, PathBuf>,
    pub builtin: BTreeSet<String>,
}

impl Index {
    /// Indexes `<root>` = `/lib/modules/<version>` of an extracted kernel package.
    pub fn scan(root: &Path) -> Result<Index> {
        let mut by_name = BTreeMap::new();
        let mut stack = vec![root.join("kernel")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
                {
                    let rel = path.strip_prefix(root)?.to_path_buf();
                    by_name.insert(normalize(name), rel);
                }
            }
        }
        ensure!(!by_name.is_empty(), "no kernel modules (*.ko) under {}", root.display());
        let builtin = match fs::read_to_string(root.join("modules.builtin")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.rsplit('/').next())
                .filter_map(|f| f.strip_suffix(".ko"))
                .map(normalize)
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        Ok(Index { root: root.to_path_buf(), by_name, builtin })
    }

    /// The modules to load for `wanted`, dependencies first; names built into the kernel are
    /// skipped. An unknown wanted name is an error; an unknown soft dependency is not.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<Module>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            let name = normalize(name);
            if self.builtin.contains(&name) {
                continue;
            }
            if !self.by_name.contains_key(&name) {
                bail!("there is no kernel module named {name:?} (neither loadable nor built in)");
            }
            self.visit(&name, &mut done, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        out: &mut Vec<Module>,
    ) -> Result<()> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!("kernel module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        let rel = self.by_name.get(name).with_context(|| {
            format!(
                "kernel module {:?} needs {name:?}, which is not in the package",
                path.last().unwrap_or(&String::new())
            )
        })?;
        let info = modinfo(&self.root.join(rel))?;
        path.push(name.to_owned());
        for dep in info.softdeps_pre.iter().filter(|d| self.by_name.contains_key(*d)) {
            self.visit(dep, done, path, out)?;
        }
        for dep in &info.depends {
            self.visit(dep, done, path, out)?;
        }
        path.pop();
        done.insert(name.to_owned());
        out.push(Module { name: name.to_owned(), rel: rel.clone() });
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Relative to `/lib/modules/<version>`.
    pub rel: PathBuf,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub depends: Vec<String>,
    pub softdeps_pre: Vec<String>,
}

/// Reads the `.modinfo` section of a module file.
pub fn modinfo(path: &Path) -> Result<ModInfo> {
    let data = fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    parse_modinfo(&data).with_context(|| format!("{} is not a kernel module we can read", path.display()))
}

fn parse_modinfo(data: &[u8]) -> Result<ModInfo> {
    let section = elf_section(data, ".modinfo")?.context("no .modinfo section")?;
    let mut info = ModInfo::default();
    for field in section.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let field = String::from_utf8_lossy(field);
        if let Some(deps) = field.strip_prefix("depends=") {
            info.depends.extend(deps.split(',').filter(|d| !d.is_empty()).map(normalize));
        } else if let Some(soft) = field.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => info.softdeps_pre.push(normalize(w)),
                    _ => {}
                }
            }
        }
    }
    Ok(info)
}

/// The bytes of the named section of a little-endian ELF64 file.
fn elf_section<'a>(data: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>> {
    ensure!(data.len() >= 64 && &data[0..4] == b"\x7fELF", "not an ELF file");
    ensure!(data[4] == 2 && data[5] == 1, "not a little-endian 64-bit ELF file");
    let u16_at = |o: usize| -> Result<u64> {
        Ok(u64::from(u16::from_le_bytes(data.get(o..o + 2).context("truncated ELF")?.try_into()?)))
    };
    let u32_at = |o: usize| -> Result<u64> {
        Ok(u64::from(u32::from_le_bytes(data.get(o..o + 4).context("truncated ELF")?.try_into()?)))
    };
    let u64_at =
        |o: usize| -> Result<u64> { Ok(u64::from_le_bytes(data.get(o..o + 8).context("truncated ELF")?.try_into()?)) };
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    ensure!(shentsize >= 64 && shstrndx < shnum, "bad ELF section table");
    let section = |i: usize| -> Result<(u64, &'a [u8])> {
        let h = shoff + i * shentsize;
        let name = u32_at(h)?;
        let offset = u64_at(h + 24)? as usize;
        let size = u64_at(h + 32)? as usize;
        let bytes = data.get(offset..offset + size).context("ELF section past the end of the file")?;
        Ok((name, bytes))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, bytes) = section(i)?;
        let name = names.get(name_off as usize..).context("bad section name")?;
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut data = vec![0u8; 64];
        data[0..4].copy_from_slice(b"\x7fELF");
        data[4] = 2;
        data[5] = 1;
        let names_off = data.len();
        data.extend_from_slice(names);
        let info_off = data.len();
        data.extend_from_slice(modinfo);
        let shoff = data.len();
        let mut header = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            data.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, names_off, names.len());
        header(11, info_off, modinfo.len());
        data[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        data[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        data[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        data[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        data
    }

    #[test]
    fn reads_depends_and_pre_softdeps() {
        let m = fake_module(b"license=GPL\0depends=jbd2,mbcache,crc16\0softdep=pre: crc32c post: x\0");
        let info = parse_modinfo(&m).unwrap();
        assert_eq!(info.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(info.softdeps_pre, ["crc32c"]);
        assert!(parse_modinfo(b"not elf").is_err());
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("kernel/x")).unwrap();
        let write =
            |name: &str, info: &[u8]| fs::write(root.join(format!("kernel/x/{name}.ko")), fake_module(info)).unwrap();
        write("ext4", b"depends=jbd2,mbcache\0softdep=pre: crc32c-generic\0");
        write("jbd2", b"depends=\0");
        write("mbcache", b"depends=\0");
        write("crc32c_generic", b"depends=\0");
        write("e1000e", b"depends=ptp\0");
        write("ptp", b"depends=pps_core\0");
        fs::write(root.join("modules.builtin"), "kernel/x/pps_core.ko\n").unwrap();
        let index = Index::scan(root).unwrap();
        let names: Vec<String> =
            index.closure(&["e1000e".into(), "ext4".into()]).unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["ptp", "e1000e", "crc32c_generic", "jbd2", "mbcache", "ext4"]);
        let err = index.closure(&["nope".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("\"nope\""));
    }
}
