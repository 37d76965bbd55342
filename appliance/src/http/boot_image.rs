//! `/boot-image/<mac>.<arch>.img`: the RAM-disk image a UEFI HTTP Boot client on the shim chain
//! boots (what is in it and why: `appliance_core::boot_image`).
//!
//! The machine is the one the file name names. It gets an image only if DHCP would hand it
//! that very URL (a UEFI HTTP Boot client on the shim chain, of that architecture), and the
//! image carries the config its GRUB would have fetched (the GRUB-stage decision). The core plans the image and writes its bytes; this
//! module reads what goes in (the signed programs from the bootloader directory, the artifacts
//! from the store), and keeps the result in the cache directory as
//! `<mac>.<arch>-<key>.img`, the key a digest of everything in the image. The same inputs are
//! served from the cache (the firmware asks with HEAD, then GET); once a new image of a machine
//! is written, that machine's older ones are removed, so the cache holds one image per machine.

use super::files::{self, Mutability, Validators};
use super::routes::open_regular;
use crate::artifacts;
use crate::install_store::InstallStore;
use crate::state::Shared;
use appliance_core::arch::{Arch, Firmware};
use appliance_core::boot_image::{self, Contents};
use appliance_core::client::PathFacts;
use appliance_core::decide::{decide, Decision, Outcome, Stage};
use appliance_core::mac::MacAddr;
use sha2::{Digest as _, Sha256};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The cache's directory name in the state directory (beside the artifact store).
pub const CACHE_DIR: &str = "boot-images";

/// Where the image lies once built, and what the log says of it.
pub(super) struct Built {
    pub file: File,
    pub meta: Metadata,
    pub key: String,
    pub decision: Decision,
    /// Whether this request wrote it (else it came from the cache).
    pub written: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ImageError {
    /// Not one of our images, or nothing to boot for this machine (ignored, local boot, no
    /// shim for its architecture): not found, as for any other name.
    #[error("no boot image for this machine")]
    NoImage { decision: Option<Box<Decision>> },
    #[error("the boot programs are not served (no bootloader directory)")]
    NoBootloaders,
    #[error("reading {what}: {source}")]
    Read { what: String, source: io::Error },
    #[error("rendering the GRUB config for the image: {0}")]
    Render(#[from] appliance_core::render::RenderError),
    #[error("building the image: {0}")]
    Build(#[from] boot_image::BootImageError),
    #[error("writing the image to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// What the cache and the image need from the daemon.
pub(super) struct Sources<'a> {
    pub shared: &'a Shared,
    pub store: &'a Path,
    pub bootloaders: Option<&'a Path>,
    pub cache: &'a Path,
    /// The install log: an installed machine booting local gets no image.
    pub installs: &'a InstallStore,
}

/// The image named `name` (`52-54-00-12-34-56.x86_64.img`), from the cache or built now.
/// Blocking: file reads, hashing and the FAT writer.
pub(super) fn open(src: &Sources<'_>, name: &str) -> Result<Built, ImageError> {
    let (mac, arch) = boot_image::parse_file_name(name).ok_or(ImageError::NoImage { decision: None })?;
    let (handed, decision) = decisions(src.shared, src.installs, name, mac, arch);
    // Only the image DHCP hands this machine: not one for a machine on the ipxe chain, nor
    // under the name of another architecture than the one decided for it.
    if !matches!(handed.outcome, Outcome::BootImage { .. }) || handed.arch != Some(arch) {
        return Err(ImageError::NoImage { decision: Some(Box::new(handed)) });
    }
    let catalog = src.shared.catalog();
    let plan = match boot_image::plan(&catalog, &decision, &src.shared.server())? {
        Some(plan) => plan,
        None => return Err(ImageError::NoImage { decision: Some(Box::new(decision)) }),
    };
    let dir = src.bootloaders.ok_or(ImageError::NoBootloaders)?;
    let shim = read(&dir.join(plan.shim.file_name()))?;
    let grub = read(&dir.join(plan.grub.file_name()))?;
    let key = plan.key(&Sha256::digest(&shim).into(), &Sha256::digest(&grub).into());
    let stem = format!("{}.{}", mac.dashed(), arch.as_str());
    let path = src.cache.join(format!("{stem}-{key}.img"));
    let cached = || {
        open_regular(&path).ok().map(|(file, meta)| {
            // Its modification time says when it was last served, for `prune` and `make_room`.
            let _ = file.set_modified(SystemTime::now());
            Built { file, meta, key: key.clone(), decision: decision.clone(), written: false }
        })
    };
    if let Some(built) = cached() {
        return Ok(built);
    }
    // One build at a time: each holds the artifacts and the image in memory (tens of MB), so
    // a client asking for many machines' images at once must not multiply that. A request
    // that waited here may find its image built by the one before it.
    let _building = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(built) = cached() {
        return Ok(built);
    }
    let artifacts = plan
        .artifacts
        .iter()
        .map(|a| {
            let what = || a.path();
            let (mut f, _) = artifacts::open(src.store, &a.profile, &a.version, &a.name)
                .map_err(|source| ImageError::Read { what: what(), source })?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(|source| ImageError::Read { what: what(), source })?;
            Ok(bytes)
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let contents = Contents { shim: &shim, grub: &grub, artifacts: artifacts.iter().map(Vec::as_slice).collect() };
    let image = plan.build(&contents, &key)?;
    make_room(src.cache, MAX_IMAGES - 1);
    // Whole image or none, as for the state files; builds are serialised (`BUILDS`), so the
    // one temporary name per file and process cannot be shared by two writers.
    crate::atomic_file::write(&path, &image).map_err(|source| ImageError::Write { path: path.clone(), source })?;
    remove_older(src.cache, &stem, &path);
    let (file, meta) =
        open_regular(&path).map_err(|source| ImageError::Read { what: path.display().to_string(), source })?;
    Ok(Built { file, meta, key, decision, written: true })
}

/// For machine `mac` of `arch`: what DHCP hands it as a UEFI HTTP Boot client, and what its
/// GRUB gets (the config in the image).
fn decisions(shared: &Shared, installs: &InstallStore, name: &str, mac: MacAddr, arch: Arch) -> (Decision, Decision) {
    let facts = PathFacts { mac: Some(mac), arch: Some(arch), ..PathFacts::default() };
    let path = format!("/{}/{name}", boot_image::URL_DIR);
    let catalog = shared.catalog();
    let now = Instant::now();
    let [dhcp, grub] = [(Firmware::UefiHttp, Stage::Dhcp), (Firmware::Grub, Stage::Grub)].map(|(firmware, stage)| {
        decide(&catalog, &crate::serve::identify::client(shared, installs, &path, &facts, firmware, None, now), stage)
    });
    (dhcp, grub)
}

/// The response headers for an image: its key names its bytes, so the tag is strong.
pub(super) fn validators(key: &str) -> Validators {
    Validators {
        etag: format!("\"{key}\""),
        cache_control: "no-cache",
        // EDK2 takes this type (or a name ending in `.img`) for a disk image to boot from RAM.
        content_type: "application/vnd.efi-img",
    }
}

pub(super) fn respond(headers: &hyper::HeaderMap, head: bool, built: Built) -> hyper::Response<super::body::Body> {
    files::respond(headers, head, (built.file, &built.meta, Mutability::Immutable), &validators(&built.key))
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read { what: path.display().to_string(), source })
}

/// Removes the machine's other images (`<stem>-*.img` but `keep`): a new one replaces them.
fn remove_older(cache: &Path, stem: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let prefix = format!("{stem}-");
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".img") && path != keep {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("removing the old boot image {}: {e}", path.display());
            }
        }
    }
}

/// Images the cache holds at most. The unknown-machine policy may put every machine on the shim
/// chain, and then any made-up MAC in a request names an image to build: without a bound, one
/// client could fill the state directory's disk (each image is tens of MB). Past the bound the
/// images served least recently go first; a real machine whose image went gets it rebuilt.
pub const MAX_IMAGES: usize = 128;

/// Held while an image is built (see `open`).
static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes the least recently served images of `cache` until at most `keep` remain.
fn make_room(cache: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let images: Vec<(PathBuf, SystemTime)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)))
        .collect();
    for path in least_recent_beyond(images, keep) {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "boot image cache full: removed the least recently served")
            }
            Err(e) => tracing::warn!("removing the boot image {}: {e}", path.display()),
        }
    }
}

