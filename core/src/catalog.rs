//! The validated, immutable configuration: profiles, the MAC database, menus and settings.
//!
//! A `Catalog` can only be built by `config::validate`: its fields are private and validation
//! is its only constructor. So holding one means every cross-reference in it resolves (a
//! machine's profile exists and has the machine's architecture, templates compile, local
//! artifacts exist with the right checksum), and nothing downstream checks again. References
//! are the things themselves, not names: a target or menu entry holds its `Profile` (or
//! `Menu`), so "no such profile" cannot even be written. The daemon shares a catalog behind an
//! `Arc` and swaps it whole on reload.

use crate::answers::{Answer, Templates};
use crate::arch::Arch;
use crate::boot_file::BootFile;
use crate::install::AfterInstall;
use crate::mac::{MacAddr, Oui};
use crate::uefi_chain::UefiChain;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type Digest = [u8; 32];

#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    settings: Settings,
    profiles: BTreeMap<String, Arc<Profile>>,
    machines: BTreeMap<MacAddr, Machine>,
    vendors: Vec<VendorRule>,
    unknown: Target,
    unknown_policy: Policy,
    menus: BTreeMap<String, Arc<Menu>>,
    answer_templates: Templates,
    config_source: ConfigSource,
}

/// Where a catalog's files came from: a directory as it is, or one commit of a git repository
/// that the daemon follows. Rendered configs and `explain` name a git source, so what a machine
/// was handed can be traced to the commit that said it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// A config directory read as it is on disk.
    #[default]
    Dir,
    /// A checkout of `commit` (hex object id) fetched from `url` (without credentials).
    Git { url: String, commit: String },
}

impl ConfigSource {
    /// The line rendered configs carry (after `#!ipxe`): `None` for a plain directory, so its
    /// output stays as it was.
    pub fn header(&self) -> Option<String> {
        match self {
            ConfigSource::Dir => None,
            ConfigSource::Git { url, commit } => Some(format!("# config: git {url} commit {commit}")),
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Dir => f.write_str("directory"),
            ConfigSource::Git { url, commit } => write!(f, "git {url} commit {commit}"),
        }
    }
}

/// What validation has checked, assembled into a catalog (by `config::validate` only).
pub(crate) struct Parts {
    pub dir: PathBuf,
    pub settings: Settings,
    pub profiles: BTreeMap<String, Arc<Profile>>,
    pub machines: BTreeMap<MacAddr, Machine>,
    pub vendors: Vec<VendorRule>,
    pub unknown: Target,
    pub unknown_policy: Policy,
    pub menus: BTreeMap<String, Arc<Menu>>,
    pub answer_templates: Templates,
}

/// Where an entry was written: file, line and column (1-based), and its field path, for
/// messages about it found after validation (`appliance check`'s warnings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// Dotted field path, e.g. `machines."52:54:00:12:34:56"`.
    pub field: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.col, self.field)
    }
}

/// The unknown-machine policy's settings besides its target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Its own `uefi_chain`, else the global one applies.
    pub uefi_chain: Option<UefiChain>,
    /// What an unknown machine boots once it reported `installed` (`None`: netboot).
    pub after_install: Option<AfterInstall>,
    /// Where `unknown:` was written (`None`: not written; unknown machines are ignored).
    pub origin: Option<Origin>,
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

impl DhcpMode {
    pub const ALL: [DhcpMode; 3] = [DhcpMode::Server, DhcpMode::Proxy, DhcpMode::Off];

    /// `server`, `proxy` or `off`, as the config spells them.
    pub fn parse(s: &str) -> Option<DhcpMode> {
        DhcpMode::ALL.into_iter().find(|m| m.to_string() == s)
    }
}

impl DhcpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpMode::Server => "server",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        }
    }
}

impl std::fmt::Display for DhcpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// The iPXE binary for x86-64 UEFI clients: one of `BootFile::IPXE_EFI`, `ipxe.efi` (all
    /// drivers) or `snponly.efi`.
    pub ipxe_efi: BootFile,
    /// The boot chain of UEFI machines whose entry, vendor rule or policy names none.
    pub uefi_chain: UefiChain,
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
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Profile(Arc<Profile>),
    Menu(Arc<Menu>),
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
    /// `None`: the vendor rule's, else the global one.
    pub uefi_chain: Option<UefiChain>,
    pub vars: serde_json::Value,
    /// What it boots once it reported `installed`; `None`: its vendor rule or the
    /// unknown-machine policy says.
    pub after_install: Option<AfterInstall>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VendorRule {
    pub oui: Oui,
    pub arch: Option<Arch>,
    pub target: Option<Target>,
    /// `None`: the global one.
    pub uefi_chain: Option<UefiChain>,
    pub comment: Option<String>,
    pub after_install: Option<AfterInstall>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Never empty: a profile is built for at least one architecture.
    pub arches: BTreeMap<Arch, ArtifactSet>,
    /// Answer files by name (`GET /answers/<mac>/<name>`); templates in `Catalog::answer_templates`.
    pub answers: BTreeMap<String, Answer>,
    /// The profile's file, for errors found after validation (`answers::check_all`).
    pub file: PathBuf,
    /// Free-form values for its templates (`profile.vars`): a JSON object.
    pub vars: serde_json::Value,
}

