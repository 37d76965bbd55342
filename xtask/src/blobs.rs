//! Profile artifacts fetched at build time: every `deb` and `url` source of the profiles (also
//! inside `cpio` recipes) is fetched, verified against its sha256 and stored in a blob cache,
//! one file per content (`<blobs>/<sha256>`), where `appliance serve` publishes them from.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use appliance_core::catalog::{Catalog, CpioSource, Source};
use xshell::{cmd, Shell};

use crate::deb_members;
use crate::debian::{self, Lock};
use crate::project_root;

/// The default blob cache; `cargo xtask test` exports it to the tests as `APPLIANCE_BLOBS`.
pub fn default_dir() -> PathBuf {
    project_root().join("target/blobs")
}

/// How a blob that is not in a package is obtained.
enum Fetch {
    Download(String),
    /// The demo disk (`demo_disk::URL`): built here, never downloaded.
    DemoDisk,
}

/// One fetchable source and who uses it (for error messages).
struct Wanted {
    source: Source,
    used_by: String,
}

fn collect(catalog: &Catalog) -> Vec<Wanted> {
    let mut out = Vec::new();
    for p in catalog.profiles() {
        for (arch, set) in &p.arches {
            for a in set.files() {
                let used_by = format!("profile {} ({arch}) artifact {}", p.name, a.name);
                match &a.source {
                    Source::Cpio { entries, .. } => {
                        for e in entries {
                            if let CpioSource::File { source, .. } = &e.source {
                                out.push(Wanted {
                                    source: (**source).clone(),
                                    used_by: format!("{used_by}, cpio entry {}", e.dest),
                                });
                            }
                        }
                    }
                    s => out.push(Wanted { source: s.clone(), used_by }),
                }
            }
        }
    }
    out
}

/// Fetches every remote source of the profiles in `config` into `blobs`. A package's files are
/// taken from it in one pass over its data (`deb_members`), into a scratch directory removed
/// afterwards: only blobs not yet in the cache cost an extraction.
pub fn fetch(sh: &Shell, lock: &Lock, config: &Path, blobs: &Path) -> Result<()> {
    let catalog = appliance::config_dir::load(config, None)
        .map_err(|e| anyhow::anyhow!("{} does not validate ({} errors):\n{e}", config.display(), e.0.len()))?;
    fs::create_dir_all(blobs).with_context(|| format!("failed to create {}", blobs.display()))?;
    // (package, Debian architecture) -> the files wanted from it.
    let mut from_debs: BTreeMap<(String, String), Vec<Member>> = BTreeMap::new();
    let mut count = 0;
    for w in collect(&catalog) {
        let (sha, how) = match &w.source {
            Source::Deb { package, deb_arch, file, sha256, .. } => {
                let sha = hex::encode(sha256);
                if !cached(blobs, &sha)? {
                    let key = (package.clone(), deb_arch.clone());
                    from_debs.entry(key).or_default().push(Member { file: file.clone(), sha, used_by: w.used_by });
                }
                continue;
            }
            Source::Url { url, sha256 } if url == crate::demo_disk::URL => (hex::encode(sha256), Fetch::DemoDisk),
            Source::Url { url, sha256 } => {
                if host(url).ends_with(".invalid") {
                    // RFC 6761: never resolves. Such a URL only stands for bytes built here.
                    bail!("{}: {url} names a host that cannot exist; nothing here builds that file", w.used_by);
                }
                (hex::encode(sha256), Fetch::Download(url.clone()))
            }
            _ => continue,
        };
        if cached(blobs, &sha)? {
            continue;
        }
        let tmp = blobs.join(format!(".{sha}.tmp"));
        match how {
            Fetch::Download(url) => cmd!(sh, "curl -fsSL --retry 2 -o {tmp} {url}")
                .run()
                .with_context(|| format!("failed to download {url}"))?,
            Fetch::DemoDisk => {
                println!("  building the demo disk for {} (nothing is downloaded)", w.used_by);
                crate::demo_disk::build(sh, lock, &tmp).context("building the demo disk")?;
            }
        }
        store(blobs, &tmp, &sha, &w.used_by)?;
        count += 1;
    }
    let scratch = project_root().join("target/cache");
    for ((package, deb_arch), files) in from_debs {
        let used_by = &files[0].used_by;
        lock.get(&package, &deb_arch).with_context(|| {
            format!("{used_by} names package {package}:{deb_arch}, which is not pinned in {}", debian::LOCK_PATH)
        })?;
        let deb = debian::ensure_deb(sh, lock, &package, &deb_arch)?;
        fs::create_dir_all(&scratch).with_context(|| format!("failed to create {}", scratch.display()))?;
        let tree = tempfile::Builder::new().prefix("members-").tempdir_in(&scratch)?;
        let names: Vec<String> = files.iter().map(|m| m.file.clone()).collect();
        deb_members::extract(&deb, tree.path(), &names).with_context(|| format!("{used_by}: package {package}"))?;
        for Member { file, sha, used_by } in &files {
            if cached(blobs, sha)? {
                continue; // the same file named twice
            }
            let path = find_in_tree(tree.path(), file).with_context(|| format!("{used_by}: {file} in {package}"))?;
            let tmp = blobs.join(format!(".{sha}.tmp"));
            copy(&path, &tmp)?;
            store(blobs, &tmp, sha, used_by)?;
            count += 1;
        }
    }
    println!("profile artifacts from {}: {count} fetched, cache {}", config.display(), blobs.display());
    Ok(())
}

