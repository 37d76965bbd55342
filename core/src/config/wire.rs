//! The YAML as written: serde structs that mirror the files one to one, with
//! `deny_unknown_fields` so a typo is an error rather than a silently ignored key.
//!
//! Nothing here is trusted; `validate` turns these into `catalog` types.

use crate::install::AfterInstall;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `appliance.yaml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub server: ServerWire,
    #[serde(default)]
    pub dhcp: DhcpWire,
    #[serde(default)]
    pub ipxe: IpxeWire,
    #[serde(default)]
    pub artifacts: ArtifactsWire,
    /// The boot chain of UEFI machines nothing else names one for: `ipxe` or `shim`.
    pub uefi_chain: Option<crate::uefi_chain::UefiChain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerWire {
    pub address: String,
    pub http_port: Option<u16>,
    pub http_base: Option<String>,
    pub interface: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DhcpWire {
    pub mode: Option<crate::catalog::DhcpMode>,
    pub subnet: Option<String>,
    pub pool: Option<PoolWire>,
    pub lease_time: Option<u32>,
    pub router: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolWire {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IpxeWire {
    pub efi_binary: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsWire {
    pub gc_grace_minutes: Option<u64>,
}

/// `machines.yaml` (and the on-site overlay). Entries stay raw YAML here so that each machine
/// and vendor rule is checked on its own and one bad entry does not hide the others' errors.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MacDbFile {
    #[serde(default)]
    pub machines: serde_yaml::Mapping,
    #[serde(default)]
    pub vendors: Vec<serde_yaml::Value>,
    pub unknown: Option<TargetWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineWire {
    pub hostname: Option<String>,
    pub arch: Option<String>,
    pub profile: Option<String>,
    pub menu: Option<String>,
    pub action: Option<ActionWire>,
    pub address: Option<String>,
    #[serde(default)]
    pub chain_ipxe: bool,
    pub uefi_chain: Option<crate::uefi_chain::UefiChain>,
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml::Value>,
    /// `local`: boot the disk once the machine reported `installed`, until re-armed.
    pub after_install: Option<AfterInstall>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorWire {
    pub oui: String,
    pub arch: Option<String>,
    pub profile: Option<String>,
    pub menu: Option<String>,
    pub action: Option<ActionWire>,
    pub uefi_chain: Option<crate::uefi_chain::UefiChain>,
    pub comment: Option<String>,
    pub after_install: Option<AfterInstall>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionWire {
    Profile,
    Menu,
    Local,
    Ignore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetWire {
    pub action: Option<ActionWire>,
    pub profile: Option<String>,
    pub menu: Option<String>,
    pub uefi_chain: Option<crate::uefi_chain::UefiChain>,
    pub after_install: Option<AfterInstall>,
}

/// `menus.yaml`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MenusFile {
    #[serde(default)]
    pub menus: BTreeMap<String, MenuWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuWire {
    pub title: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    pub default: Option<String>,
    pub entries: Vec<MenuEntryWire>,
}

fn default_timeout() -> u32 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuEntryWire {
    pub profile: Option<String>,
    pub action: Option<MenuActionWire>,
    pub label: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MenuActionWire {
    Local,
    Shell,
}

/// One profile file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub cmdline: String,
    pub arch: BTreeMap<String, ArchWire>,
    /// Answer files: name -> template path in the config directory.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    /// Free-form values for the profile's templates (`profile.vars.*`), e.g. defaults that a
    /// machine's own `vars` may override.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchWire {
    pub kernel: SourceWire,
    #[serde(default)]
    pub initrd: Vec<SourceWire>,
    pub fdt: Option<SourceWire>,
    /// A disk image for an installer to write (a file: `path`, `deb` or `url`).
    pub image: Option<SourceWire>,
    /// Overrides the profile's command line for this architecture.
    pub cmdline: Option<String>,
}

/// An artifact source: exactly one of `path`, `deb`, `url`, `cpio`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceWire {
    pub name: Option<String>,
    pub path: Option<String>,
    pub deb: Option<String>,
    /// Debian architecture of the package; defaults to the profile architecture's.
    pub deb_arch: Option<String>,
    /// File inside the package (glob `*` allowed in the last component).
    pub file: Option<String>,
    /// With `deb`: where the running appliance downloads the package (then `deb_sha256` pins
    /// the `.deb`); alone: the artifact's own download URL.
    pub url: Option<String>,
    /// The sha256 of the `.deb` file that `url` names (with `deb` and `url`).
    pub deb_sha256: Option<String>,
    pub sha256: Option<String>,
    pub cpio: Option<Vec<CpioEntryWire>>,
    #[serde(default)]
    pub gzip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpioEntryWire {
    pub dest: String,
    /// Octal permission bits as a string, e.g. "0755".
    pub mode: Option<String>,
    #[serde(default)]
    pub dir: bool,
    pub symlink: Option<String>,
    pub path: Option<String>,
    pub deb: Option<String>,
    pub deb_arch: Option<String>,
    pub file: Option<String>,
    pub url: Option<String>,
    pub deb_sha256: Option<String>,
    pub sha256: Option<String>,
}
