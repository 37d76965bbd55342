//! `appliance explain` and `appliance render`: what a client would be handed, without any
//! network, through the very same identify → decide → render path the daemon uses.
//!
//! Pure: returns text and file lists; the CLI prints and writes them.

use crate::arch::Arch;
use crate::boot_file::BootFile;
use crate::boot_image;
use crate::catalog::{Catalog, Profile, Target};
use crate::client::{self, Client, Learned, TftpRequest};
use crate::decide::{after_install_of, decide, target_of, Decision, Outcome, Stage, Transport};
use crate::install::{standing, MachineLog};
use crate::mac::MacAddr;
use crate::render::{self, Format, RenderError, ServerInfo};
use crate::token::TokenKey;
use crate::uefi_chain::UefiChain;
use dhcproto::v4::{self, DhcpOption, Message, MessageType};
use std::fmt::Write as _;

/// What the operator tells `explain` about the client.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub mac: Option<MacAddr>,
    pub client_arch: Option<u16>,
    pub vendor_class: Option<String>,
    pub user_class: Option<String>,
    pub path: Option<String>,
    /// Pretend the iPXE binary was already handed out to this MAC.
    pub chained: bool,
    /// The machine's install log, as the daemon's state directory has it (`--state`).
    pub install: Option<MachineLog>,
    /// The daemon's token key (from `--state`); else tokens are rendered with the check-only key.
    pub tokens: Option<TokenKey>,
}

