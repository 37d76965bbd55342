//! Whether each profile's kernel carries an Authenticode signature, read from the first bytes
//! of its file (the config directory's, or the fetched blob of a `deb`/`url` source), for the
//! core's Secure Boot warnings (`appliance_core::secure_boot`): `appliance check` prints them,
//! `serve` logs them at every load.

use crate::config_dir::DirProbe;
use appliance_core::catalog::{Artifact, Catalog, Source};
use appliance_core::pe::{self, PeError};
use appliance_core::secure_boot::{self, KernelFact, KernelFacts, Warning};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The facts about every kernel the warnings may need. `blobs`: where fetched `deb`/`url`
/// bytes are (`None`: they cannot be checked).
pub fn facts(catalog: &Catalog, blobs: Option<&Path>) -> KernelFacts {
    secure_boot::kernels(catalog).map(|k| (k.digest, fact(catalog, k, blobs))).collect()
}

/// The warnings for `catalog`, with its kernels read from the config directory and `blobs`.
pub fn warnings(catalog: &Catalog, blobs: Option<&Path>) -> Vec<Warning> {
    secure_boot::unsigned_kernel_warnings(catalog, &facts(catalog, blobs))
}

fn fact(catalog: &Catalog, kernel: &Artifact, blobs: Option<&Path>) -> KernelFact {
    let path: PathBuf = match (&kernel.source, blobs) {
        (Source::Path(rel), _) => match (DirProbe { root: catalog.dir().to_path_buf() }).resolve(rel) {
            Ok(p) => p,
            Err(e) => return KernelFact::Unreadable(format!("{}: {e}", rel.display())),
        },
        (Source::Deb { sha256, .. } | Source::Url { sha256, .. }, Some(blobs)) => blobs.join(hex::encode(sha256)),
        (Source::Deb { .. } | Source::Url { .. }, None) => {
            return KernelFact::Unreadable("fetched kernels are not checked without --blobs".into())
        }
        // An archive we assemble is no EFI program.
        (Source::Cpio { .. }, _) => return KernelFact::NotPe(PeError::NoMz),
    };
    match head(&path) {
        Ok((bytes, len)) => match pe::authenticode(&bytes, len) {
            Ok(a) => KernelFact::Pe(a),
            Err(e) => KernelFact::NotPe(e),
        },
        Err(e) => KernelFact::Unreadable(format!("{}: {e}", path.display())),
    }
}

/// The first `pe::HEAD_LEN` bytes of a file and its length.
fn head(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(pe::HEAD_LEN);
    file.take(pe::HEAD_LEN as u64).read_to_end(&mut bytes)?;
    Ok((bytes, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::pe::Authenticode;

    /// A PE32+ header whose security directory names `len` bytes at 0x200, in a file of `size`.
    fn pe_image(len: u32, size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        b[0x58..0x5a].copy_from_slice(&0x20bu16.to_le_bytes());
        b[0x58 + 108..0x58 + 112].copy_from_slice(&16u32.to_le_bytes());
        let entry = 0x58 + 112 + 32;
        b[entry..entry + 4].copy_from_slice(&(if len == 0 { 0u32 } else { 0x200 }).to_le_bytes());
        b[entry + 4..entry + 8].copy_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn kernels_are_read_from_the_config_dir_and_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let signed = pe_image(64, 0x400);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&signed));
        std::fs::write(blobs.path().join(&sha), &signed).unwrap();
        std::fs::write(dir.path().join("plain.img"), pe_image(0, 0x400)).unwrap();
        std::fs::write(
            dir.path().join("appliance.yaml"),
            "server: { address: 10.0.0.1 }\ndhcp: { mode: off }\nuefi_chain: shim\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("machines.yaml"), "unknown: { profile: plain }\n").unwrap();
        std::fs::write(
            dir.path().join("plain.yaml"),
            "name: plain\narch:\n  x86_64:\n    kernel: { path: plain.img }\n",
        )
        .unwrap();
        let deb = format!(
            "name: signed\narch:\n  x86_64:\n    kernel: {{ deb: linux-image, file: boot/vmlinuz, sha256: {sha} }}\n"
        );
        std::fs::write(dir.path().join("signed.yaml"), deb).unwrap();
        let catalog = crate::config_dir::load(dir.path(), None).unwrap();
        let signed_digest = catalog.profile("signed").unwrap().arches.values().next().unwrap().kernel.digest;
        let facts = facts(&catalog, Some(blobs.path()));
        assert_eq!(facts[&signed_digest], KernelFact::Pe(Authenticode::Signed { offset: 0x200, len: 64 }));
        let w = warnings(&catalog, Some(blobs.path()));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].to_string().contains("profile plain (x86_64) boots a kernel without an Authenticode signature"));
        // Without the blobs the fetched kernel cannot be judged, and nothing reaches it here.
        assert!(matches!(super::facts(&catalog, None)[&signed_digest], KernelFact::Unreadable(_)));
    }
}
