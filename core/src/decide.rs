//! Deciding what a machine gets: the one place that turns "who is asking, and at which stage
//! of its boot" into "what to hand it", and records which rule decided.
//!
//! Architecture invariant: pure. No sockets, no clock, no file system; the same catalog and
//! client always give the same decision. Anything stateful (has this MAC already been chained
//! to iPXE? did it report `installed`?) arrives as a field of `Client`.

use crate::arch::{Arch, Firmware};
use crate::boot_file::BootFile;
use crate::catalog::{Catalog, Machine, Target};
use crate::client::{Client, Learned};
use crate::install::{standing, AfterInstall, Standing};
use crate::mac::{MacAddr, Oui};
use crate::uefi_chain::UefiChain;
use serde::Serialize;
use std::fmt;

/// Which request of the boot sequence we are answering.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A DHCP request (or, with `--dhcp off`, a request for the site's one fixed boot file):
    /// which boot program or script URL to hand out.
    Dhcp,
    /// iPXE asking for its per-machine script.
    IpxeScript,
    /// U-Boot (or PXELINUX) asking for `pxelinux.cfg/…`.
    Pxelinux,
    /// GRUB asking for `grub.cfg…`.
    Grub,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dhcp => "DHCP",
            Stage::IpxeScript => "iPXE script",
            Stage::Pxelinux => "pxelinux.cfg",
            Stage::Grub => "grub.cfg",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tftp,
    Http,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Do not serve this client (no DHCP answer; "not found" for a config file).
    Ignore { reason: IgnoreReason },
    /// Hand out a boot program.
    BootFile { file: BootFile, transport: Transport },
    /// Hand out the machine's boot image by HTTP: a RAM disk with `shim` as its removable-media
    /// program, the signed GRUB beside it, the machine's GRUB config and the files it names
    /// (`boot_image`). What a UEFI HTTP Boot client on the shim chain gets, since Debian's
    /// signed GRUB cannot read over HTTP (docs/firmware.md#a-boot-image-over-http).
    BootImage { shim: BootFile },
    /// The client is iPXE: hand it the entry script URL.
    IpxeScript,
    /// Boot this profile.
    Boot { profile: String, version: String },
    /// Show this menu.
    Menu { menu: String },
    /// Boot from the local disk.
    Local,
}

/// Why a client is not served. `Display` is the sentence logs, `explain` and the iPXE "not
/// served" script show.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IgnoreReason {
    /// At the DHCP stage, the target (the machine's entry, its vendor rule or the
    /// unknown-machine policy) is `ignore`.
    Database,
    /// At a config stage, this rule's target is `ignore`.
    Rule(Rule),
    /// The target profile is not built for the client's architecture.
    NoArtifacts { profile: String, arch: Arch },
    /// Nothing marks the client as boot firmware (an installed OS renewing its lease).
    NotBootClient,
    /// GRUB asking DHCP: it reuses the firmware's lease.
    Grub,
    /// A UEFI client (`http`: HTTP Boot) of an architecture we have no boot program for.
    NoUefiProgram { arch: Arch, http: bool },
    /// A UEFI client (`http`: HTTP Boot) whose architecture nothing told.
    UefiArchUnknown { http: bool },
    /// A config request whose architecture nothing told, for a target that needs it.
    ArchUnknown,
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let http = |http: bool| if http { " HTTP" } else { "" };
        match self {
            IgnoreReason::Database => f.write_str("the MAC database says to ignore this machine"),
            IgnoreReason::Rule(rule) => write!(f, "{rule} says to ignore this machine"),
            IgnoreReason::NoArtifacts { profile, arch } => write!(f, "profile {profile:?} has no {arch} artifacts"),
            IgnoreReason::NotBootClient => {
                f.write_str("not a network-boot client (no PXE/HTTPClient/U-Boot vendor class, no option 93)")
            }
            IgnoreReason::Grub => f.write_str("GRUB reuses the firmware's lease"),
            IgnoreReason::NoUefiProgram { arch, http: h } => write!(f, "no UEFI{} boot program for {arch}", http(*h)),
            IgnoreReason::UefiArchUnknown { http: h } => write!(f, "UEFI{} client of unknown architecture", http(*h)),
            IgnoreReason::ArchUnknown => f.write_str(
                "architecture unknown: a more specific file (default-<arch>) or a MAC database entry is needed",
            ),
        }
    }
}

