//! Identifying the client: what a DHCP packet, a TFTP path or an HTTP request tells us about
//! the machine on the other end (its MAC, architecture, firmware), and how each fact was learned.
//!
//! Pure: no I/O. The socket code hands us what it received; filling in facts that need the
//! outside world (a lease's IP → MAC, the kernel's neighbour table) is the caller's job.

use crate::arch::{arch_code, Arch, BootEnv, Firmware};
use crate::mac::MacAddr;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

/// Where a fact about the client came from.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Learned {
    /// DHCP `chaddr`.
    Chaddr,
    /// DHCP option 93 with this code.
    Option93(u16),
    /// DHCP option 60 (vendor class), as sent.
    VendorClass(String),
    /// DHCP option 77 `iPXE`.
    UserClass,
    /// The TFTP path the client asked for.
    TftpPath(String),
    /// Query parameters of an HTTP request our iPXE script made.
    HttpQuery,
    /// The address the request came from, mapped to a MAC by the caller.
    SourceAddress(Ipv4Addr),
    /// Facts this MAC sent in its own DHCP broadcasts, overheard earlier.
    Overheard,
}

impl fmt::Display for Learned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Learned::Chaddr => write!(f, "DHCP chaddr"),
            Learned::Option93(c) => write!(f, "DHCP option 93 = {c}"),
            Learned::VendorClass(v) => write!(f, "DHCP option 60 {v:?}"),
            Learned::UserClass => write!(f, "DHCP option 77 iPXE"),
            Learned::TftpPath(p) => write!(f, "TFTP path {p:?}"),
            Learned::HttpQuery => write!(f, "HTTP query"),
            Learned::SourceAddress(ip) => write!(f, "source address {ip}"),
            Learned::Overheard => write!(f, "overheard DHCP"),
        }
    }
}

/// Everything we know about a client at one moment of its boot.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Client {
    pub mac: Option<MacAddr>,
    pub mac_learned: Option<Learned>,
    /// The architecture the client itself claims, best source first.
    pub arch_hint: Option<(Arch, Learned)>,
    pub firmware: Firmware,
    /// Option 93 as sent (unassigned codes included), for logs and `explain`.
    pub client_arch_code: Option<u16>,
    pub vendor_class: Option<String>,
    /// Whether iPXE's option 175 (its feature list) was present.
    pub ipxe_features: bool,
    /// Relay agent address (`giaddr`), when the request was relayed.
    pub relay: Option<Ipv4Addr>,
    /// The client's IPv4 address, when known (`ciaddr`, a TFTP/HTTP source address, a hex-IP path).
    pub ip: Option<Ipv4Addr>,
    /// Set by the caller from its state: this MAC was already handed an iPXE binary in this
    /// boot, so an iPXE request with the very same options is the chained iPXE, not the ROM.
    pub ipxe_chained: bool,
    /// Set by the caller from its install log: this MAC's `installed` record, if it has one.
    pub installed: Option<crate::install::Installed>,
}

impl Client {
    pub fn new(firmware: Firmware) -> Self {
        Client {
            mac: None,
            mac_learned: None,
            arch_hint: None,
            firmware,
            client_arch_code: None,
            vendor_class: None,
            ipxe_features: false,
            relay: None,
            ip: None,
            ipxe_chained: false,
            installed: None,
        }
    }

    pub fn with_mac(mut self, mac: MacAddr, learned: Learned) -> Self {
        self.mac = Some(mac);
        self.mac_learned = Some(learned);
        self
    }

    /// Applies what a TFTP config path says about its client: the MAC it was resolved to (named
    /// by the path, or found by the caller from an address) and the architecture the path
    /// names. The one place both the TFTP router and `explain` learn from a path.
    pub fn learn_from_path(mut self, path: &str, facts: &PathFacts, mac: Option<(MacAddr, Learned)>) -> Self {
        if let Some((mac, learned)) = mac {
            self = self.with_mac(mac, learned);
        }
        if let Some(a) = facts.arch {
            self.arch_hint = Some((a, Learned::TftpPath(path.into())));
        }
        self
    }

