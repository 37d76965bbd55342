//! File system images without root, mounts or loop devices: FAT (the ESP) with mtools, ext4
//! (the data partition) with mke2fs and debugfs. Both are reproducible: entries are added in
//! sorted order, every timestamp is the build's SOURCE_DATE_EPOCH, owners are root, modes are
//! normalised (0755 directories and executables, 0644 other files), and serial numbers, UUIDs
//! and the directory hash seed are derived from the image's inputs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

/// One entry of a staged tree, relative to its root, with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir(String),
    File { rel: String, path: PathBuf, size: u64, exec: bool },
}

/// The tree under `root` in sorted order (parents before children). Symlinks and special
/// files are refused: they have no place on the ESP, and the data partition does not need them.
pub fn walk(root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_into(root, root, &mut out)?;
    Ok(out)
}

fn walk_into(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let mut children: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .map(|e| {
            let e = e?;
            Ok((e.file_name().to_string_lossy().into_owned(), e.path()))
        })
        .collect::<std::io::Result<_>>()?;
    children.sort();
    for (name, path) in children {
        ensure!(
            !name.contains(['"', '\n', '\\']),
            "{}: file names with quotes, backslashes or newlines are not supported",
            path.display()
        );
        let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            out.push(Entry::Dir(rel));
            walk_into(root, &path, out)?;
        } else if meta.is_file() {
            let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
            out.push(Entry::File { rel, path, size: meta.len(), exec });
        } else {
            bail!("{} is not a regular file or directory", path.display());
        }
    }
    Ok(())
}

/// Bytes the entries take in whole `block`-sized blocks (directories one block each).
pub fn allocated(entries: &[Entry], block: u64) -> u64 {
    entries
        .iter()
        .map(|e| match e {
            Entry::Dir(_) => block,
            Entry::File { size, .. } => size.div_ceil(block).max(1) * block,
        })
        .sum()
}

/// Files whose content (and executable bit) equals an earlier file's: path -> that earlier
/// path. Only files sharing a size are hashed.
pub fn duplicates(entries: &[Entry]) -> Result<BTreeMap<String, String>> {
    let mut by_size: BTreeMap<(u64, bool), Vec<(&String, &PathBuf)>> = BTreeMap::new();
    for e in entries {
        if let Entry::File { rel, path, size, exec } = e {
            if *size > 0 {
                by_size.entry((*size, *exec)).or_default().push((rel, path));
            }
        }
    }
    let mut out = BTreeMap::new();
    for group in by_size.values().filter(|g| g.len() > 1) {
        let mut first: BTreeMap<String, &String> = BTreeMap::new();
        for (rel, path) in group {
            let sha = crate::debian::sha256_file(path)?;
            match first.get(&sha) {
                Some(f) => {
                    out.insert((*rel).clone(), (*f).clone());
                }
                None => {
                    first.insert(sha, rel);
                }
            }
        }
    }
    Ok(out)
}

/// Like `allocated`, counting duplicate files once (they become hard links).
pub fn allocated_unique(entries: &[Entry], block: u64) -> Result<u64> {
    let dups = duplicates(entries)?;
    let unique: Vec<Entry> =
        entries.iter().filter(|e| !matches!(e, Entry::File { rel, .. } if dups.contains_key(rel))).cloned().collect();
    Ok(allocated(&unique, block))
}

fn set_mtime(path: &Path, epoch: u64) -> Result<()> {
    let file =
        fs::File::options().write(true).open(path).with_context(|| format!("failed to open {}", path.display()))?;
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch))
        .with_context(|| format!("failed to set the time of {}", path.display()))
}

/// A FAT32 file system of `sectors` 512-byte sectors in `image`, holding the tree under `root`.
pub struct Fat<'a> {
    pub root: &'a Path,
    pub image: &'a Path,
    pub sectors: u64,
    /// The partition's first LBA (the BPB's hidden sectors).
    pub hidden: u64,
    pub serial: u32,
    pub label: &'a str,
    pub epoch: u64,
}

