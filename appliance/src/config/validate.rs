//! From wire structs to a `Catalog`: every check, every error collected (never only the first),
//! each pointing at file, line, column and field.
//!
//! Pure apart from the `FileProbe` the caller passes in, which hashes local artifact files.

use super::error::{ConfigError, ConfigErrors};
use super::position::{index, key, PosIndex};
use super::wire::*;
use crate::arch::Arch;
use crate::catalog::*;
use crate::mac::{MacAddr, Oui};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

/// One YAML file's name (as it should appear in messages) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// All the files of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub dir: PathBuf,
    pub settings: Option<SourceFile>,
    pub machines: Option<SourceFile>,
    pub overlay: Option<SourceFile>,
    pub menus: Option<SourceFile>,
    pub profiles: Vec<SourceFile>,
}

/// Access to local artifact files, relative to the config directory.
pub trait FileProbe {
    /// The sha256 of the file, or why it cannot be read.
    fn digest(&self, rel: &Path) -> Result<Digest, String>;
}

struct Doc<'a> {
    file: &'a Path,
    index: PosIndex,
}

impl<'a> Doc<'a> {
    fn new(src: &'a SourceFile) -> Self {
        Doc { file: &src.path, index: PosIndex::build(&src.text) }
    }
}

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn at(&mut self, doc: &Doc<'_>, field: &str, message: impl Display) {
        let (line, col) = doc.index.at(field);
        self.0.push(ConfigError {
            file: doc.file.to_path_buf(),
            line,
            col,
            field: field.to_string(),
            message: message.to_string(),
        });
    }
}

/// Deserialises a whole document; on failure records one error with serde's position and path.
fn parse_doc<T: DeserializeOwned + Default>(src: &SourceFile, doc: &Doc<'_>, errs: &mut Errors) -> Option<T> {
    if src.text.trim().is_empty() || src.text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Some(T::default());
    }
    parse_required(src, doc, errs)
}

fn parse_required<T: DeserializeOwned>(src: &SourceFile, doc: &Doc<'_>, errs: &mut Errors) -> Option<T> {
    let de = serde_yaml::Deserializer::from_str(&src.text);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Some(v),
        Err(e) => {
            let field = field_path("", e.path());
            let inner = e.into_inner();
            let (line, col) = match inner.location() {
                Some(l) => (l.line(), l.column()),
                None => doc.index.at(&field),
            };
            errs.0.push(ConfigError {
                file: doc.file.to_path_buf(),
                line,
                col,
                field,
                message: strip_location(&inner.to_string()),
            });
            None
        }
    }
}

/// Deserialises one entry that was kept as raw YAML, reporting errors at `base`'s position.
fn parse_value<T: DeserializeOwned>(v: &serde_yaml::Value, base: &str, doc: &Doc<'_>, errs: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            let field = field_path(base, e.path());
            errs.at(doc, &field, strip_location(&e.into_inner().to_string()));
            None
        }
    }
}

fn field_path(base: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = base.to_string();
    for seg in path.iter() {
        out = match seg {
            Segment::Seq { index: i } => index(&out, *i),
            Segment::Map { key: k } => key(&out, k),
            Segment::Enum { variant } => key(&out, variant),
            Segment::Unknown => out,
        };
    }
    out
}

fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_sha256(s: &str) -> Result<Digest, String> {
    let bytes = hex::decode(s.trim()).map_err(|_| format!("{s:?} is not a hex sha256"))?;
    bytes.try_into().map_err(|_| format!("{s:?} is not 64 hex digits"))
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
        format!("unknown architecture {s:?} (expected one of {})", all.join(", "))
    })
}