    /// Adds what an earlier, overheard DHCP exchange told us about this MAC, without
    /// overriding anything this request said itself.
    pub fn merge_overheard(&mut self, dhcp: &Client) {
        if self.arch_hint.is_none() {
            self.arch_hint = dhcp.arch_hint.clone().map(|(a, _)| (a, Learned::Overheard));
        }
        if self.firmware == Firmware::Unknown {
            self.firmware = dhcp.firmware;
        }
        self.client_arch_code = self.client_arch_code.or(dhcp.client_arch_code);
        if self.vendor_class.is_none() {
            self.vendor_class.clone_from(&dhcp.vendor_class);
        }
    }
}

/// What the vendor class (option 60) says.
fn parse_vendor_class(vc: &str) -> (Option<u16>, Option<BootEnv>) {
    if let Some(rest) = vc.strip_prefix("PXEClient").or_else(|| vc.strip_prefix("HTTPClient")) {
        let http = vc.starts_with("HTTPClient");
        let code = rest.strip_prefix(":Arch:").and_then(|r| r.get(..5)).and_then(|d| d.parse::<u16>().ok());
        // The arch in the vendor class is authoritative when present (the caller maps the code);
        // a bare `PXEClient` predates RFC 4578 and so is a BIOS ROM.
        let env = match (http, code) {
            (true, _) => BootEnv::UefiHttp,
            (false, Some(c)) => arch_code(c).map_or(BootEnv::Other, |r| r.env),
            (false, None) => BootEnv::Bios,
        };
        return (code, Some(env));
    }
    if let Some(rest) = vc.strip_prefix("U-Boot") {
        let code = match rest.trim_start_matches('.') {
            r if r.starts_with("armv8") || r.starts_with("aarch64") => Some(0x16),
            r if r.starts_with("armv7") || r.starts_with("arm") => Some(0x15),
            _ => None,
        };
        return (code, Some(BootEnv::Uboot));
    }
    (None, None)
}

/// True when option 77 carries `iPXE`, raw (as iPXE sends it) or RFC 3004 length-prefixed.
fn is_ipxe_user_class(data: &[u8]) -> bool {
    data == b"iPXE" || (data.len() > 1 && usize::from(data[0]) == data.len() - 1 && &data[1..] == b"iPXE")
}

/// Identifies the sender of a DHCP request. Missing, empty or malformed optional fields
/// (option 97 among them) are tolerated: they only mean we learn less.
pub fn from_dhcp(msg: &Message) -> Client {
    let mut client = Client::new(Firmware::Unknown);
    let chaddr = msg.chaddr();
    if chaddr.len() >= 6 && chaddr[..6] != [0; 6] {
        let mut b = [0u8; 6];
        b.copy_from_slice(&chaddr[..6]);
        client = client.with_mac(MacAddr(b), Learned::Chaddr);
    }
    let opts = msg.opts();
    let opt93 = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    client.client_arch_code = opt93;
    let vendor = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    };
    let ipxe = matches!(opts.get(OptionCode::UserClass), Some(DhcpOption::UserClass(u)) if is_ipxe_user_class(u));
    client.ipxe_features = opts.get(OptionCode::Unknown(175)).is_some();
    let (vc_code, vc_env) = vendor.as_deref().map(parse_vendor_class).unwrap_or((None, None));

    let from93 = opt93.and_then(arch_code);
    let from_vc = vc_code.and_then(arch_code);
    client.arch_hint = match (from93, from_vc) {
        (Some(r), _) if r.arch.is_some() => r.arch.map(|a| (a, Learned::Option93(r.code))),
        (_, Some(r)) if r.arch.is_some() => {
            r.arch.map(|a| (a, Learned::VendorClass(vendor.clone().unwrap_or_default())))
        }
        _ => None,
    };
    let env = from93.map(|r| r.env).or(vc_env).or(from_vc.map(|r| r.env));
    // A U-Boot vendor class wins over option 93 = 11: that is U-Boot's own EFI retry.
    let env = if vc_env == Some(BootEnv::Uboot) { Some(BootEnv::Uboot) } else { env };
    let efi = matches!(env, Some(BootEnv::Uefi | BootEnv::UefiHttp));
    client.firmware = if ipxe {
        Firmware::Ipxe { efi }
    } else if vc_env == Some(BootEnv::UefiHttp) {
        Firmware::UefiHttp
    } else {
        match env {
            Some(BootEnv::Bios) => Firmware::BiosPxe,
            Some(BootEnv::Uefi) => Firmware::UefiPxe,
            Some(BootEnv::UefiHttp) => Firmware::UefiHttp,
            Some(BootEnv::Uboot | BootEnv::UbootHttp) => Firmware::Uboot,
            Some(BootEnv::Other) | None => Firmware::Unknown,
        }
    };
    // A plain OS DHCP client sends no option 93 and no PXE vendor class; keep it Unknown.
    client.vendor_class = vendor;
    let giaddr = msg.giaddr();
    client.relay = (!giaddr.is_unspecified()).then_some(giaddr);
    let ciaddr = msg.ciaddr();
    client.ip = (!ciaddr.is_unspecified()).then_some(ciaddr);
    client
}

