//! The client machines: real firmware in QEMU, one tap on the test's bridge each, the serial
//! console written to `serial.log`, QEMU's own messages to `qemu.log`, the command line to
//! `qemu.cmdline`.

use crate::netns::Lab;
use crate::procs::{render_cmdline, Proc};
use anyhow::{Context, Result};
use appliance_core::arch::Arch;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const ARMVIRT_EFI: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
pub const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The option ROM QEMU loads for an e1000 (an iPXE build, BIOS + EFI).
pub const E1000_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000.rom";
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// Which firmware boots the VM, and over which NIC (FIRMWARE.md says why each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's default e1000 option ROM, which is iPXE.
    SeaBiosIpxeRom,
    /// OVMF's own PXE stack: virtio-net-pci with an empty `romfile=`.
    OvmfPxe,
    /// OVMF UEFI HTTP Boot: as `OvmfPxe`, with PXE switched off through fw_cfg so the boot
    /// manager goes on to its "UEFI HTTPv4" entry.
    OvmfHttp,
    /// U-Boot 2023.01 `qemu_arm64` on virtio-net-device (MMIO; the PCI one gets a wrong MAC).
    UBootArm64,
    /// ArmVirt EDK2 (`QEMU_EFI.fd`) on virtio-net-pci without option ROM.
    ArmVirtEdk2,
}

impl Firmware {
    pub fn arch(self) -> Arch {
        match self {
            Firmware::SeaBiosIpxeRom | Firmware::OvmfPxe | Firmware::OvmfHttp => Arch::X86_64,
            Firmware::UBootArm64 | Firmware::ArmVirtEdk2 => Arch::Arm64,
        }
    }

    pub fn qemu_binary(self) -> (&'static str, &'static str) {
        match self.arch() {
            Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
            _ => ("qemu-system-x86_64", "qemu-system-x86"),
        }
    }

    /// Files the firmware needs, with the Debian package that has each.
    pub fn files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Firmware::SeaBiosIpxeRom => vec![(SEABIOS, "seabios"), (E1000_ROM, "ipxe-qemu")],
            Firmware::OvmfPxe | Firmware::OvmfHttp => vec![(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")],
            Firmware::UBootArm64 => vec![(UBOOT_ARM64, "u-boot-qemu")],
            Firmware::ArmVirtEdk2 => vec![(ARMVIRT_EFI, "qemu-efi-aarch64")],
        }
    }

    /// What the firmware prints on the serial console when it takes the boot path the matrix
    /// row is about (so a fallback path cannot pass the cell unnoticed).
    pub fn path_texts(self) -> &'static [&'static str] {
        match self {
            // SeaBIOS's serial console (sercon) shows the iPXE ROM's screen.
            Firmware::SeaBiosIpxeRom => &["iPXE initialising devices"],
            Firmware::OvmfPxe => &[">>Start PXE over IPv4"],
            Firmware::OvmfHttp => &[">>Start HTTP Boot over IPv4"],
            Firmware::UBootArm64 => &["Retrieving file: pxelinux.cfg/"],
            Firmware::ArmVirtEdk2 => &[">>Start PXE over IPv4", "Welcome to GRUB!"],
        }
    }

    /// RAM for every client: 512 MB. Measured: x86 (14 MB kernel) and arm64 (33 MB
    /// uncompressed Image, loaded by U-Boot at fixed addresses or by GRUB) both boot in it.
    pub fn memory_mb(self) -> u32 {
        512
    }
}

pub struct VmSpec<'a> {
    pub firmware: Firmware,
    pub mac: &'a str,
    pub tap: &'a str,
    /// Hard upper bound on QEMU's run time (see `Netns::command`).
    pub lifetime: Duration,
}

pub struct Vm {
    proc: Proc,
    pub serial: PathBuf,
    pub stderr: PathBuf,
    pub started: Instant,
}

/// `BOOT_TESTS_ACCEL=kvm` to try KVM for x86 guests; the default is TCG (FIRMWARE.md: KVM is a
/// broken nested hypervisor here, and the harness fails fast when it sees its error).
pub fn x86_accel() -> String {
    std::env::var("BOOT_TESTS_ACCEL").ok().filter(|a| !a.is_empty()).unwrap_or_else(|| "tcg".into())
}

fn command(lab: &Lab, spec: &VmSpec<'_>, out: &Path) -> Result<std::process::Command> {
    let fw = spec.firmware;
    let mut cmd = lab.server().command(fw.qemu_binary().0, spec.lifetime);
    let serial = out.join("serial.log");
    let accel = match fw.arch() {
        Arch::Arm64 => "tcg".to_string(),
        _ => x86_accel(),
    };
    cmd.args(["-accel", &accel])
        .args(["-m", &fw.memory_mb().to_string(), "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!("tap,id=net0,ifname={},script=no,downscript=no", spec.tap));
    let nic = |model: &str, extra: &str| format!("{model},netdev=net0,mac={}{extra}", spec.mac);
    match fw {
        Firmware::SeaBiosIpxeRom => {
            // SeaBIOS's serial console (`etc/sercon-port`, a little-endian I/O port) copies the
            // option ROM's screen output to the serial log: iPXE's messages end up in serial.log.
            let sercon = out.join("sercon-port");
            std::fs::write(&sercon, 0x3f8u16.to_le_bytes())?;
            cmd.args(["-machine", "pc", "-boot", "order=n"])
                .arg("-fw_cfg")
                .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
                .args(["-device", &nic("e1000", "")]);
        }
        Firmware::OvmfPxe | Firmware::OvmfHttp => {
            // Each VM gets its own writable copy of the variable store.
            let vars = out.join("OVMF_VARS_4M.fd");
            std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
            cmd.args(["-machine", "q35"])
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()))
                .args(["-device", &nic("virtio-net-pci", ",romfile=")]);
            if fw == Firmware::OvmfHttp {
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"]);
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]);
            }
        }
        Firmware::UBootArm64 => {
            cmd.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios", UBOOT_ARM64])
                .args(["-device", &nic("virtio-net-device", "")]);
        }
        Firmware::ArmVirtEdk2 => {
            cmd.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios", ARMVIRT_EFI])
                .args(["-device", &nic("virtio-net-pci", ",romfile=")]);
        }
    }
    Ok(cmd)
}

impl Vm {
    pub fn start(lab: &Lab, spec: &VmSpec<'_>, out: &Path) -> Result<Vm> {
        let mut cmd = command(lab, spec, out)?;
        std::fs::write(out.join("qemu.cmdline"), render_cmdline(&cmd) + "\n")?;
        let stderr = out.join("qemu.log");
        let started = Instant::now();
        let mut proc = Proc::spawn("qemu", &mut cmd, &stderr)?;
        proc.grace = Duration::from_secs(2);
        Ok(Vm { proc, serial: out.join("serial.log"), stderr, started })
    }

    pub fn serial_text(&self) -> String {
        read_lossy(&self.serial)
    }

    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.exited()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}