/// Serialised as its sentence, as when the reason was a string.
impl Serialize for IgnoreReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which rule settled a part of the decision.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The machine's own entry in the MAC database.
    ExactMac(MacAddr),
    /// A vendor rule for this OUI.
    Oui(Oui),
    /// What the client said about itself.
    Client(Learned),
    /// The policy for machines without an entry.
    UnknownPolicy,
    /// The global setting in `appliance.yaml` (or its default).
    Global,
    /// Nothing said anything.
    None,
    /// The machine reported `installed` at `at` (Unix seconds), and `after_install: local`
    /// (said by rule `by`) sends it to its disk until it is re-armed.
    Installed { at: u64, by: Box<Rule> },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::ExactMac(m) => write!(f, "MAC database entry {m}"),
            Rule::Oui(o) => write!(f, "vendor rule {o}"),
            Rule::Client(l) => write!(f, "client ({l})"),
            Rule::UnknownPolicy => write!(f, "unknown-machine policy"),
            Rule::Global => write!(f, "appliance.yaml"),
            Rule::None => write!(f, "no rule"),
            Rule::Installed { at, by } => write!(
                f,
                "installed {}; booting local until re-armed (after_install: local by {by})",
                crate::install::utc(*at)
            ),
        }
    }
}

/// The machine as templates see it.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Identity {
    pub mac: Option<MacAddr>,
    pub hostname: String,
    pub vars: serde_json::Value,
    /// Whether the MAC database knows this machine.
    pub known: bool,
    /// The DNS domain the appliance's DHCP hands out (`dhcp.domain`), for templates; absent
    /// (undefined in a template) when none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The boot chain of a UEFI client, and the rule that chose it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct ChainChoice {
    pub chain: UefiChain,
    pub rule: Rule,
}

#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Decision {
    pub stage: Stage,
    pub outcome: Outcome,
    pub arch: Option<Arch>,
    pub arch_rule: Rule,
    pub target_rule: Rule,
    pub machine: Identity,
    /// For a UEFI firmware's own request (PXE or HTTP Boot, DHCP stage): the chain it is on.
    pub uefi_chain: Option<ChainChoice>,
}

/// Decides what `client` gets at `stage`.
pub fn decide(catalog: &Catalog, client: &Client, stage: Stage) -> Decision {
    let entry = client.mac.and_then(|m| catalog.machine(m));
    let vendor = client.mac.and_then(|m| catalog.vendor_rule(m));
    let (arch, arch_rule) = if let Some((a, e)) = entry.and_then(|e| e.arch.map(|a| (a, e))) {
        (Some(a), Rule::ExactMac(e.mac))
    } else if let Some((a, v)) = vendor.and_then(|v| v.arch.map(|a| (a, v))) {
        (Some(a), Rule::Oui(v.oui))
    } else if let Some((a, learned)) = &client.arch_hint {
        (Some(*a), Rule::Client(learned.clone()))
    } else {
        (None, Rule::None)
    };
    let (target, mut target_rule) = target_of(catalog, client.mac);
    let machine = Identity { domain: catalog.settings().dhcp.domain.clone(), ..identity(client.mac, entry) };
    let uefi = stage == Stage::Dhcp && matches!(client.firmware, Firmware::UefiPxe | Firmware::UefiHttp);
    let uefi_chain = uefi.then(|| uefi_chain(catalog, client.mac));
    let outcome = match stage {
        Stage::Dhcp => {
            let chain = uefi_chain.as_ref().map_or(UefiChain::default(), |c| c.chain);
            dhcp_outcome(catalog, client, entry, arch, target, chain)
        }
        // Installed, and told to boot its disk then: local until re-armed, whatever the target.
        _ => match installed_local(catalog, client).filter(|_| *target != Target::Ignore) {
            Some(rule) => {
                target_rule = rule;
                Outcome::Local
            }
            None => config_outcome(arch, target, &target_rule),
        },
    };
    Decision { stage, outcome, arch, arch_rule, target_rule, machine, uefi_chain }
}

/// What `mac` is sent to and by which rule: its MAC database entry's target, else its vendor
/// rule's, else the unknown-machine policy.
pub fn target_of(catalog: &Catalog, mac: Option<MacAddr>) -> (&Target, Rule) {
    let entry = mac.and_then(|m| catalog.machine(m));
    let vendor = mac.and_then(|m| catalog.vendor_rule(m));
    if let Some((t, e)) = entry.and_then(|e| e.target.as_ref().map(|t| (t, e))) {
        (t, Rule::ExactMac(e.mac))
    } else if let Some((t, v)) = vendor.and_then(|v| v.target.as_ref().map(|t| (t, v))) {
        (t, Rule::Oui(v.oui))
    } else {
        (catalog.unknown(), Rule::UnknownPolicy)
    }
}

/// What `mac` boots once installed, and which rule says it: the first of its entry, its vendor
/// rule and the unknown-machine policy that says anything; netboot when none does.
pub fn after_install_of(catalog: &Catalog, mac: Option<MacAddr>) -> (AfterInstall, Rule) {
    let entry = mac.and_then(|m| catalog.machine(m));
    let vendor = mac.and_then(|m| catalog.vendor_rule(m));
    if let Some((a, e)) = entry.and_then(|e| e.after_install.map(|a| (a, e))) {
        (a, Rule::ExactMac(e.mac))
    } else if let Some((a, v)) = vendor.and_then(|v| v.after_install.map(|a| (a, v))) {
        (a, Rule::Oui(v.oui))
    } else if let Some(a) = catalog.unknown_after_install() {
        (a, Rule::UnknownPolicy)
    } else {
        (AfterInstall::Netboot, Rule::None)
    }
}