/// Names that end up in URLs and file paths.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A relative path that cannot climb out of the directory it is relative to.
fn contained(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

pub fn validate(input: &Input, probe: &dyn FileProbe) -> Result<Catalog, ConfigErrors> {
    let mut errs = Errors::default();
    let settings = validate_settings(input, &mut errs);
    let profiles = validate_profiles(input, probe, &mut errs);
    let menus = validate_menus(input, &profiles, &mut errs);
    let (machines, vendors, unknown) = validate_macdb(input, &profiles, &menus, settings.as_ref(), &mut errs);
    match (errs.0.is_empty(), settings) {
        (true, Some(settings)) => {
            Ok(Catalog { dir: input.dir.clone(), settings, profiles, machines, vendors, unknown, menus })
        }
        _ => Err(ConfigErrors(errs.0)),
    }
}

fn validate_settings(input: &Input, errs: &mut Errors) -> Option<Settings> {
    let Some(src) = &input.settings else {
        errs.0.push(ConfigError {
            file: input.dir.join(super::SETTINGS_FILE),
            line: 1,
            col: 1,
            field: String::new(),
            message: "missing: the appliance settings file is required".into(),
        });
        return None;
    };
    let doc = Doc::new(src);
    let wire: SettingsFile = parse_required(src, &doc, errs)?;
    let before = errs.0.len();
    let ip = |field: &str, s: &str, errs: &mut Errors| match parse_ip(s) {
        Ok(ip) => Some(ip),
        Err(e) => {
            errs.at(&doc, field, e);
            None
        }
    };
    let address = ip("server.address", &wire.server.address, errs);
    let http_port = wire.server.http_port.unwrap_or(80);
    let http_base = match (&wire.server.http_base, address) {
        (Some(b), _) if b.starts_with("http://") || b.starts_with("https://") => b.trim_end_matches('/').to_string(),
        (Some(b), _) => {
            errs.at(&doc, "server.http_base", format!("{b:?} is not an http:// or https:// URL"));
            String::new()
        }
        (None, Some(a)) if http_port == 80 => format!("http://{a}"),
        (None, Some(a)) => format!("http://{a}:{http_port}"),
        (None, None) => String::new(),
    };
    let d = &wire.dhcp;
    let mode = d.mode.unwrap_or_default();
    let subnet = d.subnet.as_deref().and_then(|s| match parse_subnet(s) {
        Ok(n) => Some(n),
        Err(e) => {
            errs.at(&doc, "dhcp.subnet", e);
            None
        }
    });
    let pool = d.pool.as_ref().and_then(|p| {
        let start = ip("dhcp.pool.start", &p.start, errs)?;
        let end = ip("dhcp.pool.end", &p.end, errs)?;
        if u32::from(start) > u32::from(end) {
            errs.at(&doc, "dhcp.pool", format!("pool start {start} is after its end {end}"));
        }
        if let Some(net) = subnet {
            for (f, a) in [("dhcp.pool.start", start), ("dhcp.pool.end", end)] {
                if !net.contains(a) {
                    errs.at(&doc, f, format!("{a} is outside the subnet {}/{}", net.network, net.prefix));
                }
            }
        }
        Some((start, end))
    });
    let router = d.router.as_deref().and_then(|r| ip("dhcp.router", r, errs));
    if let (Some(r), Some(net)) = (router, subnet) {
        if !net.contains(r) {
            errs.at(&doc, "dhcp.router", format!("router {r} is outside the subnet {}/{}", net.network, net.prefix));
        }
    }
    let dns = d.dns.iter().enumerate().filter_map(|(i, s)| ip(&index("dhcp.dns", i), s, errs)).collect();
    if mode == DhcpMode::Server {
        if subnet.is_none() && d.subnet.is_none() {
            errs.at(&doc, "dhcp", "server mode needs dhcp.subnet");
        }
        if pool.is_none() && d.pool.is_none() {
            errs.at(&doc, "dhcp", "server mode needs dhcp.pool");
        }
    }
    let ipxe_efi = wire.ipxe.efi_binary.clone().unwrap_or_else(|| "ipxe.efi".into());
    if !matches!(ipxe_efi.as_str(), "ipxe.efi" | "snponly.efi") {
        errs.at(&doc, "ipxe.efi_binary", format!("{ipxe_efi:?} is not one of ipxe.efi, snponly.efi"));
    }
    if errs.0.len() > before {
        return None;
    }
    Some(Settings {
        address: address?,
        http_port,
        http_base,
        interface: wire.server.interface.clone(),
        dhcp: DhcpSettings {
            mode,
            subnet,
            pool,
            lease_secs: d.lease_time.unwrap_or(3600),
            router,
            dns,
            domain: d.domain.clone(),
        },
        ipxe_efi,
        gc_grace_secs: wire.artifacts.gc_grace_minutes.unwrap_or(30) * 60,
    })
}

pub fn parse_subnet(s: &str) -> Result<Subnet, String> {
    let bad = || format!("{s:?} is not a subnet like 10.0.0.0/24");
    let (net, prefix) = s.split_once('/').ok_or_else(bad)?;
    let network: Ipv4Addr = net.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok(Subnet { network, prefix })
}

fn validate_profiles(input: &Input, probe: &dyn FileProbe, errs: &mut Errors) -> BTreeMap<String, Profile> {
    let mut out = BTreeMap::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for src in &input.profiles {
        let doc = Doc::new(src);
        let Some(wire) = parse_required::<ProfileFile>(src, &doc, errs) else {
            continue;
        };
        if !valid_name(&wire.name) {
            errs.at(
                &doc,
                "name",
                format!("{:?} is not a valid profile name (letters, digits, '-', '_', '.')", wire.name),
            );
            continue;
        }
        if let Some(other) = seen.get(&wire.name) {
            errs.at(&doc, "name", format!("profile {:?} is already defined in {}", wire.name, other.display()));
            continue;
        }
        seen.insert(wire.name.clone(), src.path.clone());
        if wire.arch.is_empty() {
            errs.at(&doc, "arch", "a profile needs at least one architecture");
        }
        let mut arches = BTreeMap::new();
        for (arch_name, a) in &wire.arch {
            let base = key("arch", arch_name);
            let arch = match parse_arch(arch_name) {
                Ok(arch) => arch,
                Err(e) => {
                    errs.at(&doc, &base, e);
                    continue;
                }
            };
            let cmdline = a.cmdline.clone().unwrap_or_else(|| wire.cmdline.clone());
            let cmd_field = if a.cmdline.is_some() { key(&base, "cmdline") } else { "cmdline".to_string() };
            if let Err(e) = crate::render::check_template(&cmdline) {
                errs.at(&doc, &cmd_field, format!("template does not compile: {e}"));
            }
            let deb_arch = debian_arch(arch);
            let mut names: HashMap<String, String> = HashMap::new();
            let mut artifact = |role: &str, field: String, s: &SourceWire, default_name: &str, errs: &mut Errors| {
                let a = source(s, &field, default_name, deb_arch, &doc, probe, errs)?;
                if let Some(prev) = names.insert(a.name.clone(), field.clone()) {
                    errs.at(&doc, &field, format!("{role} file name {:?} is also used by {prev}", a.name));
                    return None;
                }
                Some(a)
            };
            let kernel = artifact("kernel", key(&base, "kernel"), &a.kernel, "", errs);
            let initrds: Vec<_> = a
                .initrd
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let default = if a.initrd.len() == 1 { "initrd.img".to_string() } else { format!("initrd{i}.img") };
                    artifact("initrd", index(&key(&base, "initrd"), i), s, &default, errs)
                })
                .collect();
            let fdt = a.fdt.as_ref().map(|s| artifact("fdt", key(&base, "fdt"), s, "", errs));
            let (Some(kernel), Some(initrds), Some(fdt)) =
                (kernel, initrds.into_iter().collect::<Option<Vec<_>>>(), fdt.map_or(Some(None), |f| f.map(Some)))
            else {
                continue;
            };
            let version = crate::version::set_version(arch, &cmdline, &kernel, &initrds, fdt.as_ref());
            arches.insert(arch, ArtifactSet { kernel, initrds, fdt, cmdline, version });
        }
        out.insert(
            wire.name.clone(),
            Profile { name: wire.name.clone(), description: wire.description.clone(), arches },
        );
    }
    out
}

