//! The boot image: how a machine on the shim chain boots by UEFI HTTP Boot under Secure Boot.
//!
//! Debian 12's signed GRUB has no `http` module, so handed shim's URL it stops at its prompt
//! (docs/firmware.md#under-uefi-http-boot). But EDK2's HTTP Boot also boots a disk image: a URL
//! ending in `.img` is downloaded into a RAM disk and the firmware starts the removable-media
//! program `\EFI\BOOT\BOOTX64.EFI` (`BOOTAA64.EFI`) from it, under the same Secure Boot checks
//! (docs/firmware.md#a-boot-image-over-http). So the machine gets one small FAT image holding:
//!
//! - `EFI/BOOT/BOOTX64.EFI`: Debian's Microsoft-signed shim, byte for byte;
//! - `EFI/BOOT/grubx64.efi`: Debian's signed network GRUB, the same file PXE machines get, which
//!   shim loads from its own directory. Started from a disk its prefix is `(hd0)/grub`, and it
//!   reads `/grub/grub.cfg` from the RAM disk;
//! - `grub/grub.cfg`: the machine's GRUB config, rendered as for TFTP, which names
//!   `/artifacts/<profile>/<version>/<file>`;
//! - those artifacts, at those paths, so the config reads them from the RAM disk, not the network.
//!
//! The image mirrors the machine's TFTP view, so nothing in it is specific to the image but its
//! list of files. Per (machine, config, artifact versions, programs): `Plan::key` names it, and
//! the daemon builds it once and serves it from its cache.
//!
//! Pure: the daemon hands in the programs' and artifacts' bytes.

pub mod fat;

use crate::arch::Arch;
use crate::boot_file::BootFile;
use crate::catalog::{Catalog, Digest, MenuAction};
use crate::decide::{Decision, Outcome};
use crate::mac::MacAddr;
use crate::render::{self, Format, RenderError, ServerInfo};
use crate::uefi_chain::UefiChain;
use fat::{FatError, FatFile};
use sha2::{Digest as _, Sha256};

/// Where GRUB reads its config in the image: its prefix `/grub` on the disk it was started from.
pub const CONFIG_PATH: &str = "grub/grub.cfg";
/// The URL directory of boot images; a file name is `<mac>.<arch>.img`
/// (`52-54-00-12-34-56.x86_64.img`). EDK2 takes a URL ending in `.img` for a disk image.
pub const URL_DIR: &str = "boot-image";
/// The volume label of every image.
const LABEL: [u8; 11] = *b"APPLIANCE  ";
/// Part of every image's key: a change to the layout or the writer changes it.
const FORMAT: &str = "appliance boot image 1";

/// The path (after the HTTP base) of the boot image for machine `mac` of `arch`.
pub fn url_path(mac: MacAddr, arch: Arch) -> String {
    format!("{URL_DIR}/{}.{}.img", mac.dashed(), arch.as_str())
}

/// The machine and architecture a boot image's file name names, if it is one of ours.
pub fn parse_file_name(name: &str) -> Option<(MacAddr, Arch)> {
    let stem = name.strip_suffix(".img")?;
    let (mac, arch) = stem.split_once('.')?;
    Some((MacAddr::parse(mac).ok()?, Arch::parse(arch)?))
}

/// The removable-media program path EDK2 starts from a disk, per architecture.
pub fn removable_path(arch: Arch) -> Option<&'static str> {
    match arch {
        Arch::X86_64 => Some("EFI/BOOT/BOOTX64.EFI"),
        Arch::Arm64 => Some("EFI/BOOT/BOOTAA64.EFI"),
        _ => None,
    }
}

/// An artifact the image carries, at `path()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFile {
    pub profile: String,
    pub version: String,
    pub name: String,
    pub digest: Digest,
}

impl ArtifactFile {
    /// The path in the image, which is the path the rendered config names (without its `/`).
    pub fn path(&self) -> String {
        format!("artifacts/{}/{}/{}", self.profile, self.version, self.name)
    }
}

/// What one machine's boot image holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub arch: Arch,
    /// Debian's signed shim for `arch`, at `shim_path`.
    pub shim: BootFile,
    /// Where the firmware looks for it: `removable_path(arch)`.
    pub shim_path: &'static str,
    /// The signed GRUB shim loads, beside it under its own name.
    pub grub: BootFile,
    /// The machine's GRUB config, at `CONFIG_PATH`.
    pub config: String,
    /// Every artifact the config names, in path order.
    pub artifacts: Vec<ArtifactFile>,
}