/// The rule that sends an installed machine to its disk: it has an `installed` record made
/// under its entry in force, and `after_install: local` applies to it.
fn installed_local(catalog: &Catalog, client: &Client) -> Option<Rule> {
    let Standing::Installed { at } = standing(client.installed.as_ref(), client.mac.and_then(|m| catalog.machine(m)))
    else {
        return None;
    };
    match after_install_of(catalog, client.mac) {
        (AfterInstall::Local, by) => Some(Rule::Installed { at, by: Box::new(by) }),
        (AfterInstall::Netboot, _) => None,
    }
}

/// The boot chain of the UEFI machine `mac`: its MAC database entry's, else its vendor rule's,
/// else (a machine without an entry) the unknown-machine policy's, else the global one.
pub fn uefi_chain(catalog: &Catalog, mac: Option<MacAddr>) -> ChainChoice {
    let entry = mac.and_then(|m| catalog.machine(m));
    let vendor = mac.and_then(|m| catalog.vendor_rule(m));
    let choice = |chain, rule| ChainChoice { chain, rule };
    if let Some(e) = entry.filter(|e| e.uefi_chain.is_some()) {
        return choice(e.uefi_chain.unwrap_or_default(), Rule::ExactMac(e.mac));
    }
    if let Some(v) = vendor.filter(|v| v.uefi_chain.is_some()) {
        return choice(v.uefi_chain.unwrap_or_default(), Rule::Oui(v.oui));
    }
    match catalog.unknown_policy().uefi_chain {
        Some(chain) if entry.is_none() => choice(chain, Rule::UnknownPolicy),
        _ => choice(catalog.settings().uefi_chain, Rule::Global),
    }
}

/// With `--dhcp off` the site's DHCP hands everyone one fixed boot program name, and the TFTP
/// request for it may be all we know of a machine (when its DHCP was not overheard). Decides
/// what to serve under that name: what the DHCP stage would hand this client, where its
/// firmware is known. Otherwise the request itself shows a PXE client, and its architecture
/// (MAC database, OUI rule) tells which kind where it can: an arm64 machine asking for a boot
/// program is UEFI (or U-Boot's EFI fallback, which runs the same binaries). An x86 machine
/// could be BIOS or UEFI, so it gets the file it named. A second stage (shim's GRUB, which
/// shim asks for by its fixed name) is served as named to any machine that is served at all.
pub fn decide_boot_file(catalog: &Catalog, client: &Client, named: BootFile) -> Decision {
    if named.is_second_stage() {
        // Only the MAC database can refuse it: the request itself may be all we know of the
        // machine, and shim asking for it shows a UEFI machine we already served.
        let d = decide(catalog, client, Stage::Dhcp);
        return match d.outcome {
            Outcome::Ignore { reason: IgnoreReason::Database } => d,
            _ => Decision { outcome: Outcome::BootFile { file: named, transport: Transport::Tftp }, ..d },
        };
    }
    if client.firmware != Firmware::Unknown {
        return decide(catalog, client, Stage::Dhcp);
    }
    let arm64 = decide(catalog, client, Stage::Dhcp).arch == Some(Arch::Arm64);
    let mut pxe = client.clone();
    pxe.firmware = if arm64 { Firmware::UefiPxe } else { Firmware::BiosPxe };
    let d = decide(catalog, &pxe, Stage::Dhcp);
    match d.outcome {
        // BIOS or UEFI cannot be told apart: the name the site's DHCP gave is the best guess.
        Outcome::BootFile { .. } if !arm64 => {
            Decision { outcome: Outcome::BootFile { file: named, transport: Transport::Tftp }, ..d }
        }
        _ => d,
    }
}

fn identity(mac: Option<MacAddr>, entry: Option<&Machine>) -> Identity {
    match (mac, entry) {
        (_, Some(m)) => {
            Identity { mac: Some(m.mac), hostname: m.hostname.clone(), vars: m.vars.clone(), known: true, domain: None }
        }
        (Some(mac), None) => Identity {
            mac: Some(mac),
            hostname: format!("node-{}", mac.hex()),
            vars: serde_json::Value::Object(Default::default()),
            known: false,
            domain: None,
        },
        (None, None) => Identity {
            mac: None,
            hostname: "node".into(),
            vars: serde_json::Value::Object(Default::default()),
            known: false,
            domain: None,
        },
    }
}

