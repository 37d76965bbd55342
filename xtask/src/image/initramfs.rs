//! The appliance's root file system: busybox (as init and shell), the daemon with the exact
//! shared libraries it was linked against, the kernel modules, and the boot scripts. Built as
//! a deterministic newc cpio (`appliance_core::cpio`), gzip-compressed with a zero timestamp.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use appliance_core::cpio::{self, Node};

use super::host::Library;
use super::kmod::Module;
use super::recipe::{Interface, Ipv4, Recipe};

/// The GPT partition name of the data partition (also its ext4 label).
pub const DATA_PARTNAME: &str = "appliance-data";

const LIB_SH: &str = include_str!("rootfs/lib.sh");
const BOOT: &str = include_str!("rootfs/appliance-boot");
const RUN: &str = include_str!("rootfs/appliance-run");
const SHUTDOWN: &str = include_str!("rootfs/appliance-shutdown");
const UDHCPC: &str = include_str!("rootfs/udhcpc.script");
const ACPI_POWER: &str = include_str!("rootfs/acpi-power");

/// Every embedded script, for the build seed.
pub fn embedded_scripts() -> [&'static str; 6] {
    [LIB_SH, BOOT, RUN, SHUTDOWN, UDHCPC, ACPI_POWER]
}

/// Settings the boot scripts read from `/etc/appliance/image.conf`.
pub struct Settings<'a> {
    pub recipe: &'a Recipe,
    pub image_id: &'a str,
    pub kernel_version: &'a str,
    pub data_uuid: &'a str,
    /// `server.address` of the config: the daemon is told `--advertise` only when ours differs.
    pub config_address: std::net::Ipv4Addr,
    pub http_port: u16,
    pub has_overlay: bool,
}

/// Path of the overlay on the data partition, as the appliance sees it.
pub const OVERLAY_PATH: &str = "/data/overlay.yaml";

/// Everything the initramfs is made of.
pub struct Inputs<'a> {
    pub settings: Settings<'a>,
    pub busybox: &'a Path,
    pub daemon: &'a Path,
    pub libraries: &'a [Library],
    /// `/lib/modules/<version>` of the extracted kernel package.
    pub modules_root: &'a Path,
    pub modules: &'a [Module],
    pub build_info: &'a str,
}