/// The bytes of a plan's programs and artifacts (`artifacts` in the plan's order).
pub struct Contents<'a> {
    pub shim: &'a [u8],
    pub grub: &'a [u8],
    pub artifacts: Vec<&'a [u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootImageError {
    #[error("{given} artifact files given for {planned} in the plan")]
    ArtifactCount { given: usize, planned: usize },
    #[error(transparent)]
    Fat(#[from] FatError),
}

/// The image for `decision`, a GRUB-stage decision (`Stage::Grub`) for the machine. `Ok(None)`:
/// nothing to boot (the config would be "not found", or the architecture has no shim).
pub fn plan(catalog: &Catalog, decision: &Decision, server: &ServerInfo) -> Result<Option<Plan>, RenderError> {
    let arch = match &decision.outcome {
        Outcome::Boot { profile, .. } => decision.arch.or_else(|| catalog.profile(profile).and_then(|p| p.only_arch())),
        _ => decision.arch,
    };
    let Some(arch) = arch else { return Ok(None) };
    let Some(shim) = UefiChain::Shim.first_program(arch, BootFile::IpxeEfi) else { return Ok(None) };
    let Some(grub) = shim.second_stage() else { return Ok(None) };
    let Some(shim_path) = removable_path(arch) else { return Ok(None) };
    let Some(config) = render::render(catalog, decision, server, Format::Grub)? else { return Ok(None) };
    let mut artifacts = artifacts(catalog, &decision.outcome, arch);
    artifacts.sort_by_key(ArtifactFile::path);
    artifacts.dedup();
    Ok(Some(Plan { arch, shim, shim_path, grub, config, artifacts }))
}

/// The artifacts the GRUB config for `outcome` names: the profile's set, or every menu entry's.
fn artifacts(catalog: &Catalog, outcome: &Outcome, arch: Arch) -> Vec<ArtifactFile> {
    let sets: Vec<_> = match outcome {
        Outcome::Boot { profile, .. } => catalog.profile_set(profile, arch).into_iter().collect(),
        Outcome::Menu { menu } => catalog
            .menu(menu)
            .into_iter()
            .flat_map(|m| &m.entries)
            .filter_map(|e| match &e.action {
                MenuAction::Profile(p) => p.arches.get(&arch).map(|s| (&**p, s)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    sets.into_iter()
        .flat_map(|(p, set)| {
            set.files().map(|a| ArtifactFile {
                profile: p.name.clone(),
                version: set.version.clone(),
                name: a.name.clone(),
                digest: a.digest,
            })
        })
        .collect()
}

impl Plan {
    /// The image's name: a digest of every path in it and of what is there (the programs'
    /// digests, which the caller computes from their bytes, the config, and each artifact's
    /// digest from the catalog). Same key, same bytes.
    pub fn key(&self, shim: &Digest, grub: &Digest) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(FORMAT.as_bytes());
        for (path, digest) in self.entries(shim, grub) {
            field(path.as_bytes());
            field(&digest);
        }
        hex::encode(&h.finalize()[..16])
    }

    fn entries(&self, shim: &Digest, grub: &Digest) -> Vec<(String, Digest)> {
        let mut out = vec![
            (self.shim_path.to_string(), *shim),
            (self.grub_path(), *grub),
            (CONFIG_PATH.to_string(), Sha256::digest(self.config.as_bytes()).into()),
        ];
        out.extend(self.artifacts.iter().map(|a| (a.path(), a.digest)));
        out
    }

    /// shim looks for its GRUB under that GRUB's name in its own directory.
    pub fn grub_path(&self) -> String {
        format!("EFI/BOOT/{}", self.grub.file_name())
    }

    /// The FAT image itself; `key` (from `Plan::key`) seeds its volume id.
    pub fn build(&self, contents: &Contents<'_>, key: &str) -> Result<Vec<u8>, BootImageError> {
        if contents.artifacts.len() != self.artifacts.len() {
            return Err(BootImageError::ArtifactCount {
                given: contents.artifacts.len(),
                planned: self.artifacts.len(),
            });
        }
        let paths: Vec<String> = self.artifacts.iter().map(ArtifactFile::path).collect();
        let grub_path = self.grub_path();
        let mut files = vec![
            FatFile { path: self.shim_path, bytes: contents.shim },
            FatFile { path: &grub_path, bytes: contents.grub },
            FatFile { path: CONFIG_PATH, bytes: self.config.as_bytes() },
        ];
        files.extend(paths.iter().zip(&contents.artifacts).map(|(path, bytes)| FatFile { path, bytes }));
        let id = Sha256::digest(key.as_bytes());
        Ok(fat::build(&files, LABEL, u32::from_le_bytes([id[0], id[1], id[2], id[3]]))?)
    }
}
