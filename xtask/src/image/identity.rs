//! The image's identity: a seed digested from every input, and the identifiers derived from it
//! (image id, GPT GUIDs, the ESP's serial number, the MBR signature, the data partition's UUID
//! and directory hash seed). Same inputs, same identifiers, and so the same bytes; any changed
//! input changes them all.

use std::fs as stdfs;
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::gpt::{self, Guid};
use super::{fs, host, initramfs, kmod};
use crate::debian::{self, Lock};

/// Identifiers derived from the build seed.
pub struct Ids {
    pub image_id: String,
    pub disk: Guid,
    pub bios_part: Guid,
    pub esp_part: Guid,
    pub data_part: Guid,
    pub esp_serial: u32,
    pub mbr_signature: u32,
    pub data_uuid: String,
    pub data_hash_seed: String,
}

impl Ids {
    pub fn derive(seed: &[u8]) -> Ids {
        let u32_of = |what: &str| {
            let b = gpt::derive_bytes(seed, what);
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        Ids {
            image_id: hex::encode(&seed[..6]),
            disk: Guid::derive(seed, "disk"),
            bios_part: Guid::derive(seed, "partition bios"),
            esp_part: Guid::derive(seed, "partition esp"),
            data_part: Guid::derive(seed, "partition data"),
            esp_serial: u32_of("esp serial"),
            mbr_signature: u32_of("mbr signature"),
            data_uuid: Guid::derive(seed, "data uuid").to_string(),
            data_hash_seed: Guid::derive(seed, "data hash seed").to_string(),
        }
    }
}

/// What goes into the seed.
pub struct Inputs<'a> {
    pub recipe_path: &'a Path,
    pub lock: &'a Lock,
    pub epoch: u64,
    pub daemon: &'a Path,
    pub libraries: &'a [host::Library],
    /// The data partition's tree (before IMAGE-INFO, which names the image id, is written).
    pub data: &'a Path,
    pub modules: &'a [kmod::Module],
}

/// A digest of every input: same inputs, same identifiers (and so the same bytes).
pub fn seed(inputs: &Inputs<'_>) -> Result<Vec<u8>> {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("format", b"appliance-image/1");
    field("recipe", &stdfs::read(inputs.recipe_path)?);
    for pin in inputs.lock.pins() {
        field("pin", format!("{} {} {} {}", pin.name, pin.arch, pin.version, pin.sha256).as_bytes());
    }
    field("epoch", &inputs.epoch.to_le_bytes());
    for script in initramfs::embedded_scripts() {
        field("script", script.as_bytes());
    }
    field("daemon", debian::sha256_file(inputs.daemon)?.as_bytes());
    for lib in inputs.libraries {
        field("library", format!("{} {}", lib.path, debian::sha256_file(&lib.file)?).as_bytes());
    }
    for m in inputs.modules {
        field("module", m.rel.to_string_lossy().as_bytes());
    }
    for entry in fs::walk(inputs.data)? {
        match entry {
            fs::Entry::Dir(rel) => field("dir", rel.as_bytes()),
            fs::Entry::File { rel, path, exec, .. } => {
                field("file", format!("{rel} {exec} {}", debian::sha256_file(&path)?).as_bytes())
            }
        }
    }
    Ok(h.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_stable_and_distinct() {
        let a = Ids::derive(&[7u8; 32]);
        let b = Ids::derive(&[7u8; 32]);
        assert_eq!((a.disk, a.esp_serial, &a.data_uuid), (b.disk, b.esp_serial, &b.data_uuid));
        assert_eq!(a.image_id, "070707070707");
        let guids = [a.disk, a.bios_part, a.esp_part, a.data_part];
        for (i, g) in guids.iter().enumerate() {
            assert!(guids[i + 1..].iter().all(|o| o != g), "{g} repeats");
        }
        assert_ne!(a.data_uuid, a.data_hash_seed);
        let c = Ids::derive(&[8u8; 32]);
        assert_ne!(a.disk, c.disk);
        assert_ne!(a.mbr_signature, c.mbr_signature);
    }
}