pub fn debian_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
        Arch::X86 => "i386",
        Arch::Arm => "armhf",
        Arch::Riscv64 => "riscv64",
        Arch::Riscv32 => "riscv32",
        Arch::Loongarch64 => "loong64",
    }
}

/// Validates the parts every source kind shares (path/deb/url with a checksum).
#[allow(clippy::too_many_arguments)]
fn simple_source(
    path: Option<&String>,
    deb: Option<&String>,
    deb_arch: Option<&String>,
    file: Option<&String>,
    url: Option<&String>,
    sha256: Option<&String>,
    default_arch: &str,
    field: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<(Source, Digest)> {
    let sha = match sha256.map(|s| parse_sha256(s)) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            errs.at(doc, &key(field, "sha256"), e);
            return None;
        }
        None => None,
    };
    match (path, deb, url) {
        (Some(p), None, None) => {
            if !contained(p) {
                errs.at(doc, &key(field, "path"), format!("{p:?} must be a relative path inside the config directory"));
                return None;
            }
            let digest = match probe.digest(Path::new(p)) {
                Ok(d) => d,
                Err(e) => {
                    errs.at(doc, &key(field, "path"), format!("artifact file {p:?}: {e}"));
                    return None;
                }
            };
            if let Some(want) = sha {
                if want != digest {
                    errs.at(
                        doc,
                        &key(field, "sha256"),
                        format!(
                            "checksum mismatch for {p}: expected {}, file has {}",
                            hex::encode(want),
                            hex::encode(digest)
                        ),
                    );
                    return None;
                }
            }
            Some((Source::Path(PathBuf::from(p)), digest))
        }
        (None, Some(pkg), None) => {
            let Some(file) = file else {
                errs.at(doc, field, format!("a deb source needs `file`: the path of the file inside package {pkg}"));
                return None;
            };
            let Some(sha) = sha else {
                errs.at(doc, field, format!("a deb source needs `sha256` of {file} inside {pkg}"));
                return None;
            };
            let deb_arch = deb_arch.cloned().unwrap_or_else(|| default_arch.to_string());
            let source = Source::Deb {
                package: pkg.clone(),
                deb_arch,
                file: file.trim_start_matches('/').to_string(),
                sha256: sha,
            };
            Some((source, sha))
        }
        (None, None, Some(u)) => {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                errs.at(doc, &key(field, "url"), format!("{u:?} is not an http:// or https:// URL"));
                return None;
            }
            let Some(sha) = sha else {
                errs.at(doc, field, "a url source needs `sha256`");
                return None;
            };
            Some((Source::Url { url: u.clone(), sha256: sha }, sha))
        }
        _ => {
            errs.at(doc, field, "give exactly one source: `path`, `deb`, `url` or `cpio`");
            None
        }
    }
}

