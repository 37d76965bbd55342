//! The one list of Debian packages `cargo xtask` needs on the host, each with why and for which
//! command. Adding a package is one line in `HOST_PACKAGES`.
//!
//! Packages that every Debian system has (Essential: yes, like dpkg, apt, coreutils, libc-bin)
//! are not listed: they are how the others get installed. The pinned packages of
//! `xtask/debian.lock` are not installed at all; they are downloaded (`debian.rs`), and only
//! their architectures and versions count here (`host/mod.rs`).

use std::fmt;

/// A `cargo xtask` command that prepares the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    Fetch,
    Image,
    Vm,
    Test,
    Bench,
    Fuzz,
}

use Task::{Bench, Fetch, Fuzz, Image, Test, Vm};

impl Task {
    /// The tasks whose packages this one needs too: `image` runs `fetch`; `vm` builds the image;
    /// `test` runs `fetch` and its image tests build images and boot them as `vm` does.
    pub fn covers(self) -> &'static [Task] {
        match self {
            Fetch => &[Fetch],
            Image => &[Image, Fetch],
            Vm => &[Vm, Image, Fetch],
            Test => &[Test, Vm, Image, Fetch, Fuzz],
            Bench => &[Bench],
            Fuzz => &[Fuzz],
        }
    }

    /// Whether the command downloads pinned packages from `xtask/debian.lock` (all but the
    /// bench, whose peers are whatever apt has).
    pub fn uses_lock(self) -> bool {
        !matches!(self, Bench | Fuzz)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fetch => "fetch",
            Image => "image",
            Vm => "vm",
            Test => "test",
            Bench => "bench",
            Fuzz => "fuzz",
        })
    }
}

/// A Debian package installed on the host.
#[derive(Debug)]
pub struct HostPackage {
    pub name: &'static str,
    /// `None`: the host's own architecture.
    pub arch: Option<&'static str>,
    /// What uses it, in one line.
    pub why: &'static str,
    /// The narrowest commands that need it; `Task::covers` adds the commands that run them.
    pub tasks: &'static [Task],
}

const fn native(name: &'static str, why: &'static str, tasks: &'static [Task]) -> HostPackage {
    HostPackage { name, arch: None, why, tasks }
}

pub const HOST_PACKAGES: &[HostPackage] = &[
    native("grub-common", "grub-mkimage builds the GRUB network boot images and the image's GRUB cores", &[Fetch]),
    native("mtools", "mformat, mmd and mcopy write the image's EFI system partition without mounting it", &[Image]),
    native("e2fsprogs", "mke2fs and debugfs write the image's ext4 data partition; e2fsck checks it", &[Image]),
    native("qemu-utils", "qemu-img writes the image's qcow2 copy", &[Image]),
    native("binutils", "strip, for the debug daemon an image bundles with --daemon-profile dev", &[Image]),
    native("qemu-system-x86", "qemu-system-x86_64 runs the appliance VM and the x86 clients", &[Vm]),
    native("seabios", "SeaBIOS (bios-256k.bin), the BIOS firmware of the x86 VMs", &[Vm]),
    native("ovmf", "OVMF, the UEFI firmware of the x86 VMs", &[Vm]),
    native("ipxe-qemu", "the iPXE option ROMs of QEMU's e1000 NIC, the x86 clients' network boot", &[Vm]),
    native("qemu-system-arm", "qemu-system-aarch64 runs the arm64 clients", &[Vm]),
    native("u-boot-qemu", "U-Boot for QEMU's arm64 virt machine (qemu_arm64/u-boot.bin)", &[Vm]),
    native("procps", "kill stops QEMU (vm, image tests) and the bench's peers", &[Vm, Bench]),
    native("qemu-efi-aarch64", "ArmVirt EDK2 (QEMU_EFI.fd), the arm64 UEFI firmware of the boot matrix", &[Test]),
    native("dnsmasq-base", "dnsmasq, the site's own DHCP server beside ours in the proxy and off cells", &[Test]),
    native("iproute2", "ip: the network namespaces, bridges and taps of the boot tests and the bench", &[Test, Bench]),
    native("tftp-hpa", "tftp, a second TFTP client against our server in the tests", &[Test]),
    native("curl", "a second HTTP client against our server in the tests and the bench", &[Test, Bench]),
    native("cpio", "cpio reads back the initrd archives we write (tests)", &[Test]),
    native(
        "git",
        "git daemon and git http-backend serve the repository the daemon follows, and git makes its commits (tests)",
        &[Test],
    ),
    native(
        "openssh-server",
        "sshd serves the repository the daemon follows over SSH with a deploy key (tests)",
        &[Test],
    ),
    native(
        "openssh-client",
        "ssh is how the daemon fetches an ssh:// repository; ssh-keygen makes the test's keys",
        &[Test],
    ),
    native("openssl", "openssl makes the CA and certificate of the HTTPS git test's server", &[Test]),
    native("u-boot-tools", "dumpimage checks the boot.scr.uimg we render (golden tests)", &[Test]),
    native("prometheus", "promtool lints the names and help texts of the daemon's /metrics (tests)", &[Test]),
    native(
        "python3-prometheus-client",
        "Python's OpenMetrics parser reads the daemon's /metrics as Prometheus does (tests)",
        &[Test],
    ),
    native("chromium", "headless Chromium loads the status pages after a QEMU cell and checks the DOM", &[Test]),
    native("g++", "compiles libFuzzer (libfuzzer-sys) for the fuzz targets that cargo-fuzz builds", &[Fuzz]),
];

/// The packages `task` needs, in list order.
pub fn needed_by(task: Task) -> impl Iterator<Item = &'static HostPackage> {
    HOST_PACKAGES.iter().filter(move |p| p.tasks.iter().any(|t| task.covers().contains(t)))
}

/// The package `name` in the list.
pub fn find(name: &str) -> Option<&'static HostPackage> {
    HOST_PACKAGES.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(task: Task) -> Vec<&'static str> {
        needed_by(task).map(|p| p.name).collect()
    }

    #[test]
    fn each_package_is_listed_once_and_says_why() {
        for (i, p) in HOST_PACKAGES.iter().enumerate() {
            assert!(!HOST_PACKAGES[..i].iter().any(|q| q.name == p.name), "{} is listed twice", p.name);
            assert!(!p.why.is_empty() && !p.tasks.is_empty(), "{}", p.name);
        }
    }

    #[test]
    fn a_command_needs_what_the_commands_it_runs_need() {
        for (wider, narrower) in [(Test, Image), (Test, Vm), (Test, Fetch), (Test, Fuzz), (Vm, Image), (Image, Fetch)] {
            for name in names(narrower) {
                assert!(names(wider).contains(&name), "{wider} lacks {name}, which {narrower} needs");
            }
        }
        assert_eq!(names(Fetch), ["grub-common"]);
        assert!(names(Image).contains(&"mtools") && !names(Image).contains(&"qemu-system-x86"));
        assert_eq!(names(Bench), ["procps", "iproute2", "curl"]);
        assert!(names(Test).contains(&"seabios"));
    }

    #[test]
    fn the_vm_files_come_from_listed_packages() {
        let programs = crate::vm::FIRMWARES.iter().map(|fw| fw.program());
        let files = crate::vm::FIRMWARES.iter().flat_map(|fw| fw.files().iter().copied());
        for (file, package) in programs.chain(files).chain(crate::vm::FILES) {
            assert!(names(Vm).contains(&package), "{file} is in {package}, which `cargo xtask vm` does not install");
        }
    }
}
