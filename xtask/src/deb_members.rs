//! Chosen files of a `.deb`, without unpacking the rest.
//!
//! A profile names a few files of a package, and some packages are mostly other files: the
//! Debian installer's netboot packages are about 130 MB each (every image, text and
//! graphical, with their boot screens) of which a profile wants a kernel and an initrd. So the
//! package's data archive is streamed once through `tar`, which writes only the members asked
//! for. A member that is a symbolic link is followed inside the package: its target is taken
//! in a further pass, as `debian::resolve_in_tree` will look for it there.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::debian::normalize;

/// How many links deep a wanted file may be (as `debian::resolve_in_tree` allows).
const MAX_LINK_ROUNDS: usize = 32;

/// Writes the members `files` of `deb` (package paths, `/` or not in front, `*` allowed in the
/// last component as in a profile's `file`) and whatever links among them point to into `dir`,
/// keeping their paths.
pub fn extract(deb: &Path, dir: &Path, files: &[String]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut wanted: BTreeSet<String> = files.iter().map(|f| f.trim_start_matches('/').to_string()).collect();
    for _ in 0..MAX_LINK_ROUNDS {
        wanted.retain(|f| !done.contains(f));
        if wanted.is_empty() {
            return Ok(());
        }
        untar(deb, dir, &wanted)?;
        let mut next = BTreeSet::new();
        for member in &wanted {
            for path in matches(dir, member)? {
                if let Some(target) = link_target(dir, &path)? {
                    next.insert(target);
                }
            }
        }
        done.extend(std::mem::take(&mut wanted));
        wanted = next;
    }
    bail!("too many levels of symbolic links among {files:?} in {}", deb.display())
}

/// One pass over the package's data: `dpkg-deb --fsys-tarfile` piped into `tar -x`.
fn untar(deb: &Path, dir: &Path, members: &BTreeSet<String>) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run dpkg-deb")?;
    let data = dpkg.stdout.take().context("dpkg-deb has no stdout")?;
    // Debian's data archives name members `./usr/...`; `*` stays inside one component.
    let tar = Command::new("tar")
        .args(["-x", "-f", "-", "-C"])
        .arg(dir)
        .args(["--wildcards", "--no-wildcards-match-slash"])
        .args(members.iter().map(|m| format!("./{m}")))
        .stdin(data)
        .stderr(Stdio::piped())
        .output()
        .context("failed to run tar")?;
    let dpkg = dpkg.wait_with_output().context("failed to wait for dpkg-deb")?;
    if !tar.status.success() {
        bail!(
            "tar could not take {members:?} from {} ({}): {}",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    if !dpkg.status.success() {
        bail!(
            "dpkg-deb --fsys-tarfile {} failed ({}): {}",
            deb.display(),
            dpkg.status,
            String::from_utf8_lossy(&dpkg.stderr).trim()
        );
    }
    Ok(())
}

/// The extracted files `member` names (one, or each a glob matched).
fn matches(dir: &Path, member: &str) -> Result<Vec<PathBuf>> {
    let (parent, name) = member.rsplit_once('/').unwrap_or(("", member));
    let Some((prefix, suffix)) = name.split_once('*') else { return Ok(vec![dir.join(member)]) };
    let listing = fs::read_dir(dir.join(parent)).with_context(|| format!("/{parent} was not extracted"))?;
    Ok(listing
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect())
}

/// The package path a link at `path` (inside `dir`) points to; `None` for anything else.
fn link_target(dir: &Path, path: &Path) -> Result<Option<String>> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("{} was not extracted", path.display()))?;
    if !meta.file_type().is_symlink() {
        return Ok(None);
    }
    let target = fs::read_link(path).with_context(|| format!("failed to read link {}", path.display()))?;
    let rel = path.strip_prefix(dir).context("a member outside the extraction directory")?;
    // Absolute links name the package's root, not the host's.
    let resolved =
        if target.is_absolute() { normalize(&target)? } else { normalize(&rel.with_file_name("").join(target))? };
    Ok(Some(resolved.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small package: a file, a link to it, another file not asked for.
    fn package(root: &Path) -> PathBuf {
        let tree = root.join("tree");
        fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        fs::create_dir_all(tree.join("usr/lib/img/text")).unwrap();
        fs::write(
            tree.join("DEBIAN/control"),
            "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
        )
        .unwrap();
        fs::write(tree.join("usr/lib/img/text/linux"), b"kernel").unwrap();
        fs::write(tree.join("usr/lib/img/text/initrd.gz"), b"initrd").unwrap();
        fs::write(tree.join("usr/lib/img/other"), vec![0u8; 4096]).unwrap();
        std::os::unix::fs::symlink("text/linux", tree.join("usr/lib/img/vmlinuz")).unwrap();
        let deb = root.join("t.deb");
        let ok = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-b"])
            .arg(&tree)
            .arg(&deb)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        deb
    }

    #[test]
    fn only_the_asked_members_and_link_targets_are_written() {
        let root = tempfile::tempdir().unwrap();
        let deb = package(root.path());
        let out = root.path().join("out");
        extract(&deb, &out, &["/usr/lib/img/vmlinuz".into(), "usr/lib/img/text/init*.gz".into()]).unwrap();
        assert_eq!(fs::read(out.join("usr/lib/img/text/linux")).unwrap(), b"kernel");
        assert_eq!(fs::read(out.join("usr/lib/img/text/initrd.gz")).unwrap(), b"initrd");
        assert!(fs::symlink_metadata(out.join("usr/lib/img/vmlinuz")).unwrap().file_type().is_symlink());
        assert!(!out.join("usr/lib/img/other").exists());
        let resolved = crate::debian::resolve_in_tree(&out, "/usr/lib/img/vmlinuz").unwrap();
        assert_eq!(resolved, out.join("usr/lib/img/text/linux"));
    }

    #[test]
    fn a_missing_member_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let deb = package(root.path());
        let e = extract(&deb, &root.path().join("out"), &["usr/lib/img/nope".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("usr/lib/img/nope"), "{e:#}");
    }
}
