//! The validated, immutable configuration: profiles, the MAC database, menus and settings.
//!
//! A `Catalog` is only ever built by `config::load`/`config::validate`, so holding one means
//! every cross-reference in it resolves (a machine's profile exists and has the machine's
//! architecture, templates compile, local artifacts exist with the right checksum). The daemon
//! shares it behind an `Arc` and swaps it whole on reload.

use crate::arch::Arch;
use crate::mac::{MacAddr, Oui};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub type Digest = [u8; 32];

#[derive(Debug, Clone)]
pub struct Catalog {
    /// The config directory the catalog was loaded from.
    pub dir: PathBuf,
    pub settings: Settings,
    pub profiles: BTreeMap<String, Profile>,
    pub machines: BTreeMap<MacAddr, Machine>,
    pub vendors: Vec<VendorRule>,
    pub unknown: Target,
    pub menus: BTreeMap<String, Menu>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// We hand out addresses and boot information.
    #[default]
    Server,
    /// The site's DHCP server hands out addresses; we answer PXE/HTTP Boot clients only.
    Proxy,
    /// No DHCP from us; the site's DHCP names us as next-server.
    Off,
}

impl std::fmt::Display for DhcpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DhcpMode::Server => "server",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Our address on the boot network: `siaddr`, option 54, TFTP and HTTP URLs.
    pub address: Ipv4Addr,
    pub http_port: u16,
    /// Base of every HTTP URL we hand out, without a trailing slash.
    pub http_base: String,
    pub interface: Option<String>,
    pub dhcp: DhcpSettings,
    /// The iPXE binary for x86-64 UEFI clients: `ipxe.efi` (all drivers) or `snponly.efi`.
    pub ipxe_efi: String,
    /// How long an unreferenced artifact version is kept after its last transfer.
    pub gc_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSettings {
    pub mode: DhcpMode,
    pub subnet: Option<Subnet>,
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub lease_secs: u32,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        let bits = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
        Ipv4Addr::from(bits)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.mask());
        u32::from(ip) & m == u32::from(self.network) & m
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.mask()))
    }
}

/// What a machine (or an unknown one) is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Profile(String),
    Menu(String),
    /// Boot from the local disk (iPXE `exit`, pxelinux `localboot`, GRUB `exit`).
    Local,
    /// Do not answer at all.
    Ignore,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub mac: MacAddr,
    pub hostname: String,
    pub arch: Option<Arch>,
    /// `None`: no target of its own; the vendor rule, then the unknown-machine policy decide.
    pub target: Option<Target>,
    pub address: Option<Ipv4Addr>,
    /// Hand this machine `undionly.kpxe` even when its ROM is already iPXE (a stock-PXE path
    /// test, or a ROM whose iPXE lacks features).
    pub chain_ipxe: bool,
    pub vars: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VendorRule {
    pub oui: Oui,
    pub arch: Option<Arch>,
    pub target: Option<Target>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub arches: BTreeMap<Arch, ArtifactSet>,
}

/// Everything one profile boots on one architecture. Kernel, initrds, device tree and command
/// line travel together under one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactSet {
    pub kernel: Artifact,
    pub initrds: Vec<Artifact>,
    pub fdt: Option<Artifact>,
    /// Kernel command line, a minijinja template (already checked to compile).
    pub cmdline: String,
    /// Content-derived version: the same inputs always give the same version.
    pub version: String,
}

impl ArtifactSet {
    pub fn files(&self) -> impl Iterator<Item = &Artifact> {
        std::iter::once(&self.kernel).chain(self.initrds.iter()).chain(self.fdt.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// File name inside the version directory.
    pub name: String,
    pub source: Source,
    /// Digest of the bytes (path/deb/url), or of the recipe (cpio).
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file inside the config directory (relative path).
    Path(PathBuf),
    /// A file inside a Debian package, pinned by the sha256 of the file.
    Deb { package: String, deb_arch: String, file: String, sha256: Digest },
    /// An http(s) URL, pinned by sha256.
    Url { url: String, sha256: Digest },
    /// A newc cpio archive assembled from other sources (an initrd built by us).
    Cpio { entries: Vec<CpioEntry>, gzip: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpioEntry {
    /// Path inside the archive, relative (`bin/busybox`).
    pub dest: String,
    pub mode: u32,
    pub source: CpioSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CpioSource {
    File { source: Box<Source>, digest: Digest },
    Dir,
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Menu {
    pub name: String,
    pub title: String,
    pub timeout_secs: u32,
    pub default: String,
    pub entries: Vec<MenuEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MenuEntry {
    /// Stable id: the profile name, `local` or `shell`.
    pub id: String,
    pub label: String,
    pub action: MenuAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MenuAction {
    Profile(String),
    Local,
    /// iPXE shell (only offered by iPXE menus).
    Shell,
}

impl Catalog {
    pub fn profile_set(&self, profile: &str, arch: Arch) -> Option<(&Profile, &ArtifactSet)> {
        let p = self.profiles.get(profile)?;
        Some((p, p.arches.get(&arch)?))
    }

    /// Machines with a fixed address, for the DHCP server's pool bookkeeping.
    pub fn fixed_addresses(&self) -> impl Iterator<Item = (MacAddr, Ipv4Addr)> + '_ {
        self.machines.values().filter_map(|m| m.address.map(|a| (m.mac, a)))
    }
}