/// Builds the compressed initramfs.
pub fn build(inputs: &Inputs<'_>) -> Result<Vec<u8>> {
    let s = &inputs.settings;
    let read = |p: &Path| fs::read(p).with_context(|| format!("failed to read {}", p.display()));
    let text = |t: &str| Node::File(t.as_bytes().to_vec());
    let mut entries: Vec<(String, u32, Node)> = Vec::new();
    let mut add = |path: &str, mode: u32, node: Node| entries.push((path.to_owned(), mode, node));

    for dir in ["proc", "sys", "dev", "run", "tmp", "data", "root", "sbin", "usr/bin", "usr/sbin"] {
        add(dir, 0o755, Node::Dir);
    }
    add("tmp", 0o1777, Node::Dir);
    add("root", 0o700, Node::Dir);
    add("bin/busybox", 0o755, Node::File(read(inputs.busybox)?));
    add("bin/sh", 0o777, Node::Symlink("busybox".into()));
    // The kernel runs /init: busybox's init applet, which reads /etc/inittab.
    add("init", 0o777, Node::Symlink("bin/busybox".into()));
    add("usr/bin/appliance", 0o755, Node::File(read(inputs.daemon)?));
    for lib in inputs.libraries {
        add(lib.path.trim_start_matches('/'), 0o755, Node::File(read(&lib.file)?));
    }
    let mut module_list = String::new();
    for m in inputs.modules {
        let rel = m.rel.to_string_lossy();
        add(
            &format!("lib/modules/{}/{rel}", s.kernel_version),
            0o644,
            Node::File(read(&inputs.modules_root.join(&m.rel))?),
        );
        let _ = writeln!(module_list, "{rel}");
    }
    add("etc/appliance/modules", 0o644, Node::File(module_list.into_bytes()));
    add("etc/appliance/image.conf", 0o644, Node::File(image_conf(s).into_bytes()));
    add("etc/appliance/build-info", 0o644, text(inputs.build_info));
    add("etc/appliance/lib.sh", 0o644, text(LIB_SH));
    add("sbin/appliance-boot", 0o755, text(BOOT));
    add("sbin/appliance-run", 0o755, text(RUN));
    add("sbin/appliance-shutdown", 0o755, text(SHUTDOWN));
    add("etc/appliance/udhcpc.script", 0o755, text(UDHCPC));
    add("etc/acpi/power", 0o755, text(ACPI_POWER));
    add("etc/acpid.conf", 0o644, text("PWRF power\nPWRB power\n"));
    add("etc/inittab", 0o644, Node::File(inittab(s.recipe).into_bytes()));
    add("etc/hostname", 0o644, Node::File(format!("{}\n", s.recipe.hostname).into_bytes()));
    // `appliance-run` starts the daemon as root with `--user appliance`: it binds its ports,
    // takes /data/state and becomes this user with only CAP_NET_RAW (router advertisements).
    add(
        "etc/passwd",
        0o644,
        text("root:x:0:0:root:/root:/bin/sh\nappliance:x:101:101:appliance daemon:/data/state:/bin/false\n"),
    );
    add("etc/group", 0o644, text("root:x:0:\nappliance:x:101:\n"));
    add("etc/profile", 0o644, text("PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\nPS1='appliance:\\w# '\n"));
    add("etc/resolv.conf", 0o644, Node::File(Vec::new()));
    // The console device, so /init starts with the console as stdin/stdout/stderr.
    add("dev/console", 0o600, Node::CharDevice { major: 5, minor: 1 });
    add("dev/null", 0o666, Node::CharDevice { major: 1, minor: 3 });

    Ok(cpio::gzip(&cpio::archive(entries)))
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// `/etc/appliance/image.conf`: shell assignments.
pub fn image_conf(s: &Settings<'_>) -> String {
    let r = s.recipe;
    let iface = match &r.interface {
        Interface::Auto => "auto".to_owned(),
        Interface::Name(n) => format!("name:{n}"),
        Interface::Mac(m) => format!("mac:{m}"),
    };
    let (ipv4, address, prefix, gateway) = match &r.ipv4 {
        Ipv4::Static { address, prefix, gateway } => {
            ("static", address.to_string(), prefix.to_string(), gateway.map(|g| g.to_string()).unwrap_or_default())
        }
        Ipv4::Dhcp => ("dhcp", String::new(), String::new(), String::new()),
    };
    // Logs go to /dev/console (the last console= on the command line); with both a serial
    // port and VGA, also to the first virtual terminal.
    let extra = if r.vga && r.serial.is_some() { "tty1" } else { "" };
    let vars: [(&str, String); 18] = [
        ("IMAGE_NAME", r.name.clone()),
        ("IMAGE_ID", s.image_id.to_owned()),
        ("KERNEL_VERSION", s.kernel_version.to_owned()),
        ("HOSTNAME", r.hostname.clone()),
        ("IFACE_SEL", iface),
        ("IPV4", ipv4.to_owned()),
        ("ADDRESS", address),
        ("PREFIX", prefix),
        ("GATEWAY", gateway),
        ("CONFIG_ADDRESS", s.config_address.to_string()),
        ("HTTP_PORT", s.http_port.to_string()),
        ("OVERLAY", if s.has_overlay { OVERLAY_PATH.to_owned() } else { String::new() }),
        ("LOG", r.log.clone()),
        ("ADMIN_LISTEN", r.admin.script_value()),
        ("EXTRA_CONSOLE", extra.to_owned()),
        ("DATA_UUID", s.data_uuid.to_owned()),
        ("DATA_PARTNAME", DATA_PARTNAME.to_owned()),
        ("SERIAL", r.serial.clone().unwrap_or_default()),
    ];
    let mut out = String::from("# Written by `cargo xtask image` from the recipe; read by the boot scripts.\n");
    for (k, v) in vars {
        let _ = writeln!(out, "{k}={}", quote(&v));
    }
    out
}

/// busybox init's table: boot setup, the supervised daemon, a shell on each console (after
/// Enter), and the clean shutdown.
pub fn inittab(r: &Recipe) -> String {
    let mut out = String::from(
        "# busybox init: <tty>::<action>:<command>; an empty tty is /dev/console.\n\
         ::sysinit:/sbin/appliance-boot\n\
         ::respawn:/sbin/appliance-run\n\
         ::askfirst:-/bin/sh\n",
    );
    if r.vga && r.serial.is_some() {
        out.push_str("tty1::askfirst:-/bin/sh\n");
    }
    out.push_str("::ctrlaltdel:/bin/reboot\n::shutdown:/sbin/appliance-shutdown\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
