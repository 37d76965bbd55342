//! Artifact versions. A version names one architecture's whole artifact set (kernel, initrds,
//! device tree, disk image, command-line template) and is derived from their content, so the
//! same inputs always give the same version and any change gives a new one. A node that was
//! told version N fetches every file from N, whatever is published meanwhile.
//!
//! Pure: digests of local files are computed by the loader and passed in.

use crate::arch::Arch;
use crate::catalog::{Artifact, CpioEntry, CpioSource, Digest};
use sha2::{Digest as _, Sha256};

/// Bumped when the way artifacts are built from their sources changes (e.g. the cpio writer),
/// so that such a change also yields new versions.
const BUILD_FORMAT: &[u8] = b"appliance-artifacts-v1";

/// Twelve hex digits of the set's digest: short enough for paths, long enough never to collide
/// among one profile's versions.
pub fn set_version(
    arch: Arch,
    cmdline: &str,
    kernel: &Artifact,
    initrds: &[Artifact],
    fdt: Option<&Artifact>,
    image: Option<&Artifact>,
) -> String {
    let mut h = Sha256::new();
    h.update(BUILD_FORMAT);
    field(&mut h, arch.as_str().as_bytes());
    field(&mut h, cmdline.as_bytes());
    let roles = std::iter::once(("kernel", kernel))
        .chain(initrds.iter().map(|i| ("initrd", i)))
        .chain(fdt.map(|f| ("fdt", f)))
        .chain(image.map(|i| ("image", i)));
    for (role, a) in roles {
        field(&mut h, role.as_bytes());
        field(&mut h, a.name.as_bytes());
        field(&mut h, &a.digest);
    }
    hex::encode(&h.finalize()[..6])
}

/// Digest of a cpio recipe: entry paths, modes and the digests of their contents.
pub fn cpio_digest(entries: &[CpioEntry], gzip: bool) -> Digest {
    let mut h = Sha256::new();
    h.update(BUILD_FORMAT);
    field(&mut h, if gzip { b"gzip" } else { b"raw" });
    for e in entries {
        field(&mut h, e.dest.as_bytes());
        field(&mut h, &e.mode.to_be_bytes());
        match &e.source {
            CpioSource::Dir => field(&mut h, b"dir"),
            CpioSource::Symlink(t) => {
                field(&mut h, b"symlink");
                field(&mut h, t.as_bytes());
            }
            CpioSource::File { digest, .. } => {
                field(&mut h, b"file");
                field(&mut h, digest);
            }
        }
    }
    h.finalize().into()
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The version of a whole configuration, for the status page and the `appliance_catalog_info`
/// metric: twelve hex digits over every YAML file read (its role, name and bytes) and every
/// artifact set's version, so an edit of any file, or of an artifact a profile names, gives a
/// new one.
pub fn catalog_version(input: &crate::config::Input, catalog: &crate::catalog::Catalog) -> String {
    let mut h = Sha256::new();
    let files = [
        ("settings", &input.settings),
        ("machines", &input.machines),
        ("menus", &input.menus),
        ("overlay", &input.overlay),
    ];
    let profiles = input.profiles.iter().map(|f| ("profile", f));
    for (role, file) in files.into_iter().filter_map(|(r, f)| f.as_ref().map(|f| (r, f))).chain(profiles) {
        field(&mut h, role.as_bytes());
        field(&mut h, file.path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        field(&mut h, file.text.as_bytes());
    }
    for p in catalog.profiles() {
        for (arch, set) in &p.arches {
            field(&mut h, p.name.as_bytes());
            field(&mut h, arch.as_str().as_bytes());
            field(&mut h, set.version.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..6])
}