/// What a TFTP path asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TftpRequest {
    /// `pxelinux.cfg/…` (U-Boot's pxelinux emulation and PXELINUX).
    Pxelinux(PathFacts),
    /// `grub/grub.cfg…` or `grub.cfg…`; also the Debian installer's signed GRUB's
    /// `debian-installer/<arch>/grub/grub.cfg`.
    GrubConfig(PathFacts),
    /// `grub/<platform>/<name>.lst` and other GRUB module look-ups that we answer "not found" at once.
    GrubAux { arch: Option<Arch> },
    /// `boot.scr.uimg`, the script U-Boot's `bootcmd_dhcp` fetches.
    UbootScript,
    /// `boot.ipxe`, the iPXE entry script.
    IpxeEntry,
    /// A versioned artifact: `artifacts/<profile>/<version>/<file>`.
    Artifact { profile: String, version: String, file: String },
    /// Anything else: a bootloader binary, the fixed boot file of `--dhcp off`, a plain file.
    Other(String),
}

/// What a config path says about the client.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PathFacts {
    pub mac: Option<MacAddr>,
    /// Full IPv4 address from an 8-digit hex name (`0A4D0066`).
    pub ip: Option<Ipv4Addr>,
    /// A hex-IP prefix shorter than 8 digits; never identifies a single machine.
    pub ip_prefix: bool,
    pub arch: Option<Arch>,
    /// `default` / `default-<arch>` / `grub.cfg`: the client had no more specific match.
    pub is_default: bool,
}

/// Normalises a TFTP path the way firmware spells it (leading `/`, `\` separators from some
/// PXE ROMs) and classifies it. Traversal checks belong to the file-serving code.
pub fn classify_tftp(raw: &str) -> TftpRequest {
    let path = raw.replace('\\', "/");
    let path = path.trim_start_matches('/');
    // The installer's signed GRUB has the prefix `/debian-installer/<debian arch>/grub`; its
    // files are the plain GRUB ones, and the directory names the architecture.
    let installer = path.strip_prefix("debian-installer/").and_then(|p| p.split_once('/'));
    if let Some((arch, inner)) = installer.filter(|(_, inner)| inner.starts_with("grub/")) {
        return match (Arch::from_loose(arch), classify_tftp(inner)) {
            (Some(arch), TftpRequest::GrubConfig(mut facts)) => {
                facts.arch = facts.arch.or(Some(arch));
                TftpRequest::GrubConfig(facts)
            }
            (Some(arch), TftpRequest::GrubAux { arch: named }) => TftpRequest::GrubAux { arch: named.or(Some(arch)) },
            _ => TftpRequest::Other(path.to_string()),
        };
    }
    if let Some(name) = path.strip_prefix("pxelinux.cfg/") {
        return TftpRequest::Pxelinux(config_name_facts(name, "01-", "default"));
    }
    let grub = path.strip_prefix("grub/").unwrap_or(path);
    if let Some(name) = grub.strip_prefix("grub.cfg") {
        let name = name.strip_prefix('-').unwrap_or(name);
        let mut facts = if name.is_empty() {
            PathFacts { is_default: true, ..PathFacts::default() }
        } else {
            config_name_facts(name, "01-", "")
        };
        if name.is_empty() {
            facts.is_default = true;
        }
        return TftpRequest::GrubConfig(facts);
    }
    if path.starts_with("grub/") {
        let platform = path.split('/').nth(1).unwrap_or("");
        let arch = platform.split('-').next().and_then(Arch::from_loose);
        let arch = if platform == "i386-pc" { Some(Arch::X86_64) } else { arch };
        return TftpRequest::GrubAux { arch };
    }
    match path {
        "boot.scr.uimg" | "boot.scr" => return TftpRequest::UbootScript,
        "boot.ipxe" => return TftpRequest::IpxeEntry,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("artifacts/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [profile, version, file] = parts[..] {
            return TftpRequest::Artifact {
                profile: profile.to_string(),
                version: version.to_string(),
                file: file.to_string(),
            };
        }
    }
    TftpRequest::Other(path.to_string())
}