impl Fat<'_> {
    pub fn build(&self, sh: &Shell) -> Result<()> {
        let image = self.image;
        let _ = fs::remove_file(image);
        fs::File::create(image)?.set_len(self.sectors * 512)?;
        let sectors = self.sectors.to_string();
        let hidden = self.hidden.to_string();
        let serial = format!("{:08x}", self.serial);
        let label = self.label;
        let epoch = self.epoch.to_string();
        // mtools reads no user or system config (MTOOLSRC), skips its geometry sanity check,
        // and takes every timestamp it writes from SOURCE_DATE_EPOCH.
        let env = [("MTOOLSRC", "/dev/null"), ("MTOOLS_SKIP_CHECK", "1"), ("SOURCE_DATE_EPOCH", epoch.as_str())];
        let mut c =
            cmd!(sh, "mformat -i {image} -F -c 1 -T {sectors} -h 64 -s 32 -H {hidden} -N {serial} -v {label} ::")
                .quiet();
        for (k, v) in env {
            c = c.env(k, v);
        }
        c.run().context("mformat failed to create the ESP file system")?;
        for entry in walk(self.root)? {
            let mut c = match &entry {
                Entry::Dir(rel) => {
                    let target = format!("::/{rel}");
                    cmd!(sh, "mmd -i {image} {target}")
                }
                Entry::File { rel, path, .. } => {
                    set_mtime(path, self.epoch)?;
                    let target = format!("::/{rel}");
                    cmd!(sh, "mcopy -m -i {image} {path} {target}")
                }
            }
            .quiet();
            for (k, v) in env {
                c = c.env(k, v);
            }
            c.run().with_context(|| format!("mtools failed to add {entry:?} to the ESP"))?;
        }
        Ok(())
    }
}

/// An ext4 file system of `bytes` in `image`, holding the tree under `root`.
pub struct Ext4<'a> {
    pub root: &'a Path,
    pub image: &'a Path,
    pub bytes: u64,
    pub label: &'a str,
    pub uuid: String,
    pub hash_seed: String,
    pub epoch: u64,
    /// Directory for the generated mke2fs.conf and debugfs script.
    pub work: &'a Path,
}

/// Fixed mke2fs settings, so that a host's /etc/mke2fs.conf does not change the result.
const MKE2FS_CONF: &str = "\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
	reserved_ratio = 0

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
	}
	floppy = {
	}
";

