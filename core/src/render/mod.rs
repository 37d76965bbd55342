//! Rendering boot configs from decisions: iPXE scripts and menus, U-Boot `pxelinux.cfg` files,
//! GRUB configs, the iPXE entry script and the U-Boot `boot.scr.uimg`.
//!
//! Architecture invariant: pure. Templates are embedded in the binary; everything a template
//! needs arrives in the catalog, the decision and `ServerInfo`. Every artifact URL or path names
//! an explicit version, so one boot never mixes files of two versions.

pub mod context;
pub mod grub_image;
pub mod uimage;

use crate::arch::Arch;
use crate::catalog::{ArtifactSet, Catalog, MenuAction, Profile};
use crate::decide::{Decision, Outcome};
use crate::token::TokenKey;
use minijinja::{context, Environment, UndefinedBehavior, Value};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

/// How clients reach us, as seen by the running daemon (ports may differ from the settings),
/// and the key of the machine tokens it renders (`machine.token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub address: Ipv4Addr,
    /// Base of HTTP URLs, without a trailing slash.
    pub http_base: String,
    pub tokens: TokenKey,
}

impl ServerInfo {
    /// The settings' address and HTTP base, with the check-only token key (`check`, `render`).
    pub fn from_catalog(c: &Catalog) -> Self {
        ServerInfo::new(c.settings().address, c.settings().http_base.clone())
    }