/// Reads a pxelinux/GRUB config name: `01-<mac>`, hex IP (or a prefix of it),
/// `default`, `default-<arch…>`, `default.<arch>`.
fn config_name_facts(name: &str, mac_prefix: &str, default: &str) -> PathFacts {
    let mut facts = PathFacts::default();
    if let Some(m) = name.strip_prefix(mac_prefix) {
        facts.mac = MacAddr::parse(m).ok();
        if facts.mac.is_some() {
            return facts;
        }
    }
    if !default.is_empty() {
        if let Some(rest) = name.strip_prefix(default) {
            facts.is_default = true;
            // `default-arm-<soc>-<board>` (U-Boot), `default.arm64` (a per-arch default), `default-x86_64`.
            let first = rest.trim_start_matches(['-', '.']).split(['-', '.', '_']).next().unwrap_or("");
            // U-Boot names both 32- and 64-bit ARM "arm"; arm64 is the one we boot, and the
            // MAC database (consulted first) settles the rest.
            let word = rest.trim_start_matches(['-', '.']);
            facts.arch = if word.starts_with("x86_64") {
                Some(Arch::X86_64)
            } else if first == "arm" {
                Some(Arch::Arm64)
            } else {
                Arch::from_loose(first)
            };
            return facts;
        }
    }
    if !name.is_empty() && name.len() <= 8 && name.bytes().all(|c| c.is_ascii_hexdigit()) {
        if name.len() == 8 {
            let n = u32::from_str_radix(name, 16).unwrap_or(0);
            facts.ip = Some(Ipv4Addr::from(n));
        } else {
            facts.ip_prefix = true;
        }
    }
    facts
}

