//! Processor architectures and boot firmware kinds, and the IANA "Client System Architecture"
//! registry (DHCP option 93, RFC 4578 and its updates) that maps onto them.
//!
//! Pure: no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The CPU architecture a profile is built for and a machine runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    Arm64,
    /// 32-bit x86 (i386/i686).
    X86,
    /// 32-bit ARM.
    Arm,
    Riscv64,
    Riscv32,
    Loongarch64,
}

impl Arch {
    pub const ALL: [Arch; 7] =
        [Arch::X86_64, Arch::Arm64, Arch::X86, Arch::Arm, Arch::Riscv64, Arch::Riscv32, Arch::Loongarch64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
            Arch::X86 => "x86",
            Arch::Arm => "arm",
            Arch::Riscv64 => "riscv64",
            Arch::Riscv32 => "riscv32",
            Arch::Loongarch64 => "loongarch64",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Reads the spellings boot environments use for themselves: iPXE's `${buildarch}`
    /// (`i386`, `x86_64`, `arm64`), Debian's (`amd64`), GRUB platform prefixes (`x86_64-efi`).
    pub fn from_loose(s: &str) -> Option<Arch> {
        let s = s.to_ascii_lowercase();
        Some(match s.as_str() {
            "x86_64" | "amd64" | "x64" | "x86-64" => Arch::X86_64,
            "arm64" | "aarch64" | "armv8" | "aa64" => Arch::Arm64,
            "i386" | "i686" | "x86" | "ia32" => Arch::X86,
            "arm" | "arm32" | "armv7" | "armhf" => Arch::Arm,
            "riscv64" => Arch::Riscv64,
            "riscv32" => Arch::Riscv32,
            "loongarch64" => Arch::Loongarch64,
            _ => return None,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client boots: which firmware (or bootloader) is talking to us.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    /// A legacy BIOS PXE ROM that is not iPXE (option 93 = 0, no user class `iPXE`).
    BiosPxe,
    /// A UEFI PXE stack (option 93 = 6, 7, 9, 10, 11, …).
    UefiPxe,
    /// UEFI HTTP Boot (vendor class `HTTPClient`, option 93 = 15..19, …).
    UefiHttp,
    /// iPXE, either as a NIC ROM or chained. `efi` tells its platform.
    Ipxe { efi: bool },
    /// U-Boot's network boot (option 93 = 0x15/0x16, vendor class `U-Boot.*`).
    Uboot,
    /// GRUB fetching its configuration.
    Grub,
    /// Nothing marks it as a network-boot client (an installed OS renewing its lease, say).
    Unknown,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::BiosPxe => "bios-pxe",
            Firmware::UefiPxe => "uefi-pxe",
            Firmware::UefiHttp => "uefi-http",
            Firmware::Ipxe { efi: false } => "ipxe-bios",
            Firmware::Ipxe { efi: true } => "ipxe-efi",
            Firmware::Uboot => "u-boot",
            Firmware::Grub => "grub",
            Firmware::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The boot environment class an option-93 code names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BootEnv {
    Bios,
    Uefi,
    UefiHttp,
    Uboot,
    UbootHttp,
    /// Other firmware (Open Firmware, OPAL, s390, rpiboot, …) that we recognise but do not boot.
    Other,
}

/// One row of the IANA processor architecture registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchCode {
    pub code: u16,
    pub name: &'static str,
    pub arch: Option<Arch>,
    pub env: BootEnv,
}

/// The IANA "Processor Architecture Types" registry, codes 0x00..=0x29.
///
/// Code 0 is the x86 BIOS PXE client; we take it to be 64-bit because every x86 machine
/// still worth network-booting is, and the MAC database can say otherwise per machine.
pub const ARCH_CODES: &[ArchCode] = &[
    row(0x00, "x86 BIOS", Some(Arch::X86_64), BootEnv::Bios),
    row(0x01, "NEC/PC98", None, BootEnv::Other),
    row(0x02, "Itanium", None, BootEnv::Other),
    row(0x03, "DEC Alpha", None, BootEnv::Other),
    row(0x04, "Arc x86", None, BootEnv::Other),
    row(0x05, "Intel Lean Client", None, BootEnv::Other),
    row(0x06, "x86 UEFI", Some(Arch::X86), BootEnv::Uefi),
    row(0x07, "x64 UEFI", Some(Arch::X86_64), BootEnv::Uefi),
    row(0x08, "EFI Xscale", None, BootEnv::Other),
    // 9 is "EBC" in the registry, but real x86-64 UEFI firmware sends it (RFC 4578 errata).
    row(0x09, "EBC (x64 UEFI in practice)", Some(Arch::X86_64), BootEnv::Uefi),
    row(0x0a, "ARM 32-bit UEFI", Some(Arch::Arm), BootEnv::Uefi),
    row(0x0b, "ARM 64-bit UEFI", Some(Arch::Arm64), BootEnv::Uefi),
    row(0x0c, "PowerPC Open Firmware", None, BootEnv::Other),
    row(0x0d, "PowerPC ePAPR", None, BootEnv::Other),
    row(0x0e, "POWER OPAL v3", None, BootEnv::Other),
    row(0x0f, "x86 UEFI HTTP", Some(Arch::X86), BootEnv::UefiHttp),
    row(0x10, "x64 UEFI HTTP", Some(Arch::X86_64), BootEnv::UefiHttp),
    row(0x11, "EBC HTTP", Some(Arch::X86_64), BootEnv::UefiHttp),
    row(0x12, "ARM 32-bit UEFI HTTP", Some(Arch::Arm), BootEnv::UefiHttp),
    row(0x13, "ARM 64-bit UEFI HTTP", Some(Arch::Arm64), BootEnv::UefiHttp),
    row(0x14, "x86 BIOS HTTP", Some(Arch::X86_64), BootEnv::Other),
    row(0x15, "ARM 32-bit U-Boot", Some(Arch::Arm), BootEnv::Uboot),
    row(0x16, "ARM 64-bit U-Boot", Some(Arch::Arm64), BootEnv::Uboot),
    row(0x17, "ARM 32-bit U-Boot HTTP", Some(Arch::Arm), BootEnv::UbootHttp),
    row(0x18, "ARM 64-bit U-Boot HTTP", Some(Arch::Arm64), BootEnv::UbootHttp),
    row(0x19, "RISC-V 32-bit UEFI", Some(Arch::Riscv32), BootEnv::Uefi),
    row(0x1a, "RISC-V 32-bit UEFI HTTP", Some(Arch::Riscv32), BootEnv::UefiHttp),
    row(0x1b, "RISC-V 64-bit UEFI", Some(Arch::Riscv64), BootEnv::Uefi),
    row(0x1c, "RISC-V 64-bit UEFI HTTP", Some(Arch::Riscv64), BootEnv::UefiHttp),
    row(0x1d, "RISC-V 128-bit UEFI", None, BootEnv::Uefi),
    row(0x1e, "RISC-V 128-bit UEFI HTTP", None, BootEnv::UefiHttp),
    row(0x1f, "s390 Basic", None, BootEnv::Other),
    row(0x20, "s390 Extended", None, BootEnv::Other),
    row(0x21, "MIPS 32-bit UEFI", None, BootEnv::Uefi),
    row(0x22, "MIPS 64-bit UEFI", None, BootEnv::Uefi),
    row(0x23, "Sunway 32-bit UEFI", None, BootEnv::Uefi),
    row(0x24, "Sunway 64-bit UEFI", None, BootEnv::Uefi),
    row(0x25, "LoongArch 32-bit UEFI", None, BootEnv::Uefi),
    row(0x26, "LoongArch 32-bit UEFI HTTP", None, BootEnv::UefiHttp),
    row(0x27, "LoongArch 64-bit UEFI", Some(Arch::Loongarch64), BootEnv::Uefi),
    row(0x28, "LoongArch 64-bit UEFI HTTP", Some(Arch::Loongarch64), BootEnv::UefiHttp),
    row(0x29, "ARM rpiboot", Some(Arch::Arm64), BootEnv::Other),
];

const fn row(code: u16, name: &'static str, arch: Option<Arch>, env: BootEnv) -> ArchCode {
    ArchCode { code, name, arch, env }
}

/// Looks up an option-93 code; unassigned codes give `None`.
pub fn arch_code(code: u16) -> Option<&'static ArchCode> {
    ARCH_CODES.get(usize::from(code)).filter(|r| r.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_dense_and_ordered() {
        for (i, r) in ARCH_CODES.iter().enumerate() {
            assert_eq!(usize::from(r.code), i);
        }
        assert_eq!(arch_code(0x16).unwrap().env, BootEnv::Uboot);
        assert_eq!(arch_code(0x16).unwrap().arch, Some(Arch::Arm64));
        assert_eq!(arch_code(0x1000), None);
    }

    #[test]
    fn loose_spellings() {
        assert_eq!(Arch::from_loose("i386"), Some(Arch::X86));
        assert_eq!(Arch::from_loose("AMD64"), Some(Arch::X86_64));
        assert_eq!(Arch::from_loose("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::from_loose("sparc"), None);
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.as_str()), Some(a));
        }
    }
}