impl Ext4<'_> {
    pub fn build(&self, sh: &Shell) -> Result<()> {
        let image = self.image;
        let _ = fs::remove_file(image);
        fs::File::create(image)?.set_len(self.bytes)?;
        let conf = self.work.join("mke2fs.conf");
        fs::write(&conf, MKE2FS_CONF)?;
        let entries = walk(self.root)?;
        let inodes = super::layout::inodes(entries.len() as u64).to_string();
        let epoch = self.epoch.to_string();
        let (label, uuid) = (self.label, &self.uuid);
        let extended =
            format!("root_owner=0:0,hash_seed={},lazy_itable_init=0,lazy_journal_init=0,nodiscard", self.hash_seed);
        cmd!(sh, "mke2fs -q -F -t ext4 -L {label} -U {uuid} -E {extended} -N {inodes} -J size=4 {image}")
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", &epoch)
            .env("SOURCE_DATE_EPOCH", &epoch)
            .quiet()
            .run()
            .context("mke2fs failed to create the data file system")?;

        // debugfs adds the files one by one in sorted order (mke2fs -d would follow the host
        // directory order and copy the host's ctimes), then fixes owner, mode and times.
        let mut script = String::new();
        let mut fix = |rel: &str, mode: u32| {
            let p = if rel.is_empty() { "/".to_owned() } else { format!("\"/{rel}\"") };
            script.push_str(&format!("sif {p} mode 0{mode:o}\nsif {p} uid 0\nsif {p} gid 0\n"));
            for field in ["atime", "mtime", "ctime", "crtime"] {
                script.push_str(&format!("sif {p} {field} @{epoch}\nsif {p} {field}_extra 0\n"));
            }
        };
        // Identical files (the same kernel in several profiles' artifact sets) become hard links
        // to one inode: the store never modifies a file in place.
        let duplicates = duplicates(&entries)?;
        let mut links: BTreeMap<String, u32> = BTreeMap::new();
        let mut adds = String::new();
        for e in &entries {
            match e {
                Entry::Dir(rel) => adds.push_str(&format!("mkdir \"/{rel}\"\n")),
                Entry::File { rel, path, .. } => match duplicates.get(rel) {
                    Some(first) => {
                        adds.push_str(&format!("ln \"/{first}\" \"/{rel}\"\n"));
                        *links.entry(first.clone()).or_insert(1) += 1;
                    }
                    None => adds.push_str(&format!("write \"{}\" \"/{rel}\"\n", path.display())),
                },
            }
        }
        // debugfs `ln` leaves the link count alone.
        for (first, count) in &links {
            adds.push_str(&format!("sif \"/{first}\" links_count {count}\n"));
        }
        fix("", 0o040755);
        fix("lost+found", 0o040700);
        for e in &entries {
            match e {
                Entry::Dir(rel) => fix(rel, 0o040755),
                Entry::File { rel, exec, .. } => fix(rel, if *exec { 0o100755 } else { 0o100644 }),
            }
        }
        let cmds = self.work.join("debugfs.cmds");
        fs::write(&cmds, format!("{adds}{script}"))?;
        let out = cmd!(sh, "debugfs -w -f {cmds} {image}")
            .env("E2FSPROGS_FAKE_TIME", &epoch)
            .quiet()
            .ignore_status()
            .output()
            .context("failed to run debugfs")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // debugfs prints its banner and echoes commands; real failures are lines naming an error.
        let problems: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                (l.contains("error") || l.contains("could not") || l.contains("not found") || l.contains("no space"))
                    && !l.starts_with("debugfs ")
            })
            .collect();
        ensure!(
            out.status.success() && problems.is_empty(),
            "debugfs failed to fill the data file system: {}",
            problems.join("; ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/kernel"), vec![7u8; 10_000]).unwrap();
        fs::write(dir.join("a/same-kernel"), vec![7u8; 10_000]).unwrap();
        fs::write(dir.join("config.yaml"), "x: 1\n").unwrap();
        fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        let mut perm = fs::metadata(dir.join("run.sh")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o750);
        fs::set_permissions(dir.join("run.sh"), perm).unwrap();
    }

    /// Building twice (the sources touched in between) gives the same bytes, and the result
    /// checks clean; identical files share an inode.
    #[test]
    fn fat_and_ext4_are_reproducible() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        tree(&root);
        let walked = walk(&root).unwrap();
        assert_eq!(duplicates(&walked).unwrap().get("a/same-kernel").map(String::as_str), Some("a/b/kernel"));
        let mut images = Vec::new();
        for round in 0..2 {
            if round == 1 {
                std::thread::sleep(Duration::from_millis(1100));
                fs::write(root.join("config.yaml"), "x: 1\n").unwrap(); // new mtime and ctime
            }
            let fat = dir.path().join(format!("fat{round}.img"));
            Fat {
                root: &root,
                image: &fat,
                sectors: 70_000,
                hidden: 2048,
                serial: 0x1234_abcd,
                label: "TEST",
                epoch: 1_700_000_000,
            }
            .build(&sh)
            .unwrap();
            let ext = dir.path().join(format!("ext{round}.img"));
            Ext4 {
                root: &root,
                image: &ext,
                bytes: 16 << 20,
                label: "test-data",
                uuid: "6f1d3a7e-0000-4000-8000-000000000001".into(),
                hash_seed: "6f1d3a7e-0000-4000-8000-000000000002".into(),
                epoch: 1_700_000_000,
                work: dir.path(),
            }
            .build(&sh)
            .unwrap();
            images.push((fs::read(&fat).unwrap(), fs::read(&ext).unwrap(), ext));
        }
        assert!(images[0].0 == images[1].0, "FAT images differ");
        assert!(images[0].1 == images[1].1, "ext4 images differ");
        let ext = &images[0].2;
        let fsck = cmd!(sh, "e2fsck -fn {ext}").quiet().ignore_status().output().unwrap();
        assert!(fsck.status.success(), "e2fsck: {}", String::from_utf8_lossy(&fsck.stdout));
        let stat = cmd!(sh, "debugfs -R 'stat /a/same-kernel' {ext}").quiet().ignore_stderr().read().unwrap();
        assert!(stat.contains("Links: 2"), "{stat}");
        let stat = cmd!(sh, "debugfs -R 'stat /run.sh' {ext}").quiet().ignore_stderr().read().unwrap();
        assert!(stat.contains("Mode:  0755") && stat.contains("User:     0"), "{stat}");
        let fat = dir.path().join("fat0.img");
        let listing = cmd!(sh, "mdir -i {fat} ::/a/b").env("MTOOLSRC", "/dev/null").quiet().read().unwrap();
        assert!(listing.contains("kernel") && listing.contains("2023-11-14"), "{listing}");
    }
}
