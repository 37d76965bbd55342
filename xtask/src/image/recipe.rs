//! Image recipes, `images/<name>.yaml`: what goes into an appliance disk image and how the
//! appliance comes up. Validated like the profiles: unknown fields are refused, and every
//! mistake is reported at once as `FILE:LINE:COL: field.path: message`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use appliance_core::boot_file::BootFile;
use appliance_core::catalog::{Catalog, DhcpMode, Subnet};
use appliance_core::config::position::index;
use appliance_core::config::values::{parse_cidr, parse_ipv4, valid_hostname, valid_name};
use appliance_core::config::yaml::{Doc, Errors};
use appliance_core::config::{ConfigError, ConfigErrors};
use appliance_core::mac::MacAddr;
use serde::Deserialize;

/// NIC drivers a lab machine needs; always in the image.
pub const NIC_MODULES: [&str; 6] = ["e1000", "e1000e", "igb", "ixgbe", "r8169", "virtio_net"];

const SERIAL_SPEEDS: [u32; 8] = [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    description: Option<String>,
    config: String,
    #[serde(default)]
    overlay: Option<String>,
    network: WireNetwork,
    #[serde(default)]
    dhcp: WireDhcp,
    #[serde(default)]
    bootloaders: Option<Vec<String>>,
    #[serde(default)]
    console: WireConsole,
    #[serde(default)]
    kernel: WireKernel,
    #[serde(default)]
    disk: WireDisk,
    #[serde(default)]
    boot_menu_timeout: Option<u32>,
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    admin: WireAdmin,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireAdmin {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireNetwork {
    #[serde(default)]
    interface: Option<String>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireDhcp {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    pool: Option<WirePool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePool {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConsole {
    #[serde(default = "default_serial")]
    serial: Option<String>,
    #[serde(default)]
    baud: Option<u32>,
    #[serde(default = "yes")]
    vga: bool,
}

impl Default for WireConsole {
    fn default() -> Self {
        WireConsole { serial: default_serial(), baud: None, vga: true }
    }
}

fn default_serial() -> Option<String> {
    Some("ttyS0".into())
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireKernel {
    #[serde(default)]
    modules: Vec<String>,
    #[serde(default)]
    cmdline: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WireDisk {
    #[serde(default)]
    state_mib: Option<u32>,
}

/// Which NIC the appliance serves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// The first NIC (by name) that has link.
    Auto,
    Name(String),
    Mac(String),
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interface::Auto => f.write_str("auto (the first with link)"),
            Interface::Name(n) => f.write_str(n),
            Interface::Mac(m) => write!(f, "with MAC {m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv4 {
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
    /// busybox udhcpc; the leased address is what the daemon advertises.
    Dhcp,
}

/// Where the daemon's admin listener (status pages, metrics, admin API) opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// 127.0.0.1: reachable from the appliance itself only (an SSH tunnel, the console).
    Loopback(u16),
    /// The appliance's own address on the boot network, whatever it gets (static or DHCP).
    Boot(u16),
    /// A fixed address: that of a management interface set up on the appliance.
    Address(Ipv4Addr, u16),
    Off,
}

impl AdminListen {
    /// The `ADMIN_LISTEN` value the run script turns into `--admin-listen`: an address and
    /// port, `boot:PORT` (the boot network's address, known only at run time), or `off`.
    pub fn script_value(&self) -> String {
        match self {
            AdminListen::Loopback(port) => format!("127.0.0.1:{port}"),
            AdminListen::Boot(port) => format!("boot:{port}"),
            AdminListen::Address(a, port) => format!("{a}:{port}"),
            AdminListen::Off => "off".into(),
        }
    }
}

/// The daemon's default admin port.
const ADMIN_PORT: u16 = 9090;

/// A validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// File stem: the output is `<name>.img`.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    /// Config directory (absolute or relative to the current directory).
    pub config: PathBuf,
    pub overlay: Option<PathBuf>,
    pub interface: Interface,
    pub ipv4: Ipv4,
    pub hostname: String,
    pub dhcp_mode: Option<DhcpMode>,
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub bootloaders: Vec<String>,
    pub serial: Option<String>,
    pub baud: u32,
    pub vga: bool,
    /// Extra modules beyond the built-in NIC and storage sets.
    pub modules: Vec<String>,
    pub cmdline: String,
    pub state_mib: u32,
    pub boot_menu_timeout: u32,
    pub log: String,
    pub admin: AdminListen,
    text: String,
}

/// Reads and validates a recipe file. Paths in it are relative to the file's directory.
pub fn load(path: &Path) -> Result<Recipe, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            field: String::new(),
            message: format!("cannot read the recipe: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates recipe text; `path` names it in errors and anchors relative paths. The
/// positioned errors, value parsers and name rules are the appliance config's
/// (`appliance_core::config`); only the recipe's own fields are checked here.
pub fn parse(path: &Path, text: &str) -> Result<Recipe, ConfigErrors> {
    let doc = Doc::new(path, text);
    let mut errs = Errors::new();
    let Some(wire) = doc.parse::<Wire>(&mut errs) else { return Err(errs.into()) };
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    if !valid_name(&name) {
        let why = "must be a plain name (letters, digits, - _ .): it names the image";
        errs.at(&doc, "", format!("the file name {name:?} {why}"));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let (config, overlay) = config_paths(&wire, base, &doc, &mut errs);
    let interface = interface(wire.network.interface.as_deref(), &doc, &mut errs);
    let ipv4 = ipv4(&wire.network, &doc, &mut errs);
    let hostname = wire.network.hostname.clone().unwrap_or_else(|| "appliance".into());
    if !valid_hostname(&hostname) {
        errs.at(&doc, "network.hostname", format!("{hostname:?} is not a valid host name"));
    }
    let (dhcp_mode, pool) = dhcp(&wire.dhcp, &doc, &mut errs);
    let bootloaders = bootloaders(wire.bootloaders.as_deref(), &doc, &mut errs);
    let (serial, baud) = console(&wire.console, &doc, &mut errs);
    let (cmdline, state_mib, boot_menu_timeout, log) = system(&wire, &doc, &mut errs);
    let admin = admin(&wire.admin, &doc, &mut errs);
    errs.check()?;
    Ok(Recipe {
        name,
        path: path.to_path_buf(),
        description: wire.description.unwrap_or_default(),
        config,
        overlay,
        interface,
        ipv4,
        hostname,
        dhcp_mode,
        pool,
        bootloaders,
        serial,
        baud,
        vga: wire.console.vga,
        modules: wire.kernel.modules,
        cmdline,
        state_mib,
        boot_menu_timeout,
        log,
        admin,
        text: text.to_owned(),
    })
}

/// The config directory and the overlay, relative to the recipe's directory.
fn config_paths(wire: &Wire, base: &Path, doc: &Doc<'_>, errs: &mut Errors) -> (PathBuf, Option<PathBuf>) {
    let config = base.join(&wire.config);
    if !config.is_dir() {
        errs.at(doc, "config", format!("{} is not a directory", config.display()));
    }
    let overlay = wire.overlay.as_ref().map(|o| base.join(o));
    if let Some(o) = overlay.as_ref().filter(|o| !o.is_file()) {
        errs.at(doc, "overlay", format!("{} is not a file", o.display()));
    }
    (config, overlay)
}

fn interface(spec: Option<&str>, doc: &Doc<'_>, errs: &mut Errors) -> Interface {
    let field = "network.interface";
    match spec {
        None | Some("auto") => Interface::Auto,
        Some(s) if looks_like_mac(s) => match MacAddr::parse(s) {
            Ok(mac) => Interface::Mac(mac.to_string()),
            Err(e) => {
                errs.at(doc, field, e);
                Interface::Auto
            }
        },
        Some(s) if valid_ifname(s) => Interface::Name(s.to_owned()),
        Some(s) => {
            let why = "is neither `auto`, a kernel interface name (like eth0) nor a MAC address";
            errs.at(doc, field, format!("{s:?} {why}"));
            Interface::Auto
        }
    }
}

fn ipv4(network: &WireNetwork, doc: &Doc<'_>, errs: &mut Errors) -> Ipv4 {
    if network.address.trim() == "dhcp" {
        if network.gateway.is_some() {
            errs.at(doc, "network.gateway", "a gateway only goes with a static address (the DHCP server names one)");
        }
        return Ipv4::Dhcp;
    }
    let (address, prefix) = match parse_cidr(&network.address) {
        // A host address needs a network around it.
        Ok((_, 0)) => {
            errs.at(doc, "network.address", "a /0 prefix leaves the address no network");
            return Ipv4::Dhcp;
        }
        Ok(a) => a,
        Err(e) => {
            errs.at(doc, "network.address", format!("{e}, or `dhcp`"));
            return Ipv4::Dhcp;
        }
    };
    let gateway = network.gateway.as_deref().and_then(|g| match parse_ipv4(g) {
        Ok(g) => {
            if !(Subnet { network: address, prefix }).contains(g) {
                errs.at(doc, "network.gateway", format!("{g} is not in {address}/{prefix}"));
            }
            Some(g)
        }
        Err(e) => {
            errs.at(doc, "network.gateway", e);
            None
        }
    });
    Ipv4::Static { address, prefix, gateway }
}

/// The DHCP mode and pool that override the config's.
fn dhcp(wire: &WireDhcp, doc: &Doc<'_>, errs: &mut Errors) -> (Option<DhcpMode>, Option<(Ipv4Addr, Ipv4Addr)>) {
    let mode = wire.mode.as_deref().and_then(|m| {
        let mode = DhcpMode::parse(m);
        if mode.is_none() {
            errs.at(doc, "dhcp.mode", format!("unknown DHCP mode {m:?} (expected server, proxy or off)"));
        }
        mode
    });
    let pool = wire.pool.as_ref().and_then(|p| {
        let mut ip = |field: &str, s: &str| parse_ipv4(s).map_err(|e| errs.at(doc, field, e)).ok();
        let (start, end) = (ip("dhcp.pool.start", &p.start), ip("dhcp.pool.end", &p.end));
        match (start?, end?) {
            (s, e) if u32::from(s) <= u32::from(e) => Some((s, e)),
            (s, e) => {
                errs.at(doc, "dhcp.pool.end", format!("the pool ends ({e}) before it starts ({s})"));
                None
            }
        }
    });
    (mode, pool)
}

/// The bootloaders the image carries (by default every one `cargo xtask fetch` builds).
fn bootloaders(list: Option<&[String]>, doc: &Doc<'_>, errs: &mut Errors) -> Vec<String> {
    let Some(list) = list else { return BootFile::bootloaders().map(|b| b.file_name().to_owned()).collect() };
    let mut seen = BTreeSet::new();
    for (i, b) in list.iter().enumerate() {
        let field = index("bootloaders", i);
        if !BootFile::from_file_name(b).is_some_and(BootFile::is_bootloader) {
            let known: Vec<&str> = BootFile::bootloaders().map(BootFile::file_name).collect();
            errs.at(doc, &field, format!("unknown bootloader {b:?} (known: {})", known.join(", ")));
        } else if !seen.insert(b) {
            errs.at(doc, &field, format!("{b} is listed twice"));
        }
    }
    list.to_vec()
}

/// Where the admin listener opens: `loopback` (the default), `boot`, `off`, or an IPv4 address.
fn admin(wire: &WireAdmin, doc: &Doc<'_>, errs: &mut Errors) -> AdminListen {
    let port = wire.port.unwrap_or(ADMIN_PORT);
    if port == 0 {
        errs.at(doc, "admin.port", "port 0 would open the listener on a port nobody knows");
    }
    match wire.listen.as_deref().map(str::trim) {
        None | Some("loopback") => AdminListen::Loopback(port),
        Some("boot") => AdminListen::Boot(port),
        Some("off") => {
            if wire.port.is_some() {
                errs.at(doc, "admin.port", "a port only goes with a listener (admin.listen is off)");
            }
            AdminListen::Off
        }
        Some(s) => match parse_ipv4(s) {
            Ok(a) if a.is_unspecified() => {
                let why = "would open the status pages on every interface, the boot network's included; name one";
                errs.at(doc, "admin.listen", format!("{a} {why}"));
                AdminListen::Off
            }
            Ok(a) => AdminListen::Address(a, port),
            Err(e) => {
                errs.at(doc, "admin.listen", format!("{e} (expected loopback, boot, off or an IPv4 address)"));
                AdminListen::Off
            }
        },
    }
}

/// The serial port (if any) and its speed.
fn console(wire: &WireConsole, doc: &Doc<'_>, errs: &mut Errors) -> (Option<String>, u32) {
    let serial = wire.serial.clone().filter(|s| !s.is_empty() && s != "none");
    if let Some(s) = &serial {
        let numbered =
            |p: &&str| s.strip_prefix(*p).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !["ttyS", "ttyUSB", "ttyAMA"].iter().any(numbered) {
            errs.at(doc, "console.serial", format!("{s:?} is not a serial port (expected ttyS0, ttyS1, ..., or none)"));
        }
    }
    let baud = wire.baud.unwrap_or(115200);
    if !SERIAL_SPEEDS.contains(&baud) {
        errs.at(doc, "console.baud", format!("unsupported speed {baud} (expected one of {SERIAL_SPEEDS:?})"));
    }
    if serial.is_none() && !wire.vga {
        errs.at(doc, "console", "no console at all: keep the serial port, VGA, or both");
    }
    (serial, baud)
}

/// Kernel modules and command line, state partition size, boot menu timeout and log filter.
fn system(wire: &Wire, doc: &Doc<'_>, errs: &mut Errors) -> (String, u32, u32, String) {
    for (i, m) in wire.kernel.modules.iter().enumerate() {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            errs.at(doc, &index("kernel.modules", i), format!("{m:?} is not a module name"));
        }
    }
    let cmdline = wire.kernel.cmdline.clone().unwrap_or_default();
    if cmdline.contains(['\n', '"', '\'', '\\', '$', '`']) {
        errs.at(doc, "kernel.cmdline", "quotes, backslashes, $, ` and newlines are not allowed in the command line");
    }
    let state_mib = wire.disk.state_mib.unwrap_or(8);
    if !(1..=65536).contains(&state_mib) {
        errs.at(doc, "disk.state_mib", format!("{state_mib} MiB is out of range (1 to 65536)"));
    }
    let boot_menu_timeout = wire.boot_menu_timeout.unwrap_or(1);
    if boot_menu_timeout > 600 {
        errs.at(doc, "boot_menu_timeout", "at most 600 seconds");
    }
    let log = wire.log.clone().unwrap_or_else(|| "info".into());
    if log.is_empty() || !log.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | ',' | '=' | '.')) {
        errs.at(doc, "log", format!("{log:?} is not a log filter (like info, or info,appliance::dhcp=debug)"));
    }
    (cmdline, state_mib, boot_menu_timeout, log)
}

impl Recipe {
    /// Checks the recipe against the config it serves (loaded with the recipe's DHCP
    /// overrides applied): a DHCP server needs a static address inside its subnet, and the
    /// iPXE binary the config hands to UEFI clients must be in the image.
    pub fn check_against(&self, catalog: &Catalog) -> Result<(), ConfigErrors> {
        let doc = Doc::new(&self.path, &self.text);
        let mut errs = Errors::new();
        let mode = catalog.settings().dhcp.mode;
        match (&self.ipv4, mode) {
            (Ipv4::Dhcp, DhcpMode::Server) => errs.at(
                &doc,
                "network.address",
                "a DHCP server needs a static address: set ADDRESS/PREFIX, or dhcp.mode proxy or off",
            ),
            (Ipv4::Static { address, .. }, DhcpMode::Server) => {
                if let Some(subnet) = catalog.settings().dhcp.subnet {
                    if !subnet.contains(*address) {
                        errs.at(
                            &doc,
                            "network.address",
                            format!(
                                "{address} is outside the DHCP subnet {}/{} the config serves",
                                subnet.network, subnet.prefix
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
        let efi = catalog.settings().ipxe_efi;
        if !self.bootloaders.iter().any(|b| b == efi.file_name()) {
            errs.at(
                &doc,
                "bootloaders",
                format!("the config hands {efi} to x86-64 UEFI clients (ipxe.efi_binary), but the image leaves it out"),
            );
        }
        errs.check()
    }

    /// The kernel command line's console words; the last one is /dev/console.
    pub fn console_args(&self) -> String {
        let mut words = Vec::new();
        if self.vga {
            words.push("console=tty0".to_owned());
        }
        if let Some(s) = &self.serial {
            words.push(format!("console={s},{}n8", self.baud));
        }
        words.join(" ")
    }
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "lo"
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn looks_like_mac(s: &str) -> bool {
    s.len() == 17 && s.chars().filter(|c| *c == ':' || *c == '-').count() == 5
}

#[cfg(test)]
#[path = "recipe_tests.rs"]
mod tests;
