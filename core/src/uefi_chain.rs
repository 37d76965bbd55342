//! The boot chain a UEFI machine is handed, chosen by the operator (`uefi_chain:` globally in
//! `appliance.yaml`, on a vendor rule, a machine entry or the unknown-machine policy): DHCP
//! cannot tell whether the machine's firmware has Secure Boot on.
//!
//! - `ipxe` (the default): x86-64 gets iPXE (`ipxe.efi` or `snponly.efi`), arm64 our GRUB
//!   network image (`grubnetaa64.efi`, with the appliance's address written in). Neither is
//!   signed: firmware with Secure Boot on refuses them ("Access Denied").
//! - `shim`: Debian's Microsoft-signed shim (`shimx64.efi`, `shimaa64.efi`), which loads Debian's
//!   signed network GRUB (`grubx64.efi`, `grubaa64.efi`) from the directory of the BOOTP `file`
//!   field; that GRUB reads `/grub/grub.cfg` and loads the profile's kernel, which shim checks
//!   against Debian's key. All of it is served byte for byte as Debian signed it
//!   (docs/firmware.md#the-shim-chain). A UEFI HTTP Boot client gets them inside a RAM-disk
//!   boot image instead (`boot_image`).
//!
//! Pure: names and sentences only.

use crate::arch::Arch;
use crate::boot_file::BootFile;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UefiChain {
    /// iPXE for x86-64, our GRUB image for arm64: unsigned.
    #[default]
    Ipxe,
    /// shim → Debian's signed GRUB → the profile's (signed) kernel.
    Shim,
}

impl UefiChain {
    pub const ALL: [UefiChain; 2] = [UefiChain::Ipxe, UefiChain::Shim];

    /// `ipxe` or `shim`, as the config spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            UefiChain::Ipxe => "ipxe",
            UefiChain::Shim => "shim",
        }
    }

    /// The program a UEFI client of `arch` is handed first (PXE and HTTP Boot alike);
    /// `ipxe_efi` is the operator's iPXE build for x86-64 (`ipxe.efi_binary`). `None`: we have
    /// no UEFI program for that architecture.
    pub fn first_program(self, arch: Arch, ipxe_efi: BootFile) -> Option<BootFile> {
        Some(match (self, arch) {
            (UefiChain::Ipxe, Arch::X86_64) => ipxe_efi,
            (UefiChain::Ipxe, Arch::Arm64) => BootFile::GrubAa64,
            (UefiChain::Shim, Arch::X86_64) => BootFile::ShimX64,
            (UefiChain::Shim, Arch::Arm64) => BootFile::ShimAa64,
            _ => return None,
        })
    }

    /// What this chain means under Secure Boot for a client handed `first` (by UEFI HTTP Boot
    /// when `http`, where the shim chain comes as a boot image): the sentence `explain` prints.
    pub fn secure_boot_note(self, first: BootFile, http: bool) -> String {
        match (self, first.second_stage()) {
            (UefiChain::Shim, Some(grub)) if http => format!(
                "{first} (Microsoft-signed shim) and {grub} (Debian-signed GRUB) come in a RAM-disk boot image \
                 with the machine's grub.cfg and the files it names: the firmware starts shim from the image, \
                 and GRUB reads config, kernel and initrds from it (Debian 12's signed GRUB cannot read over \
                 HTTP); the profile's kernel must carry a signature shim accepts"
            ),
            (UefiChain::Shim, Some(grub)) => format!(
                "{first} (Microsoft-signed shim) loads {grub} (Debian-signed GRUB) from the same directory, \
                 which reads grub/grub.cfg by TFTP; the profile's kernel must carry a signature shim accepts"
            ),
            _ => format!(
                "{first} is unsigned: firmware with Secure Boot on refuses it (Access Denied); \
                 set `uefi_chain: shim` to boot this machine under Secure Boot"
            ),
        }
    }
}

impl fmt::Display for UefiChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chain_has_a_program_per_uefi_architecture() {
        let ipxe = BootFile::IpxeEfi;
        assert_eq!(UefiChain::Ipxe.first_program(Arch::X86_64, BootFile::SnponlyEfi), Some(BootFile::SnponlyEfi));
        assert_eq!(UefiChain::Ipxe.first_program(Arch::Arm64, ipxe), Some(BootFile::GrubAa64));
        assert_eq!(UefiChain::Shim.first_program(Arch::X86_64, ipxe), Some(BootFile::ShimX64));
        assert_eq!(UefiChain::Shim.first_program(Arch::Arm64, ipxe), Some(BootFile::ShimAa64));
        assert_eq!(UefiChain::Shim.first_program(Arch::Riscv64, ipxe), None);
    }

    #[test]
    fn notes_say_what_secure_boot_does_with_the_chain() {
        let ipxe = UefiChain::Ipxe.secure_boot_note(BootFile::IpxeEfi, false);
        assert!(ipxe.starts_with("ipxe.efi is unsigned: firmware with Secure Boot on refuses it"), "{ipxe}");
        let shim = UefiChain::Shim.secure_boot_note(BootFile::ShimX64, false);
        assert!(shim.starts_with("shimx64.efi (Microsoft-signed shim) loads grubx64.efi"), "{shim}");
        let http = UefiChain::Shim.secure_boot_note(BootFile::ShimAa64, true);
        assert!(http.contains("grubaa64.efi") && http.contains("RAM-disk boot image"), "{http}");
    }
}