    /// With the check-only token key; the daemon sets its own key in `tokens`.
    pub fn new(address: Ipv4Addr, http_base: String) -> Self {
        ServerInfo { address, http_base, tokens: TokenKey::check_only() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ipxe,
    Pxelinux,
    Grub,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Ipxe => "iPXE script",
            Format::Pxelinux => "pxelinux.cfg",
            Format::Grub => "grub.cfg",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template}: {source:#}")]
    Template { template: String, source: minijinja::Error },
    #[error("kernel command line of profile {profile} ({arch}): {source:#}")]
    Cmdline { profile: String, arch: Arch, source: minijinja::Error },
    #[error("answer {name} of profile {profile}: {error}")]
    Answer { profile: String, name: String, error: String },
}

const TEMPLATES: &[(&str, &str)] = &[
    ("ipxe_boot.j2", include_str!("templates/ipxe_boot.j2")),
    ("ipxe_boot_lines.j2", include_str!("templates/ipxe_boot_lines.j2")),
    ("ipxe_menu.j2", include_str!("templates/ipxe_menu.j2")),
    ("ipxe_exit.j2", include_str!("templates/ipxe_exit.j2")),
    ("ipxe_local.j2", include_str!("templates/ipxe_local.j2")),
    ("ipxe_local_lines.j2", include_str!("templates/ipxe_local_lines.j2")),
    ("ipxe_entry.j2", include_str!("templates/ipxe_entry.j2")),
    ("grub_local_lines.j2", include_str!("templates/grub_local_lines.j2")),
    ("pxelinux_boot.j2", include_str!("templates/pxelinux_boot.j2")),
    ("pxelinux_label.j2", include_str!("templates/pxelinux_label.j2")),
    ("pxelinux_menu.j2", include_str!("templates/pxelinux_menu.j2")),
    ("grub_boot.j2", include_str!("templates/grub_boot.j2")),
    ("grub_entry.j2", include_str!("templates/grub_entry.j2")),
    ("grub_menu.j2", include_str!("templates/grub_menu.j2")),
    ("uboot_script.j2", include_str!("templates/uboot_script.j2")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for (name, src) in TEMPLATES {
            // The templates are part of the binary and covered by golden tests.
            env.add_template(name, src).expect("embedded template compiles");
        }
        env
    })
}

fn cmdline_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Checks that an operator's template (a kernel command line) compiles.
pub fn check_template(src: &str) -> Result<(), minijinja::Error> {
    cmdline_env().template_from_str(src).map(|_| ())
}

fn run(name: &str, ctx: Value) -> Result<String, RenderError> {
    let t = env().get_template(name).map_err(|source| RenderError::Template { template: name.into(), source })?;
    t.render(ctx).map_err(|source| RenderError::Template { template: name.into(), source })
}

#[derive(Serialize)]
struct FileRef {
    name: String,
    /// HTTP URL (iPXE).
    url: String,
    /// TFTP path relative to the TFTP root (U-Boot resolves it against the boot file's directory).
    path: String,
    /// GRUB path on its network root.
    grub: String,
}

#[derive(Serialize)]
struct BootCtx {
    profile: Value,
    version: String,
    kernel: FileRef,
    initrds: Vec<FileRef>,
    fdt: Option<FileRef>,
    cmdline: String,
}

fn file_ref(server: &ServerInfo, profile: &str, version: &str, name: &str) -> FileRef {
    let path = format!("artifacts/{profile}/{version}/{name}");
    FileRef { name: name.into(), url: format!("{}/{path}", server.http_base), grub: format!("/{path}"), path }
}

fn boot_ctx(
    profile: &Profile,
    arch: Arch,
    set: &ArtifactSet,
    decision: &Decision,
    server: &ServerInfo,
) -> Result<BootCtx, RenderError> {
    let f = |name: &str| file_ref(server, &profile.name, &set.version, name);
    let cmdline = render_cmdline(profile, arch, set, decision, server)?;
    Ok(BootCtx {
        profile: Value::from_serialize(context! { name => profile.name, description => profile.description }),
        version: set.version.clone(),
        kernel: f(&set.kernel.name),
        initrds: set.initrds.iter().map(|i| f(&i.name)).collect(),
        fdt: set.fdt.as_ref().map(|d| f(&d.name)),
        cmdline,
    })
}

/// Renders a profile's kernel command line for one machine.
pub fn render_cmdline(
    profile: &Profile,
    arch: Arch,
    set: &ArtifactSet,
    decision: &Decision,
    server: &ServerInfo,
) -> Result<String, RenderError> {
    // The profile's answers are the machine's own when the profile is its target, not a menu's.
    let direct = matches!(&decision.outcome, Outcome::Boot { profile: p, .. } if *p == profile.name);
    let ctx = context::template_context(profile, Some((arch, set)), &decision.machine, server, direct);
    let out = cmdline_env().render_str(&set.cmdline, ctx).map_err(|source| RenderError::Cmdline {
        profile: profile.name.clone(),
        arch,
        source,
    })?;
    Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn base_ctx(decision: &Decision) -> Value {
    context! {
        machine => Value::from_serialize(&decision.machine),
        arch => decision.arch.map(|a| a.as_str()).unwrap_or("unknown"),
        rule => format!("target: {}; architecture: {}", decision.target_rule, decision.arch_rule),
    }
}

fn merge(a: Value, b: Value) -> Value {
    context! { ..a, ..b }
}

/// Renders the config file a decision calls for. `Ok(None)` means "no such file for this
/// client" (answer not-found, so U-Boot and GRUB move on to their next candidate name).
pub fn render(
    catalog: &Catalog,
    decision: &Decision,
    server: &ServerInfo,
    format: Format,
) -> Result<Option<String>, RenderError> {
    let base = base_ctx(decision);
    match (&decision.outcome, format) {
        (Outcome::Boot { profile, .. }, _) => {
            let arch = decision.arch.or_else(|| catalog.profile(profile).and_then(|p| p.only_arch()));
            let Some((p, set, arch)) = arch.and_then(|a| catalog.profile_set(profile, a).map(|(p, s)| (p, s, a))) else {
                return Ok(None);
            };
            let boot = boot_ctx(p, arch, set, decision, server)?;
            let label = if p.description.is_empty() { p.name.clone() } else { p.description.clone() };
            let ctx = merge(base, merge(Value::from_serialize(&boot), context! { arch => arch.as_str(), label => label }));
            let name = match format {
                Format::Ipxe => "ipxe_boot.j2",
                Format::Pxelinux => "pxelinux_boot.j2",
                Format::Grub => "grub_boot.j2",
            };
            run(name, ctx).map(Some)
        }
        (Outcome::Menu { menu }, _) => {
            let Some(menu) = catalog.menu(menu) else { return Ok(None) };
            let arch = decision.arch.unwrap_or(Arch::X86_64);
            let mut entries = Vec::new();
            for e in &menu.entries {
                let boot = match &e.action {
                    MenuAction::Profile(p) => match p.arches.get(&arch) {
                        Some(set) => Some(boot_ctx(p, arch, set, decision, server)?),
                        // A profile without this architecture is left out of this client's menu.
                        None => continue,
                    },
                    MenuAction::Shell if format != Format::Ipxe => continue,
                    _ => None,
                };
                let action = match e.action {
                    MenuAction::Profile(_) => "profile",
                    MenuAction::Local => "local",
                    MenuAction::Shell => "shell",
                };
                entries.push(context! { id => e.id, label => e.label, action => action, boot => Value::from_serialize(&boot) });
            }
            let mut menu_value = Value::from_serialize(context! {
                name => menu.name, title => menu.title, timeout_secs => menu.timeout_secs, default => menu.default,
            });
            let default_present = entries.iter().any(|e| e.get_attr("id").ok().and_then(|v| v.as_str().map(|s| s == menu.default)).unwrap_or(false));
            if !default_present {
                if let Some(first) = entries.first().and_then(|e| e.get_attr("id").ok()) {
                    menu_value = context! { ..context! { default => first }, ..menu_value };
                }
            }
            if entries.is_empty() {
                return Ok(None);
            }
            let name = match format {
                Format::Ipxe => "ipxe_menu.j2",
                Format::Pxelinux => "pxelinux_menu.j2",
                Format::Grub => "grub_menu.j2",
            };
            let loader = removable_loader(arch);
            run(name, merge(base, context! { menu => menu_value, entries => entries, arch => arch.as_str(), loader => loader }))
                .map(Some)
        }
        (Outcome::Local, Format::Ipxe) => run("ipxe_local.j2", base).map(Some),
        (Outcome::Local, Format::Pxelinux) => Ok(Some(format!(
            "# {}: boot from local disk\ndefault local\nprompt 0\ntimeout 0\n\nlabel local\n\tlocalboot 0\n",
            decision.machine.hostname
        ))),
        (Outcome::Local, Format::Grub) => {
            let lines = run("grub_local_lines.j2", context! { loader => decision.arch.and_then(removable_loader) })?;
            Ok(Some(format!("# {}: boot from local disk\n{}\n", decision.machine.hostname, lines.trim_end())))
        }
        (Outcome::Ignore { reason }, Format::Ipxe) => {
            run("ipxe_exit.j2", merge(base, context! { what => format!("not served: {reason}"), message => format!("Not served by this appliance: {reason}") })).map(Some)
        }
        _ => Ok(None),
    }
}

/// The loader UEFI firmware boots from removable media and from a disk without a boot entry of
/// its own (UEFI 2.x, 3.5.1.1): where GRUB finds the disk's own boot path for a local boot.
fn removable_loader(arch: Arch) -> Option<&'static str> {
    match arch {
        Arch::X86_64 => Some("/EFI/BOOT/BOOTX64.EFI"),
        Arch::Arm64 => Some("/EFI/BOOT/BOOTAA64.EFI"),
        Arch::X86 => Some("/EFI/BOOT/BOOTIA32.EFI"),
        Arch::Arm => Some("/EFI/BOOT/BOOTARM.EFI"),
        Arch::Riscv64 => Some("/EFI/BOOT/BOOTRISCV64.EFI"),
        Arch::Riscv32 | Arch::Loongarch64 => None,
    }
}

/// The script every iPXE client is first handed (`/boot.ipxe`).
pub fn ipxe_entry(server: &ServerInfo) -> Result<String, RenderError> {
    run("ipxe_entry.j2", context! { http_base => server.http_base })
}

/// The `boot.scr.uimg` image U-Boot's `bootcmd_dhcp` fetches and runs.
pub fn uboot_script() -> Result<Vec<u8>, RenderError> {
    let script = run("uboot_script.j2", context! {})?;
    Ok(uimage::script_image(script.as_bytes(), "appliance pxe boot"))
}
