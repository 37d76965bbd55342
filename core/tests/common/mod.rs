//! Shared fixtures for the core's tests: the test catalog (`tests/data/config`, read from disk
//! and validated) and DHCP clients as real firmware identifies itself (option values from
//! docs/firmware.md#dhcp-requests-by-client).
//!
//! The tests read their fixture files, which the core itself never does: hence the allowance
//! of the file calls that `clippy.toml` denies in the crate.
#![allow(dead_code, clippy::disallowed_methods, clippy::disallowed_types)]

use appliance_core::catalog::{Catalog, Digest};
use appliance_core::client::Client;
use appliance_core::config::{self, ConfigErrors, FileProbe, Input, ProbeError, SourceFile};
use appliance_core::explain::{client_from_query, Query};
use appliance_core::mac::MacAddr;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

/// Reads and validates a config directory, with the text of an on-site overlay of the MAC
/// database (the daemon's loader does the same, and also keeps artifact paths from leaving the
/// directory).
pub fn load(dir: &Path, overlay: Option<&str>) -> Result<Catalog, ConfigErrors> {
    let read = |path: &Path| SourceFile { path: path.to_path_buf(), text: std::fs::read_to_string(path).unwrap() };
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && config::is_yaml(p))
        .map(|p| read(&p))
        .collect();
    let overlay = overlay.map(|text| SourceFile { path: PathBuf::from("onsite.yaml"), text: text.into() });
    config::validate(&Input::from_dir(dir.to_path_buf(), files, overlay), &DirFiles(dir.to_path_buf()))
}

/// Local artifacts hashed from the directory's files.
struct DirFiles(PathBuf);

impl FileProbe for DirFiles {
    fn digest(&self, rel: &Path) -> Result<Digest, ProbeError> {
        let bytes = std::fs::read(self.0.join(rel)).map_err(ProbeError::Read)?;
        Ok(Sha256::digest(bytes).into())
    }

    fn text(&self, rel: &Path) -> Result<String, ProbeError> {
        std::fs::read_to_string(self.0.join(rel)).map_err(ProbeError::Read)
    }
}

/// The files of a config directory, by path relative to it.
struct MemFiles(BTreeMap<PathBuf, Vec<u8>>);

impl FileProbe for MemFiles {
    fn digest(&self, rel: &Path) -> Result<Digest, ProbeError> {
        let not_found = || ProbeError::NotFound { dir: "/config".into(), error: std::io::ErrorKind::NotFound.into() };
        let bytes = self.0.get(rel).ok_or_else(not_found)?;
        Ok(Sha256::digest(bytes).into())
    }

    fn text(&self, rel: &Path) -> Result<String, ProbeError> {
        let not_found = || ProbeError::NotFound { dir: "/config".into(), error: std::io::ErrorKind::NotFound.into() };
        let bytes = self.0.get(rel).ok_or_else(not_found)?;
        String::from_utf8(bytes.clone()).map_err(|e| ProbeError::Read(std::io::Error::other(e)))
    }
}

/// Validates a config given as `(path, text)` pairs, without a directory: YAML files are the
/// config's, any other file is a local artifact.
pub fn validate_files(files: &[(&str, &str)]) -> Result<Catalog, ConfigErrors> {
    let dir = PathBuf::from("/config");
    let (yaml, other): (Vec<_>, Vec<_>) = files.iter().partition(|(name, _)| config::is_yaml(Path::new(name)));
    let yaml =
        yaml.into_iter().map(|(name, text)| SourceFile { path: dir.join(name), text: text.to_string() }).collect();
    let probe = MemFiles(other.iter().map(|(name, text)| (PathBuf::from(name), text.as_bytes().to_vec())).collect());
    config::validate(&Input::from_dir(dir, yaml, None), &probe)
}

pub fn catalog() -> Catalog {
    load(&data("config"), None).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

pub fn mac(s: &str) -> MacAddr {
    MacAddr::parse(s).unwrap()
}

/// A DHCP client as identified from the DISCOVER it would send.
pub fn dhcp(m: &str, arch: Option<u16>, vendor: Option<&str>, user: Option<&str>) -> Client {
    client_from_query(&Query {
        mac: Some(mac(m)),
        client_arch: arch,
        vendor_class: vendor.map(String::from),
        user_class: user.map(String::from),
        path: None,
        chained: false,
        ..Query::default()
    })
}

// The clients of docs/firmware.md#dhcp-requests-by-client.
pub fn seabios_ipxe_rom(m: &str) -> Client {
    dhcp(m, Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), Some("iPXE"))
}
pub fn bios_stock_pxe(m: &str) -> Client {
    dhcp(m, Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), None)
}
pub fn ovmf_pxe(m: &str) -> Client {
    dhcp(m, Some(7), Some("PXEClient:Arch:00007:UNDI:003000"), None)
}
pub fn ipxe_efi(m: &str) -> Client {
    dhcp(m, Some(7), Some("PXEClient:Arch:00007:UNDI:003010"), Some("iPXE"))
}
pub fn uboot(m: &str) -> Client {
    dhcp(m, Some(22), Some("U-Boot.armv8"), None)
}
pub fn uboot_efi_retry(m: &str) -> Client {
    dhcp(m, Some(11), Some("PXEClient:Arch:00011:UNDI:003000"), None)
}
pub fn armvirt_edk2(m: &str) -> Client {
    dhcp(m, Some(11), Some("PXEClient:Arch:00011:UNDI:003000"), None)
}
pub fn uefi_http_x64(m: &str) -> Client {
    dhcp(m, Some(16), Some("HTTPClient:Arch:00016:UNDI:003001"), None)
}
pub fn uefi_http_arm64(m: &str) -> Client {
    dhcp(m, Some(19), Some("HTTPClient:Arch:00019:UNDI:003001"), None)
}
pub fn os_client(m: &str) -> Client {
    dhcp(m, None, Some("dhcpcd-9.4.1:Linux-6.1.0:x86_64:GenuineIntel"), None)
}