impl Profile {
    /// The architecture of a profile built for exactly one: a client of unknown architecture
    /// can only mean that one.
    pub fn only_arch(&self) -> Option<Arch> {
        let mut arches = self.arches.keys();
        match (arches.next(), arches.next()) {
            (Some(a), None) => Some(*a),
            _ => None,
        }
    }
}

/// Everything one profile boots on one architecture. Kernel, initrds, device tree and command
/// line travel together under one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactSet {
    pub kernel: Artifact,
    pub initrds: Vec<Artifact>,
    pub fdt: Option<Artifact>,
    /// A disk image an installer writes to the machine's disk (the deploy profile's); its
    /// URL and sha256 are `artifacts.image` in the templates. Always a file (path, deb or url).
    pub image: Option<Artifact>,
    /// Kernel command line, a minijinja template (already checked to compile).
    pub cmdline: String,
    /// Content-derived version: the same inputs always give the same version.
    pub version: String,
}

impl ArtifactSet {
    pub fn files(&self) -> impl Iterator<Item = &Artifact> {
        std::iter::once(&self.kernel).chain(self.initrds.iter()).chain(self.fdt.iter()).chain(self.image.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// File name inside the version directory.
    pub name: String,
    pub source: Source,
    /// Digest of the bytes (path/deb/url), or of the recipe (cpio).
    pub digest: Digest,
    /// Where the profile declares it.
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A file inside the config directory (relative path).
    Path(PathBuf),
    /// A file inside a Debian package, pinned by the sha256 of the file; `download` says where
    /// the running appliance can get the package itself (else only the blob cache has it).
    Deb { package: String, deb_arch: String, file: String, sha256: Digest, download: Option<DebDownload> },
    /// An http(s) URL, pinned by sha256.
    Url { url: String, sha256: Digest },
    /// A newc cpio archive assembled from other sources (an initrd built by us).
    Cpio { entries: Vec<CpioEntry>, gzip: bool },
}

/// Where a Debian package can be downloaded, pinned by the sha256 of the `.deb` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebDownload {
    pub url: String,
    pub sha256: Digest,
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

#[derive(Debug, Clone, PartialEq)]
pub struct MenuEntry {
    /// Stable id: the profile name, `local` or `shell`.
    pub id: String,
    pub label: String,
    pub action: MenuAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MenuAction {
    Profile(Arc<Profile>),
    Local,
    /// iPXE shell (only offered by iPXE menus).
    Shell,
}

impl Catalog {
    pub(crate) fn new(p: Parts) -> Catalog {
        let Parts { dir, settings, profiles, machines, vendors, unknown, unknown_policy, menus, answer_templates } = p;
        Catalog {
            dir,
            settings,
            profiles,
            machines,
            vendors,
            unknown,
            unknown_policy,
            menus,
            answer_templates,
            config_source: ConfigSource::Dir,
        }
    }

    /// The same catalog, recorded as coming from `origin` (validation knows only a directory).
    pub fn with_config_source(mut self, source: ConfigSource) -> Catalog {
        self.config_source = source;
        self
    }

    /// Where the catalog's files came from.
    pub fn config_source(&self) -> &ConfigSource {
        &self.config_source
    }

    /// The config directory the catalog was loaded from (local artifact paths are relative to it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name).map(|p| &**p)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> impl ExactSizeIterator<Item = &Profile> {
        self.profiles.values().map(|p| &**p)
    }

    /// The MAC database's entry for `mac`.
    pub fn machine(&self, mac: MacAddr) -> Option<&Machine> {
        self.machines.get(&mac)
    }

    /// Every machine of the MAC database, by MAC.
    pub fn machines(&self) -> impl ExactSizeIterator<Item = &Machine> {
        self.machines.values()
    }

    /// The vendor rule for the OUI of `mac`.
    pub fn vendor_rule(&self, mac: MacAddr) -> Option<&VendorRule> {
        self.vendors.iter().find(|v| v.oui == mac.oui())
    }

    /// Every vendor rule, the on-site overlay's first.
    pub fn vendors(&self) -> &[VendorRule] {
        &self.vendors
    }

    /// What a machine gets when neither its entry nor a vendor rule names a target.
    pub fn unknown(&self) -> &Target {
        &self.unknown
    }

    /// The unknown-machine policy's own settings (its `uefi_chain`, where it was written).
    pub fn unknown_policy(&self) -> &Policy {
        &self.unknown_policy
    }

    /// What an unknown machine boots once it reported `installed`, if the policy says.
    pub fn unknown_after_install(&self) -> Option<AfterInstall> {
        self.unknown_policy.after_install
    }

    /// The compiled templates of every profile's answer files.
    pub fn answer_templates(&self) -> &Templates {
        &self.answer_templates
    }

    pub fn menu(&self, name: &str) -> Option<&Menu> {
        self.menus.get(name).map(|m| &**m)
    }

    /// Every menu, by name.
    pub fn menus(&self) -> impl ExactSizeIterator<Item = &Menu> {
        self.menus.values().map(|m| &**m)
    }

    pub fn profile_set(&self, profile: &str, arch: Arch) -> Option<(&Profile, &ArtifactSet)> {
        let p = self.profile(profile)?;
        Some((p, p.arches.get(&arch)?))
    }

    /// Machines with a fixed address, for the DHCP server's pool bookkeeping.
    pub fn fixed_addresses(&self) -> impl Iterator<Item = (MacAddr, Ipv4Addr)> + '_ {
        self.machines.values().filter_map(|m| m.address.map(|a| (m.mac, a)))
    }
}