/// Of `images` (path, last served), the ones to remove so that `keep` remain: the oldest.
fn least_recent_beyond(mut images: Vec<(PathBuf, SystemTime)>, keep: usize) -> Vec<PathBuf> {
    if images.len() <= keep {
        return Vec::new();
    }
    images.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let excess = images.len() - keep;
    images.into_iter().take(excess).map(|(p, _)| p).collect()
}

/// Removes the images (and leftover partial writes) of `cache` not built or served within
/// `grace` before `now`: the daemon's periodic GC. A machine that asks again gets its image
/// rebuilt, so this only bounds the cache by the machines that boot. Returns what it removed.
pub fn prune(cache: &Path, grace: Duration, now: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Partial writes: `atomic_file`'s `.<image>.tmp-<pid>`, and `.tmp-…` from builds that
        // wrote their own temporary names.
        let partial = name.starts_with(".tmp-") || (name.starts_with('.') && name.contains(".img.tmp-"));
        let ours = name.ends_with(".img") || partial;
        let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
        let idle = now.duration_since(modified).unwrap_or_default();
        if ours && idle > grace {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => tracing::warn!("removing the boot image {}: {e}", path.display()),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_served_images_make_room() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let images =
            vec![(PathBuf::from("c.img"), at(30)), (PathBuf::from("a.img"), at(10)), (PathBuf::from("b.img"), at(20))];
        assert!(least_recent_beyond(images.clone(), 3).is_empty());
        assert_eq!(least_recent_beyond(images.clone(), 2), vec![PathBuf::from("a.img")]);
        assert_eq!(least_recent_beyond(images, 0).len(), 3);
    }

    #[test]
    fn a_full_cache_loses_its_oldest_image_before_a_new_one_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["old.img", "mid.img", "new.img"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let f = File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(100 * (i as u64 + 1))).unwrap();
        }
        make_room(dir.path(), 2);
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from("mid.img"), std::ffi::OsString::from("new.img")]);
    }

    #[test]
    fn only_the_machines_older_images_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let names =
            ["52-54-00-00-00-01.x86_64-aa.img", "52-54-00-00-00-01.x86_64-bb.img", "52-54-00-00-00-02.x86_64-aa.img"];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let keep = dir.path().join(names[1]);
        remove_older(dir.path(), "52-54-00-00-00-01.x86_64", &keep);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, [names[1], names[2]]);
    }

    #[test]
    fn images_idle_longer_than_the_grace_period_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.x86_64-1.img", ".tmp-1-0", "notes.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        assert!(prune(dir.path(), hour, now).is_empty(), "all of them are new");
        let mut removed: Vec<String> = prune(dir.path(), hour, now + 2 * hour)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        removed.sort();
        assert_eq!(removed, [".tmp-1-0", "a.x86_64-1.img"], "not the file that is not ours");
    }
}