/// Builds the DHCP DISCOVER such a client would send and identifies it the way the daemon does.
pub fn client_from_query(q: &Query) -> Client {
    let mut msg = Message::default();
    msg.set_opcode(v4::Opcode::BootRequest);
    if let Some(mac) = q.mac {
        msg.set_chaddr(&mac.0);
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    if let Some(a) = q.client_arch {
        opts.insert(DhcpOption::ClientSystemArchitecture(a.into()));
    }
    if let Some(v) = &q.vendor_class {
        opts.insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
    }
    if let Some(u) = &q.user_class {
        opts.insert(DhcpOption::UserClass(u.as_bytes().to_vec()));
    }
    let mut c = client::from_dhcp(&msg);
    c.ipxe_chained = q.chained;
    c.installed = q.install.as_ref().and_then(|l| l.installed.clone());
    c
}

/// The decision and rendered config for a config-file path, with the client facts merged in.
pub fn for_path(mut client: Client, path: &str) -> (Stage, Option<Format>, Client) {
    match client::classify_tftp(path) {
        request @ (TftpRequest::Pxelinux(_) | TftpRequest::GrubConfig(_)) => {
            let (TftpRequest::Pxelinux(f) | TftpRequest::GrubConfig(f)) = &request else { unreachable!() };
            let grub = matches!(request, TftpRequest::GrubConfig(_));
            let mac = f.mac.map(|m| (m, Learned::TftpPath(path.into())));
            client = client.learn_from_path(path, f, mac);
            if grub {
                client.firmware = crate::arch::Firmware::Grub;
                (Stage::Grub, Some(Format::Grub), client)
            } else {
                client.firmware = crate::arch::Firmware::Uboot;
                (Stage::Pxelinux, Some(Format::Pxelinux), client)
            }
        }
        _ if path.contains("ipxe") => (Stage::IpxeScript, Some(Format::Ipxe), client),
        _ => (Stage::Dhcp, None, client),
    }
}

/// The full explanation `appliance explain` prints.
pub fn explain(catalog: &Catalog, q: &Query) -> Result<String, RenderError> {
    let mut server = ServerInfo::from_catalog(catalog);
    if let Some(key) = &q.tokens {
        server.tokens = key.clone();
    }
    let client = client_from_query(q);
    let mut out = String::new();
    let _ = writeln!(out, "client:");
    let _ = writeln!(out, "  mac:        {}", client.mac.map(|m| m.to_string()).unwrap_or_else(|| "(none)".into()));
    let _ = writeln!(out, "  firmware:   {}", client.firmware);
    if let Some(c) = client.client_arch_code {
        let name = crate::arch::arch_code(c).map(|r| r.name).unwrap_or("unassigned");
        let _ = writeln!(out, "  option 93:  {c} ({name})");
    }
    if let Some((a, l)) = &client.arch_hint {
        let _ = writeln!(out, "  claims:     {a} (from {l})");
    }
    let (stage, format, client) = match &q.path {
        Some(p) => for_path(client, p),
        None => (Stage::Dhcp, None, client),
    };
    let d = decide(catalog, &client, stage);
    describe(&mut out, &d, &server);
    // For a DHCP stage, also show what the client fetches next.
    let next = match (&d.outcome, format) {
        (_, Some(f)) => Some((stage, f)),
        (Outcome::IpxeScript, None) => Some((Stage::IpxeScript, Format::Ipxe)),
        (Outcome::BootFile { file, .. }, None) if file.is_ipxe() => Some((Stage::IpxeScript, Format::Ipxe)),
        (Outcome::BootFile { file: BootFile::UbootScript, .. }, None) => Some((Stage::Pxelinux, Format::Pxelinux)),
        (Outcome::BootFile { .. } | Outcome::BootImage { .. }, None) => Some((Stage::Grub, Format::Grub)),
        _ => None,
    };
    if let Some((stage, format)) = next {
        let d2 = if stage == d.stage { d.clone() } else { decide(catalog, &client, stage) };
        if stage != d.stage {
            let _ = writeln!(out, "\nthen, at the {stage} stage:");
            describe(&mut out, &d2, &server);
        }
        match render::render(catalog, &d2, &server, format)? {
            Some(text) => {
                if let Outcome::BootImage { .. } = d.outcome {
                    boot_image_files(&mut out, catalog, &d2, &server)?;
                }
                let _ = writeln!(out, "\n--- rendered {format} ---\n{text}");
            }
            None => {
                let _ = writeln!(out, "\n(no {format} for this client: answered \"not found\")");
            }
        }
        describe_answers(&mut out, catalog, &d2, &server);
    }
    describe_install(&mut out, catalog, &client, q.install.as_ref());
    Ok(out)
}

/// The install state and history of the machine, and what `after_install` says for it.
fn describe_install(out: &mut String, catalog: &Catalog, client: &Client, log: Option<&MachineLog>) {
    let (after, by) = after_install_of(catalog, client.mac);
    let entry = client.mac.and_then(|m| catalog.machine(m));
    let _ = writeln!(out, "\ninstall state:");
    let _ = writeln!(out, "  after install: {after} (by {by})");
    let Some(log) = log else {
        let _ = writeln!(out, "  state:         unknown (give --state DIR to read the daemon's install log)");
        return;
    };
    let now = standing(log.installed.as_ref(), entry);
    let consequence = match (&now, after) {
        (crate::install::Standing::Installed { .. }, crate::install::AfterInstall::Local) => {
            "; booting local until re-armed"
        }
        _ => "",
    };
    let _ = writeln!(out, "  state:         {now}{consequence}");
    if !log.events.is_empty() {
        let _ = writeln!(out, "  events (oldest first):");
        for e in &log.events {
            let _ = writeln!(out, "    {e}");
        }
    }
}

/// The answer files of the profile the decision boots (or its machine's target profile).
fn describe_answers(out: &mut String, catalog: &Catalog, d: &Decision, server: &ServerInfo) {
    let profile = match (&d.outcome, target_of(catalog, d.machine.mac).0) {
        (Outcome::Boot { profile, .. }, _) => catalog.profile(profile),
        (_, Target::Profile(p)) => Some(&**p),
        _ => None,
    };
    let Some(profile) = profile.filter(|p| !p.answers.is_empty()) else { return };
    for name in profile.answers.keys() {
        let url = render::context::answer_url(server, &d.machine, profile, name, true).unwrap_or_default();
        match crate::answers::render(catalog, profile, name, d.arch, &d.machine, server, true) {
            Ok(a) => {
                let _ = writeln!(out, "--- answer {name} ({url}, {}) ---\n{}", a.content_type, a.text);
            }
            Err(e) => {
                let _ = writeln!(out, "--- answer {name} ({url}): not served (500): {e} ---\n");
            }
        }
    }
}

fn describe(out: &mut String, d: &Decision, server: &ServerInfo) {
    let what = match &d.outcome {
        Outcome::Ignore { reason } => format!("ignore ({reason})"),
        Outcome::BootFile { file, transport: Transport::Tftp } => {
            format!("boot file {} by TFTP from {}", file.file_name(), server.address)
        }
        Outcome::BootFile { file, transport: Transport::Http } => {
            format!("boot file {}/{} by HTTP", server.http_base, file.file_name())
        }
        Outcome::IpxeScript => format!("iPXE script {}/boot.ipxe", server.http_base),
        Outcome::BootImage { shim } => match (d.machine.mac, d.arch) {
            (Some(mac), Some(arch)) => format!(
                "boot image {}/{} by HTTP (a RAM disk: {shim}, its GRUB, grub.cfg and the files it names)",
                server.http_base,
                boot_image::url_path(mac, arch)
            ),
            _ => format!("boot image with {shim} (no MAC or architecture to name it by)"),
        },
        Outcome::Boot { profile, version } => format!("profile {profile} version {version}"),
        Outcome::Menu { menu } => format!("menu {menu}"),
        Outcome::Local => "boot from local disk".into(),
    };
    let _ = writeln!(out, "decision ({} stage):", d.stage);
    let _ = writeln!(out, "  hands out:    {what}");
    let _ = writeln!(
        out,
        "  machine:      {}{}",
        d.machine.hostname,
        if d.machine.known { "" } else { " (not in the MAC database)" }
    );
    let _ = writeln!(out, "  architecture: {} by {}", d.arch.map(|a| a.as_str()).unwrap_or("unknown"), d.arch_rule);
    let _ = writeln!(out, "  target by:    {}", d.target_rule);
    if let Some(choice) = &d.uefi_chain {
        let _ = writeln!(out, "  uefi chain:   {} by {}", choice.chain, choice.rule);
        let handed = match &d.outcome {
            Outcome::BootFile { file, transport } => Some((*file, *transport == Transport::Http)),
            Outcome::BootImage { shim } => Some((*shim, true)),
            _ => None,
        };
        if let Some((file, http)) = handed {
            let _ = writeln!(out, "  secure boot:  {}", choice.chain.secure_boot_note(file, http));
        }
    }
}

/// The files of the boot image for `d` (a GRUB-stage decision), in the image's order.
fn boot_image_files(out: &mut String, catalog: &Catalog, d: &Decision, server: &ServerInfo) -> Result<(), RenderError> {
    let Some(plan) = boot_image::plan(catalog, d, server)? else { return Ok(()) };
    let _ = writeln!(out, "\n--- boot image files ---");
    let _ = writeln!(out, "{}  ({}, Microsoft-signed)", plan.shim_path, plan.shim);
    let _ = writeln!(out, "{}  (Debian-signed)", plan.grub_path());
    let _ = writeln!(out, "{}  (rendered below)", boot_image::CONFIG_PATH);
    for a in &plan.artifacts {
        let _ = writeln!(out, "{}", a.path());
    }
    Ok(())
}

/// One file `appliance render` writes: its path under the output folder and contents.
pub struct RenderedFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Every config the catalog can produce: per machine, per-architecture defaults, menus, the
/// iPXE entry script and the U-Boot script image. Paths mirror what clients request; an x86-64
/// machine on the shim chain also gets the GRUB config its signed GRUB is served (that GRUB asks
/// for `grub/grub.cfg` and is told apart by its address, so the file is named by MAC here).
pub fn render_all(catalog: &Catalog) -> Result<Vec<RenderedFile>, RenderError> {
    let server = ServerInfo::from_catalog(catalog);
    let mut files = vec![
        RenderedFile { path: "http/boot.ipxe".into(), bytes: render::ipxe_entry(&server)?.into_bytes() },
        RenderedFile { path: "tftp/boot.scr.uimg".into(), bytes: render::uboot_script()? },
    ];
    let mut push = |path: String, d: &Decision, format: Format| -> Result<(), RenderError> {
        if let Some(text) = render::render(catalog, d, &server, format)? {
            files.push(RenderedFile { path, bytes: text.into_bytes() });
        }
        Ok(())
    };
    for m in catalog.machines() {
        let arches = machine_arches(catalog, m);
        for arch in &arches {
            let mut c = Client::new(crate::arch::Firmware::Unknown).with_mac(m.mac, Learned::Chaddr);
            c.arch_hint = Some((*arch, Learned::Chaddr));
            let suffix = if arches.len() > 1 { format!(".{arch}") } else { String::new() };
            match arch {
                Arch::X86_64 | Arch::X86 => {
                    push(
                        format!("http/ipxe/{}{suffix}.ipxe", m.mac.dashed()),
                        &decide(catalog, &c, Stage::IpxeScript),
                        Format::Ipxe,
                    )?;
                    if crate::decide::uefi_chain(catalog, Some(m.mac)).chain == UefiChain::Shim {
                        push(
                            format!("tftp/grub/grub.cfg-01-{}{suffix}", m.mac.dashed()),
                            &decide(catalog, &c, Stage::Grub),
                            Format::Grub,
                        )?;
                    }
                }
                _ => {
                    push(
                        format!("tftp/pxelinux.cfg/01-{}{suffix}", m.mac.dashed()),
                        &decide(catalog, &c, Stage::Pxelinux),
                        Format::Pxelinux,
                    )?;
                    push(
                        format!("tftp/grub/grub.cfg-01-{}{suffix}", m.mac.dashed()),
                        &decide(catalog, &c, Stage::Grub),
                        Format::Grub,
                    )?;
                }
            }
        }
    }
    let mut answers = Vec::new();
    for m in catalog.machines() {
        let arches = machine_arches(catalog, m);
        for arch in &arches {
            let suffix = if arches.len() > 1 { format!(".{arch}") } else { String::new() };
            let dir = format!("http/answers/{}{suffix}", m.mac.dashed());
            answer_files(catalog, &server, m.mac, *arch, &dir, &mut answers)?;
        }
    }
    // What an unknown machine gets, per architecture.
    for arch in [Arch::X86_64, Arch::Arm64] {
        let mut c = Client::new(crate::arch::Firmware::Unknown);
        c.arch_hint = Some((arch, Learned::Chaddr));
        match arch {
            Arch::X86_64 => {
                push(format!("http/ipxe/unknown.{arch}.ipxe"), &decide(catalog, &c, Stage::IpxeScript), Format::Ipxe)?;
                if crate::decide::uefi_chain(catalog, None).chain == UefiChain::Shim {
                    push(format!("tftp/grub/grub.cfg.{arch}"), &decide(catalog, &c, Stage::Grub), Format::Grub)?;
                }
            }
            _ => {
                push(
                    format!("tftp/pxelinux.cfg/default-{arch}"),
                    &decide(catalog, &c, Stage::Pxelinux),
                    Format::Pxelinux,
                )?;
                push(format!("tftp/grub/grub.cfg.{arch}"), &decide(catalog, &c, Stage::Grub), Format::Grub)?;
            }
        }
    }
    for arch in [Arch::X86_64, Arch::Arm64] {
        let dir = format!("http/answers/unknown.{arch}");
        answer_files(catalog, &server, crate::answers::SAMPLE_UNKNOWN, arch, &dir, &mut answers)?;
    }
    files.extend(answers);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The answer files `mac` gets on `arch` when its target is a profile with answers, as
/// `<dir>/<name>` (rendered with the check-only token key).
fn answer_files(
    catalog: &Catalog,
    server: &ServerInfo,
    mac: MacAddr,
    arch: Arch,
    dir: &str,
    files: &mut Vec<RenderedFile>,
) -> Result<(), RenderError> {
    let Target::Profile(profile) = target_of(catalog, Some(mac)).0 else { return Ok(()) };
    let profile: &Profile = profile;
    if !profile.arches.contains_key(&arch) {
        return Ok(());
    }
    let mut c = Client::new(crate::arch::Firmware::Unknown).with_mac(mac, Learned::Chaddr);
    c.arch_hint = Some((arch, Learned::Chaddr));
    let d = decide(catalog, &c, Stage::IpxeScript);
    for name in profile.answers.keys() {
        let answer =
            crate::answers::render(catalog, profile, name, Some(arch), &d.machine, server, true).map_err(|e| {
                RenderError::Answer { profile: profile.name.clone(), name: name.clone(), error: e.to_string() }
            })?;
        files.push(RenderedFile { path: format!("{dir}/{name}"), bytes: answer.text.into_bytes() });
    }
    Ok(())
}

/// The architectures a machine can boot: its own (or its vendor's), else its profile's.
fn machine_arches(catalog: &Catalog, m: &crate::catalog::Machine) -> Vec<Arch> {
    if let Some(a) = m.arch.or_else(|| catalog.vendor_rule(m.mac).and_then(|v| v.arch)) {
        return vec![a];
    }
    match &m.target {
        Some(Target::Profile(p)) => p.arches.keys().copied().collect(),
        _ => vec![Arch::X86_64, Arch::Arm64],
    }
}
