//! Profile artifacts fetched at build time: every `deb` and `url` source of the profiles (also
//! inside `cpio` recipes) is fetched, verified against its sha256 and stored in a blob cache,
//! one file per content (`<blobs>/<sha256>`), where `appliance serve` publishes them from.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use appliance_core::catalog::{Catalog, CpioSource, Source};
use xshell::{cmd, Shell};

use crate::debian::{self, Lock};
use crate::project_root;

/// The default blob cache; `cargo xtask test` exports it to the tests as `APPLIANCE_BLOBS`.
pub fn default_dir() -> PathBuf {
    project_root().join("target/blobs")
}

/// How a blob's bytes are obtained.
enum Fetch {
    Copy(PathBuf),
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

/// Fetches every remote source of the profiles in `config` into `blobs`.
pub fn fetch(sh: &Shell, lock: &Lock, config: &Path, blobs: &Path) -> Result<()> {
    let catalog = appliance::config_dir::load(config, None)
        .map_err(|e| anyhow::anyhow!("{} does not validate ({} errors):\n{e}", config.display(), e.0.len()))?;
    fs::create_dir_all(blobs).with_context(|| format!("failed to create {}", blobs.display()))?;
    let extracted = project_root().join("target/cache/extracted");
    let mut trees: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut count = 0;
    for w in collect(&catalog) {
        let (sha, how) = match &w.source {
            Source::Deb { package, deb_arch, file, sha256 } => {
                let key = (package.clone(), deb_arch.clone());
                let tree = match trees.get(&key) {
                    Some(t) => t.clone(),
                    None => {
                        let pin = lock.get(package, deb_arch).with_context(|| {
                            format!(
                                "{} names package {package}:{deb_arch}, which is not pinned in {}",
                                w.used_by,
                                debian::LOCK_PATH
                            )
                        })?;
                        let tree =
                            extracted.join(format!("{}_{}_{}", pin.name, pin.version.replace(':', "%3a"), pin.arch));
                        if !tree.is_dir() {
                            let deb = debian::ensure_deb(sh, lock, package, deb_arch)?;
                            let tmp = tree.with_extension("tmp");
                            let _ = fs::remove_dir_all(&tmp);
                            debian::extract(sh, &deb, &tmp)?;
                            fs::rename(&tmp, &tree).with_context(|| format!("failed to move {}", tmp.display()))?;
                        }
                        trees.insert(key, tree.clone());
                        tree
                    }
                };
                let path = find_in_tree(&tree, file).with_context(|| format!("{}: {file} in {package}", w.used_by))?;
                (hex::encode(sha256), Fetch::Copy(path))
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
        let dest = blobs.join(&sha);
        if dest.is_file() && debian::sha256_file(&dest)? == sha {
            continue;
        }
        let tmp = blobs.join(format!(".{sha}.tmp"));
        match how {
            Fetch::Copy(path) => copy(&path, &tmp)?,
            Fetch::Download(url) => cmd!(sh, "curl -fsSL --retry 2 -o {tmp} {url}")
                .run()
                .with_context(|| format!("failed to download {url}"))?,
            Fetch::DemoDisk => {
                println!("  building the demo disk for {} (nothing is downloaded)", w.used_by);
                crate::demo_disk::build(sh, lock, &tmp).context("building the demo disk")?;
            }
        }
        let actual = debian::sha256_file(&tmp)?;
        if actual != sha {
            let _ = fs::remove_file(&tmp);
            bail!("{}: checksum mismatch: the profile says sha256 {sha}, the fetched file has {actual}", w.used_by);
        }
        fs::rename(&tmp, &dest).with_context(|| format!("failed to write {}", dest.display()))?;
        println!("  blob {}  {}", &sha[..16], w.used_by);
        count += 1;
    }
    println!("profile artifacts from {}: {count} fetched, cache {}", config.display(), blobs.display());
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
