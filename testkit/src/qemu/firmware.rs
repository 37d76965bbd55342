//! The firmware images QEMU boots, the files and Debian packages each needs, and the machine
//! type and options that go with it (docs/firmware.md#firmware-and-nics-in-qemu). x86 guests
//! run under TCG: KVM fails on the build machines (docs/firmware.md#kvm-and-tcg).

use std::path::Path;

pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// U-Boot 2023.01 for QEMU's arm64 `virt` machine.
pub const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// ArmVirt EDK2, UEFI for QEMU's arm64 `virt` machine.
pub const ARMVIRT_EFI: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";
/// OVMF with Secure Boot: the code built with SMM-protected variables, and a variable store
/// with Microsoft's keys enrolled and Secure Boot on (docs/firmware.md#secure-boot).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// ArmVirt EDK2 as pflash images (64 MB each), with Microsoft's keys enrolled in the variable
/// store: Secure Boot on, enforced (an unsigned GRUB is refused).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.ms.fd";
pub const AAVMF_VARS_MS: &str = "/usr/share/AAVMF/AAVMF_VARS.ms.fd";
/// The option ROM QEMU gives an e1000 NIC: an iPXE build (BIOS and EFI).
pub const E1000_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000.rom";
/// The option ROM QEMU gives a virtio-net-pci NIC: iPXE again.
pub const VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

pub const QEMU_X86_64: &str = "qemu-system-x86_64";
pub const QEMU_AARCH64: &str = "qemu-system-aarch64";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on QEMU's `pc` machine; its serial console also shows option ROMs' screens.
    SeaBios,
    /// OVMF on `q35`, with a private copy of the variable store.
    Ovmf,
    /// U-Boot on the arm64 `virt` machine (Cortex-A57).
    UBootArm64,
    /// ArmVirt EDK2 on the arm64 `virt` machine (Cortex-A57).
    ArmVirt,
    /// OVMF with Secure Boot on and Microsoft's keys enrolled, on `q35` with SMM and secure
    /// pflash, with a private copy of the variable store.
    OvmfSecureBoot,
    /// ArmVirt EDK2 (AAVMF) with Secure Boot on and Microsoft's keys enrolled, from pflash.
    ArmVirtSecureBoot,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::SeaBios => "seabios",
            Firmware::Ovmf => "ovmf",
            Firmware::UBootArm64 => "uboot-arm64",
            Firmware::ArmVirt => "armvirt",
            Firmware::OvmfSecureBoot => "ovmf-secure-boot",
            Firmware::ArmVirtSecureBoot => "armvirt-secure-boot",
        }
    }

    pub fn is_arm64(self) -> bool {
        matches!(self, Firmware::UBootArm64 | Firmware::ArmVirt | Firmware::ArmVirtSecureBoot)
    }

    /// The QEMU program and the Debian package that ships it.
    pub fn program(self) -> (&'static str, &'static str) {
        if self.is_arm64() {
            (QEMU_AARCH64, "qemu-system-arm")
        } else {
            (QEMU_X86_64, "qemu-system-x86")
        }
    }

    /// The firmware's files, with the Debian package that has each.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Firmware::SeaBios => &[(SEABIOS, "seabios")],
            Firmware::Ovmf => &[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")],
            Firmware::UBootArm64 => &[(UBOOT_ARM64, "u-boot-qemu")],
            Firmware::ArmVirt => &[(ARMVIRT_EFI, "qemu-efi-aarch64")],
            Firmware::OvmfSecureBoot => &[(OVMF_CODE_SECBOOT, "ovmf"), (OVMF_VARS_MS, "ovmf")],
            Firmware::ArmVirtSecureBoot => &[(AAVMF_CODE, "qemu-efi-aarch64"), (AAVMF_VARS_MS, "qemu-efi-aarch64")],
        }
    }

    /// Whether its NICs sit on PCI (U-Boot's on the MMIO bus: its virtio-net-pci driver reports
    /// a wrong MAC).
    pub fn pci(self) -> bool {
        self != Firmware::UBootArm64
    }

    /// The accelerator: TCG for arm64 guests (no arm64 host), for x86 `BOOT_TESTS_ACCEL`,
    /// default TCG (see the module documentation).
    pub fn accel(self) -> String {
        if self.is_arm64() {
            return "tcg".into();
        }
        std::env::var("BOOT_TESTS_ACCEL").ok().filter(|a| !a.is_empty()).unwrap_or_else(|| "tcg".into())
    }
}

/// A program or file a VM needs and the Debian package that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub what: String,
    pub package: &'static str,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (Debian package {})", self.what, self.package)
    }
}

/// What the host lacks to run machines with these firmwares (QEMU programs and firmware files),
/// plus `files` (e.g. the e1000 iPXE ROM), each named once.
pub fn missing(firmwares: &[Firmware], files: &[(&'static str, &'static str)]) -> Vec<Missing> {
    let mut out: Vec<Missing> = Vec::new();
    let mut add = |m: Missing| {
        if !out.contains(&m) {
            out.push(m);
        }
    };
    for fw in firmwares {
        let (program, package) = fw.program();
        if crate::procs::find_program(program).is_none() {
            add(Missing { what: program.into(), package });
        }
    }
    for &(file, package) in firmwares.iter().flat_map(|fw| fw.files()).chain(files) {
        if !Path::new(file).is_file() {
            add(Missing { what: file.into(), package });
        }
    }
    out
}