fn source(
    s: &SourceWire,
    field: &str,
    default_name: &str,
    deb_arch: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<Artifact> {
    let (source, digest) = if let Some(entries) = &s.cpio {
        if s.path.is_some() || s.deb.is_some() || s.url.is_some() {
            errs.at(doc, field, "give exactly one source: `path`, `deb`, `url` or `cpio`");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, e) in entries.iter().enumerate() {
            let f = index(&key(field, "cpio"), i);
            match cpio_entry(e, &f, deb_arch, doc, probe, errs) {
                Some(entry) => out.push(entry),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let digest = crate::version::cpio_digest(&out, s.gzip);
        (Source::Cpio { entries: out, gzip: s.gzip }, digest)
    } else {
        simple_source(
            s.path.as_ref(),
            s.deb.as_ref(),
            s.deb_arch.as_ref(),
            s.file.as_ref(),
            s.url.as_ref(),
            s.sha256.as_ref(),
            deb_arch,
            field,
            doc,
            probe,
            errs,
        )?
    };
    let name = match &s.name {
        Some(n) => n.clone(),
        None if !default_name.is_empty() => default_name.to_string(),
        None => default_file_name(&source),
    };
    if !valid_name(&name) {
        errs.at(
            doc,
            &key(field, "name"),
            format!("{name:?} is not a valid file name (letters, digits, '-', '_', '.')"),
        );
        return None;
    }
    Some(Artifact { name, source, digest })
}

fn default_file_name(source: &Source) -> String {
    let from = match source {
        Source::Path(p) => p.to_string_lossy().into_owned(),
        Source::Deb { file, .. } => file.clone(),
        Source::Url { url, .. } => url.split(['?', '#']).next().unwrap_or("").to_string(),
        Source::Cpio { .. } => return "initrd.img".into(),
    };
    let base = from.rsplit('/').next().unwrap_or("").replace('*', "");
    if base.is_empty() {
        "file".into()
    } else {
        base
    }
}

fn cpio_entry(
    e: &CpioEntryWire,
    field: &str,
    deb_arch: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<CpioEntry> {
    let dest = e.dest.trim_start_matches('/').to_string();
    if !contained(&dest) {
        errs.at(doc, &key(field, "dest"), format!("{:?} must stay inside the archive", e.dest));
        return None;
    }
    let mode = match &e.mode {
        None => None,
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => Some(m),
            _ => {
                errs.at(doc, &key(field, "mode"), format!("{m:?} is not an octal mode like \"0755\""));
                return None;
            }
        },
    };
    let has_file = e.path.is_some() || e.deb.is_some() || e.url.is_some();
    let source = match (e.dir, &e.symlink, has_file) {
        (true, None, false) => CpioSource::Dir,
        (false, Some(t), false) => CpioSource::Symlink(t.clone()),
        (false, None, true) => {
            let (s, digest) = simple_source(
                e.path.as_ref(),
                e.deb.as_ref(),
                e.deb_arch.as_ref(),
                e.file.as_ref(),
                e.url.as_ref(),
                e.sha256.as_ref(),
                deb_arch,
                field,
                doc,
                probe,
                errs,
            )?;
            CpioSource::File { source: Box::new(s), digest }
        }
        _ => {
            errs.at(
                doc,
                field,
                "a cpio entry is exactly one of `dir: true`, `symlink`, or a file source (`path`, `deb`, `url`)",
            );
            return None;
        }
    };
    let default_mode = match source {
        CpioSource::Dir => 0o755,
        CpioSource::Symlink(_) => 0o777,
        CpioSource::File { .. } => 0o644,
    };
    Some(CpioEntry { dest, mode: mode.unwrap_or(default_mode), source })
}

fn validate_menus(input: &Input, profiles: &BTreeMap<String, Profile>, errs: &mut Errors) -> BTreeMap<String, Menu> {
    let mut out = BTreeMap::new();
    let Some(src) = &input.menus else { return out };
    let doc = Doc::new(src);
    let Some(file) = parse_doc::<MenusFile>(src, &doc, errs) else {
        return out;
    };
    for (name, m) in &file.menus {
        let base = key("menus", name);
        if !valid_name(name) {
            errs.at(&doc, &base, format!("{name:?} is not a valid menu name"));
            continue;
        }
        let mut entries = Vec::new();
        for (i, e) in m.entries.iter().enumerate() {
            let f = index(&key(&base, "entries"), i);
            let entry = match (&e.profile, e.action) {
                (Some(p), None) => match profiles.get(p) {
                    Some(prof) => {
                        let label = e.label.clone().unwrap_or_else(|| {
                            if prof.description.is_empty() {
                                p.clone()
                            } else {
                                prof.description.clone()
                            }
                        });
                        MenuEntry { id: p.clone(), label, action: MenuAction::Profile(p.clone()) }
                    }
                    None => {
                        errs.at(&doc, &key(&f, "profile"), format!("no profile named {p:?}{}", known(profiles.keys())));
                        continue;
                    }
                },
                (None, Some(MenuActionWire::Local)) => MenuEntry {
                    id: "local".into(),
                    label: e.label.clone().unwrap_or_else(|| "Boot from local disk".into()),
                    action: MenuAction::Local,
                },
                (None, Some(MenuActionWire::Shell)) => MenuEntry {
                    id: "shell".into(),
                    label: e.label.clone().unwrap_or_else(|| "iPXE shell".into()),
                    action: MenuAction::Shell,
                },
                _ => {
                    errs.at(&doc, &f, "an entry is either `profile: NAME` or `action: local|shell`");
                    continue;
                }
            };
            if entries.iter().any(|x: &MenuEntry| x.id == entry.id) {
                errs.at(&doc, &f, format!("entry {:?} appears twice", entry.id));
                continue;
            }
            entries.push(entry);
        }
        if m.entries.is_empty() {
            errs.at(&doc, &key(&base, "entries"), "a menu needs at least one entry");
            continue;
        }
        let default = match &m.default {
            Some(d) if entries.iter().any(|e| &e.id == d) => d.clone(),
            Some(d) => {
                errs.at(&doc, &key(&base, "default"), format!("default {d:?} is not one of this menu's entries"));
                continue;
            }
            None => match entries.first() {
                Some(e) => e.id.clone(),
                None => continue,
            },
        };
        out.insert(
            name.clone(),
            Menu {
                name: name.clone(),
                title: m.title.clone().unwrap_or_else(|| "Network boot".into()),
                timeout_secs: m.timeout,
                default,
                entries,
            },
        );
    }
    out
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", v.join(", "))
    }
}

/// Resolves `profile`/`menu`/`action` into a target, checking what it names exists.
fn target(
    profile: Option<&String>,
    menu: Option<&String>,
    action: Option<ActionWire>,
    field: &str,
    profiles: &BTreeMap<String, Profile>,
    menus: &BTreeMap<String, Menu>,
    doc: &Doc<'_>,
    errs: &mut Errors,
) -> Option<Option<Target>> {
    let t = match (action, profile, menu) {
        (None, None, None) => return Some(None),
        (None | Some(ActionWire::Profile), Some(p), None) => {
            if !profiles.contains_key(p) {
                errs.at(doc, &key(field, "profile"), format!("no profile named {p:?}{}", known(profiles.keys())));
                return None;
            }
            Target::Profile(p.clone())
        }
        (None | Some(ActionWire::Menu), None, Some(m)) => {
            if !menus.contains_key(m) {
                errs.at(doc, &key(field, "menu"), format!("no menu named {m:?}{}", known(menus.keys())));
                return None;
            }
            Target::Menu(m.clone())
        }
        (Some(ActionWire::Menu), None, None) => match menus.keys().next() {
            Some(m) if menus.contains_key("default") || menus.len() == 1 => {
                Target::Menu(if menus.contains_key("default") { "default".into() } else { m.clone() })
            }
            _ => {
                errs.at(doc, field, format!("`action: menu` needs `menu: NAME`{}", known(menus.keys())));
                return None;
            }
        },
        (Some(ActionWire::Local), None, None) => Target::Local,
        (Some(ActionWire::Ignore), None, None) => Target::Ignore,
        _ => {
            errs.at(doc, field, "give one of `profile: NAME`, `menu: NAME` or `action: local|ignore|menu`");
            return None;
        }
    };
    Some(Some(t))
}

type MacDb = (BTreeMap<MacAddr, Machine>, Vec<VendorRule>, Target);

fn validate_macdb(
    input: &Input,
    profiles: &BTreeMap<String, Profile>,
    menus: &BTreeMap<String, Menu>,
    settings: Option<&Settings>,
    errs: &mut Errors,
) -> MacDb {
    let mut machines: BTreeMap<MacAddr, (Machine, String, usize)> = BTreeMap::new();
    let mut vendors = Vec::new();
    let mut unknown = Target::Ignore;
    let docs: Vec<&SourceFile> = input.machines.iter().chain(input.overlay.iter()).collect();
    for (file_no, src) in docs.iter().enumerate() {
        let doc = Doc::new(src);
        let Some(db) = parse_doc::<MacDbFile>(src, &doc, errs) else {
            continue;
        };
        let mut in_this_file: HashMap<MacAddr, String> = HashMap::new();
        for (k, v) in &db.machines {
            let Some(kstr) = k.as_str() else {
                errs.at(&doc, "machines", format!("machine keys must be MAC strings, found {k:?}"));
                continue;
            };
            let base = key("machines", kstr);
            let mac = match MacAddr::parse(kstr) {
                Ok(m) => m,
                Err(e) => {
                    errs.at(&doc, &base, e);
                    continue;
                }
            };
            if let Some(prev) = in_this_file.insert(mac, kstr.to_string()) {
                let (line, _) = doc.index.at(&key("machines", &prev));
                errs.at(&doc, &base, format!("duplicate MAC {mac} (also at line {line} as {prev:?})"));
                continue;
            }
            let Some(w) = parse_value::<MachineWire>(v, &base, &doc, errs) else {
                continue;
            };
            if let Some(m) = machine(mac, &w, &base, profiles, menus, &db, settings, &doc, errs) {
                // The overlay (a later file) wins entry by entry.
                machines.insert(mac, (m, src.path.display().to_string(), file_no));
            }
        }
        if file_no == 0 || !db.vendors.is_empty() {
            let mut file_vendors = Vec::new();
            for (i, v) in db.vendors.iter().enumerate() {
                let base = index("vendors", i);
                let Some(w) = parse_value::<VendorWire>(v, &base, &doc, errs) else {
                    continue;
                };
                let oui = match Oui::parse(&w.oui) {
                    Ok(o) => o,
                    Err(e) => {
                        errs.at(&doc, &key(&base, "oui"), e);
                        continue;
                    }
                };
                let arch = match w.arch.as_deref().map(parse_arch) {
                    Some(Err(e)) => {
                        errs.at(&doc, &key(&base, "arch"), e);
                        continue;
                    }
                    Some(Ok(a)) => Some(a),
                    None => None,
                };
                let Some(t) = target(w.profile.as_ref(), w.menu.as_ref(), w.action, &base, profiles, menus, &doc, errs)
                else {
                    continue;
                };
                if let (Some(a), Some(Target::Profile(p))) = (arch, &t) {
                    if !profiles[p].arches.contains_key(&a) {
                        errs.at(&doc, &key(&base, "profile"), format!("profile {p:?} has no {a} artifacts"));
                    }
                }
                file_vendors.push(VendorRule { oui, arch, target: t, comment: w.comment.clone() });
            }
            // Overlay rules take precedence over shipped ones for the same OUI.
            vendors.retain(|r: &VendorRule| !file_vendors.iter().any(|n| n.oui == r.oui));
            file_vendors.extend(vendors);
            vendors = file_vendors;
        }
        if let Some(u) = &db.unknown {
            if let Some(t) =
                target(u.profile.as_ref(), u.menu.as_ref(), u.action, "unknown", profiles, menus, &doc, errs)
            {
                unknown = t.unwrap_or(Target::Ignore);
            }
        }
    }
    // Fixed addresses must be unique across the merged database.
    let mut by_addr: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    for (mac, (m, _, _)) in &machines {
        if let Some(a) = m.address {
            if let Some(other) = by_addr.insert(a, *mac) {
                let src = docs.get(machines[mac].2).copied();
                if let Some(src) = src {
                    let doc = Doc::new(src);
                    errs.at(
                        &doc,
                        &key(&key("machines", &mac.to_string()), "address"),
                        format!("address {a} is also fixed for {other}"),
                    );
                }
            }
        }
    }
    (machines.into_iter().map(|(k, (m, _, _))| (k, m)).collect(), vendors, unknown)
}

#[allow(clippy::too_many_arguments)]
fn machine(
    mac: MacAddr,
    w: &MachineWire,
    base: &str,
    profiles: &BTreeMap<String, Profile>,
    menus: &BTreeMap<String, Menu>,
    db: &MacDbFile,
    settings: Option<&Settings>,
    doc: &Doc<'_>,
    errs: &mut Errors,
) -> Option<Machine> {
    let hostname = w.hostname.clone().unwrap_or_else(|| format!("node-{}", mac.hex()));
    if !valid_hostname(&hostname) {
        errs.at(doc, &key(base, "hostname"), format!("{hostname:?} is not a valid hostname"));
        return None;
    }
    let arch = match w.arch.as_deref().map(parse_arch) {
        Some(Err(e)) => {
            errs.at(doc, &key(base, "arch"), e);
            return None;
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let target = target(w.profile.as_ref(), w.menu.as_ref(), w.action, base, profiles, menus, doc, errs)?;
    // The machine's architecture as the database knows it (its own, else its vendor's rule).
    let known_arch = arch.or_else(|| {
        db.vendors.iter().find_map(|v| {
            let w: VendorWire = serde_yaml::from_value(v.clone()).ok()?;
            (Oui::parse(&w.oui).ok()? == mac.oui()).then(|| w.arch.as_deref().and_then(Arch::parse)).flatten()
        })
    });
    if let (Some(Target::Profile(p)), Some(a)) = (&target, known_arch) {
        if !profiles[p].arches.contains_key(&a) {
            let has: Vec<&str> = profiles[p].arches.keys().map(|a| a.as_str()).collect();
            errs.at(
                doc,
                &key(base, "profile"),
                format!("profile {p:?} has no {a} artifacts (it has: {})", has.join(", ")),
            );
            return None;
        }
    }
    let address = match w.address.as_deref().map(parse_ip) {
        Some(Err(e)) => {
            errs.at(doc, &key(base, "address"), e);
            return None;
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    if let (Some(a), Some(net)) = (address, settings.and_then(|s| s.dhcp.subnet)) {
        if !net.contains(a) {
            errs.at(doc, &key(base, "address"), format!("{a} is outside the subnet {}/{}", net.network, net.prefix));
            return None;
        }
    }
    let vars = serde_json::to_value(&w.vars).unwrap_or(serde_json::Value::Null);
    Some(Machine { mac, hostname, arch, target, address, chain_ipxe: w.chain_ipxe, vars })
}