fn ignore(reason: IgnoreReason) -> Outcome {
    Outcome::Ignore { reason }
}

fn dhcp_outcome(
    catalog: &Catalog,
    client: &Client,
    entry: Option<&Machine>,
    arch: Option<Arch>,
    target: &Target,
    chain: UefiChain,
) -> Outcome {
    if *target == Target::Ignore {
        return ignore(IgnoreReason::Database);
    }
    if let (Target::Profile(p), Some(a)) = (target, arch) {
        if !p.arches.contains_key(&a) {
            return ignore(IgnoreReason::NoArtifacts { profile: p.name.clone(), arch: a });
        }
    }
    let efi_ipxe = catalog.settings().ipxe_efi;
    let tftp = |file| Outcome::BootFile { file, transport: Transport::Tftp };
    let http = |file| Outcome::BootFile { file, transport: Transport::Http };
    match client.firmware {
        Firmware::Unknown => ignore(IgnoreReason::NotBootClient),
        Firmware::Grub => ignore(IgnoreReason::Grub),
        Firmware::Ipxe { efi } => {
            // The QEMU iPXE ROM and the undionly.kpxe it chains send byte-identical options, so "chain
            // once per MAC" is remembered by the caller, not read from the packet
            // (docs/firmware.md#ipxe-rom-and-undionly).
            let wants_chain = entry.is_some_and(|e| e.chain_ipxe) && !client.ipxe_chained;
            if wants_chain {
                tftp(if efi { efi_ipxe } else { BootFile::Undionly })
            } else {
                Outcome::IpxeScript
            }
        }
        Firmware::BiosPxe => tftp(BootFile::Undionly),
        Firmware::UefiPxe | Firmware::UefiHttp => {
            let over_http = client.firmware == Firmware::UefiHttp;
            let hand = |file| if over_http { http(file) } else { tftp(file) };
            match arch.map(|a| (a, chain.first_program(a, efi_ipxe))) {
                // shim's GRUB would go on over HTTP, which Debian's signed GRUB cannot.
                Some((_, Some(shim))) if over_http && shim.second_stage().is_some() => Outcome::BootImage { shim },
                Some((_, Some(file))) => hand(file),
                Some((a, None)) => ignore(IgnoreReason::NoUefiProgram { arch: a, http: over_http }),
                None => ignore(IgnoreReason::UefiArchUnknown { http: over_http }),
            }
        }
        Firmware::Uboot => tftp(BootFile::UbootScript),
    }
}

fn config_outcome(arch: Option<Arch>, target: &Target, rule: &Rule) -> Outcome {
    let arch_unknown = || ignore(IgnoreReason::ArchUnknown);
    match target {
        Target::Ignore => ignore(IgnoreReason::Rule(rule.clone())),
        Target::Local => Outcome::Local,
        Target::Menu(m) => match arch {
            Some(_) => Outcome::Menu { menu: m.name.clone() },
            None => arch_unknown(),
        },
        Target::Profile(p) => {
            // A profile built for one architecture only needs no hint.
            let Some(arch) = arch.or_else(|| p.only_arch()) else { return arch_unknown() };
            match p.arches.get(&arch) {
                Some(set) => Outcome::Boot { profile: p.name.clone(), version: set.version.clone() },
                None => ignore(IgnoreReason::NoArtifacts { profile: p.name.clone(), arch }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each reason reads as the sentence logs, `explain` and the iPXE "not served" script have
    /// always shown.
    #[test]
    fn ignore_reasons_read_as_sentences() {
        let rule = Rule::ExactMac(MacAddr([0x52, 0x54, 0, 0, 0, 6]));
        let cases = [
            (IgnoreReason::Database, "the MAC database says to ignore this machine"),
            (IgnoreReason::Rule(rule), "MAC database entry 52:54:00:00:00:06 says to ignore this machine"),
            (
                IgnoreReason::NoArtifacts { profile: "live".into(), arch: Arch::Arm64 },
                "profile \"live\" has no arm64 artifacts",
            ),
            (
                IgnoreReason::NotBootClient,
                "not a network-boot client (no PXE/HTTPClient/U-Boot vendor class, no option 93)",
            ),
            (IgnoreReason::Grub, "GRUB reuses the firmware's lease"),
            (IgnoreReason::NoUefiProgram { arch: Arch::Riscv64, http: false }, "no UEFI boot program for riscv64"),
            (IgnoreReason::NoUefiProgram { arch: Arch::X86, http: true }, "no UEFI HTTP boot program for x86"),
            (IgnoreReason::UefiArchUnknown { http: false }, "UEFI client of unknown architecture"),
            (IgnoreReason::UefiArchUnknown { http: true }, "UEFI HTTP client of unknown architecture"),
            (
                IgnoreReason::ArchUnknown,
                "architecture unknown: a more specific file (default-<arch>) or a MAC database entry is needed",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