/// Identifies the client of an HTTP request made by our iPXE entry script, from its query
/// (`mac=${net0/mac}&buildarch=${buildarch}&platform=${platform}`).
pub fn from_http_query(query: &str) -> Client {
    let mut mac = None;
    let mut buildarch = None;
    let mut platform = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "mac" => mac = MacAddr::parse(&v).ok(),
            "buildarch" | "arch" => buildarch = Some(v),
            "platform" => platform = Some(v),
            _ => {}
        }
    }
    let efi = platform.as_deref() == Some("efi");
    let mut client = Client::new(Firmware::Ipxe { efi });
    if let Some(mac) = mac {
        client = client.with_mac(mac, Learned::HttpQuery);
    }
    // undionly.kpxe is an i386 build even on 64-bit machines: on pcbios read i386 as x86_64,
    // as option 93 = 0 is read.
    client.arch_hint = buildarch.as_deref().and_then(Arch::from_loose).map(|a| {
        let a = if a == Arch::X86 && !efi { Arch::X86_64 } else { a };
        (a, Learned::HttpQuery)
    });
    client
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(path: &str) -> PathFacts {
        match classify_tftp(path) {
            TftpRequest::Pxelinux(f) | TftpRequest::GrubConfig(f) => f,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn pxelinux_paths_in_uboots_order() {
        // The order U-Boot asks in, for 10.77.0.102 / 52:54:00:77:00:05 (docs/firmware.md#u-boot-pxelinux-lookup).
        let mac = MacAddr::parse("52:54:00:77:00:05").unwrap();
        assert_eq!(facts("pxelinux.cfg/01-52-54-00-77-00-05").mac, Some(mac));
        assert_eq!(facts("pxelinux.cfg/0A4D0066").ip, Some(Ipv4Addr::new(10, 77, 0, 102)));
        assert!(facts("pxelinux.cfg/0A4D006").ip_prefix);
        assert!(facts("pxelinux.cfg/0").ip_prefix);
        let arm = facts("pxelinux.cfg/default-arm");
        assert!(arm.is_default);
        assert_eq!(arm.arch, Some(Arch::Arm64));
        assert_eq!(facts("pxelinux.cfg/default-arm-virt-qemu").arch, Some(Arch::Arm64));
        assert_eq!(facts("pxelinux.cfg/default.x86_64").arch, Some(Arch::X86_64));
        let d = facts("/pxelinux.cfg/default");
        assert!(d.is_default && d.arch.is_none() && d.mac.is_none());
    }

    #[test]
    fn a_client_learns_the_resolved_mac_and_the_named_architecture_from_a_path() {
        let path = "pxelinux.cfg/default-arm";
        let ip = Ipv4Addr::new(10, 77, 0, 102);
        let mac = MacAddr::parse("52:54:00:77:00:05").unwrap();
        let c =
            Client::new(Firmware::Uboot).learn_from_path(path, &facts(path), Some((mac, Learned::SourceAddress(ip))));
        assert_eq!(c.mac, Some(mac));
        assert_eq!(c.mac_learned, Some(Learned::SourceAddress(ip)));
        assert_eq!(c.arch_hint, Some((Arch::Arm64, Learned::TftpPath(path.into()))));
        // A path that names nothing leaves the client as it was.
        let bare =
            Client::new(Firmware::Uboot).learn_from_path("pxelinux.cfg/default", &facts("pxelinux.cfg/default"), None);
        assert_eq!((bare.mac, bare.arch_hint), (None, None));
    }

    #[test]
    fn a_query_mac_of_non_ascii_bytes_is_no_mac() {
        // Percent-decoded to twelve bytes that are eleven characters (the HTTP fuzz target's
        // crash: a cut at every second byte falls inside the é).
        let c = from_http_query("mac=a%C3%A9bcdefghij&buildarch=x86_64");
        assert_eq!(c.mac, None);
        // And a TFTP name that carries such a MAC (pxelinux.cfg/01-.., grub.cfg-01-..).
        assert_eq!(facts("pxelinux.cfg/01-a\u{e9}bcdefghij").mac, None);
    }

    #[test]
    fn grub_paths() {
        let mac = MacAddr::parse("52:54:00:77:00:05").unwrap();
        assert_eq!(facts("grub/grub.cfg-01-52-54-00-77-00-05").mac, Some(mac));
        assert_eq!(facts("grub/grub.cfg-0A4D0066").ip, Some(Ipv4Addr::new(10, 77, 0, 102)));
        assert!(facts("grub/grub.cfg").is_default);
        assert_eq!(classify_tftp("grub/arm64-efi/command.lst"), TftpRequest::GrubAux { arch: Some(Arch::Arm64) });
        assert_eq!(classify_tftp("grub/x86_64-efi/fs.lst"), TftpRequest::GrubAux { arch: Some(Arch::X86_64) });
        // The signed GRUB's first look, before grub.cfg.
        assert_eq!(classify_tftp("/grub/x86_64-efi/grub.cfg"), TftpRequest::GrubAux { arch: Some(Arch::X86_64) });
    }

    #[test]
    fn the_debian_installers_grub_paths_name_the_architecture() {
        let cfg = facts("/debian-installer/amd64/grub/grub.cfg");
        assert!(cfg.is_default && cfg.mac.is_none());
        assert_eq!(cfg.arch, Some(Arch::X86_64));
        assert_eq!(facts("debian-installer/arm64/grub/grub.cfg").arch, Some(Arch::Arm64));
        assert_eq!(
            classify_tftp("/debian-installer/amd64/grub/x86_64-efi/command.lst"),
            TftpRequest::GrubAux { arch: Some(Arch::X86_64) }
        );
        for other in ["debian-installer/amd64/linux", "debian-installer/sparc/grub/grub.cfg", "debian-installer/amd64"]
        {
            assert_eq!(classify_tftp(other), TftpRequest::Other(other.into()), "{other}");
        }
    }

    #[test]
    fn other_tftp_paths() {
        assert_eq!(classify_tftp("boot.scr.uimg"), TftpRequest::UbootScript);
        assert_eq!(classify_tftp("\\boot.ipxe"), TftpRequest::IpxeEntry);
        assert_eq!(
            classify_tftp("artifacts/live/0123456789ab/vmlinuz"),
            TftpRequest::Artifact { profile: "live".into(), version: "0123456789ab".into(), file: "vmlinuz".into() }
        );
        assert_eq!(classify_tftp("undionly.kpxe"), TftpRequest::Other("undionly.kpxe".into()));
        // Too many components is not an artifact; the file server refuses it.
        assert_eq!(classify_tftp("artifacts/a/b/c/d"), TftpRequest::Other("artifacts/a/b/c/d".into()));
    }

    #[test]
    fn http_query_from_the_entry_script() {
        let c = from_http_query("mac=52-54-00-77-00-01&buildarch=i386&platform=pcbios");
        assert_eq!(c.mac, Some(MacAddr::parse("52:54:00:77:00:01").unwrap()));
        assert_eq!(c.firmware, Firmware::Ipxe { efi: false });
        // undionly.kpxe is an i386 build: on pcbios that still means a 64-bit machine.
        assert_eq!(c.arch_hint, Some((Arch::X86_64, Learned::HttpQuery)));
        let c = from_http_query("mac=52%3A54%3A00%3A77%3A00%3A02&buildarch=x86_64&platform=efi");
        assert_eq!(c.mac, Some(MacAddr::parse("52:54:00:77:00:02").unwrap()));
        assert_eq!(c.firmware, Firmware::Ipxe { efi: true });
        let c = from_http_query("mac=garbage");
        assert_eq!(c.mac, None);
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn vendor_class_forms() {
        assert_eq!(parse_vendor_class("PXEClient:Arch:00007:UNDI:003000"), (Some(7), Some(BootEnv::Uefi)));
        assert_eq!(parse_vendor_class("HTTPClient:Arch:00016:UNDI:003001"), (Some(16), Some(BootEnv::UefiHttp)));
        assert_eq!(parse_vendor_class("U-Boot.armv8"), (Some(0x16), Some(BootEnv::Uboot)));
        assert_eq!(parse_vendor_class("PXEClient:Arch:00000:UNDI:002001"), (Some(0), Some(BootEnv::Bios)));
        assert_eq!(parse_vendor_class("PXEClient"), (None, Some(BootEnv::Bios)));
        assert_eq!(parse_vendor_class("MSFT 5.0"), (None, None));
        assert!(is_ipxe_user_class(b"iPXE"));
        assert!(is_ipxe_user_class(b"\x04iPXE"));
        assert!(!is_ipxe_user_class(b"iPX"));
    }

    #[test]
    fn tolerates_empty_and_odd_options() {
        let mut msg = Message::default();
        msg.set_chaddr(&[0x52, 0x54, 0, 1, 2, 3]);
        msg.opts_mut().insert(DhcpOption::ClientMachineIdentifier(vec![]));
        msg.opts_mut().insert(DhcpOption::ClassIdentifier(vec![0xff, 0xfe]));
        let c = from_dhcp(&msg);
        assert_eq!(c.firmware, Firmware::Unknown);
        assert!(c.mac.is_some());
    }
}