/// A file a profile wants from a package: its path there, its sha256 (hex), what wants it.
struct Member {
    file: String,
    sha: String,
    used_by: String,
}

/// Whether the blob `sha` is in the cache with the right content.
fn cached(blobs: &Path, sha: &str) -> Result<bool> {
    let dest = blobs.join(sha);
    Ok(dest.is_file() && debian::sha256_file(&dest)? == sha)
}

/// Moves a fetched file into the cache as `<sha>` once its content matches.
fn store(blobs: &Path, tmp: &Path, sha: &str, used_by: &str) -> Result<()> {
    let actual = debian::sha256_file(tmp)?;
    if actual != sha {
        let _ = fs::remove_file(tmp);
        bail!("{used_by}: checksum mismatch: the profile says sha256 {sha}, the fetched file has {actual}");
    }
    let dest = blobs.join(sha);
    fs::rename(tmp, &dest).with_context(|| format!("failed to write {}", dest.display()))?;
    println!("  blob {}  {used_by}", &sha[..16]);
    Ok(())
}

/// The host part of an http(s) URL.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.split(':').next().unwrap_or("")
}

/// A file inside an extracted package; `*` in the last component matches exactly one file.
fn find_in_tree(tree: &Path, file: &str) -> Result<PathBuf> {
    let file = file.trim_start_matches('/');
    let (dir, pattern) = file.rsplit_once('/').unwrap_or(("", file));
    if !pattern.contains('*') {
        return debian::resolve_in_tree(tree, file);
    }
    let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
    let mut matches: Vec<PathBuf> = fs::read_dir(tree.join(dir))
        .with_context(|| format!("/{dir} is not in the package"))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect();
    matches.sort();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => bail!("nothing matches /{file}"),
        n => bail!("/{file} matches {n} files; make the pattern more specific"),
    }
}

fn copy(src: &Path, dest: &Path) -> Result<()> {
    fs::copy(src, dest).map(|_| ()).with_context(|| format!("failed to copy {} to {}", src.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn url_hosts() {
        assert_eq!(host(crate::demo_disk::URL), "demo-disk.invalid");
        assert_eq!(host("https://user@images.example:8443/a?b"), "images.example");
        assert_eq!(host("http://10.0.0.1/x"), "10.0.0.1");
    }
}
