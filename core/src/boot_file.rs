//! The boot programs we hand out, and their file names: the one place that knows them. The
//! DHCP reply, TFTP and HTTP routing, the `ipxe.efi_binary` setting and the image recipe's
//! bootloader list all go through `BootFile`.

use serde::Serialize;
use std::fmt;

/// A boot program we hand out.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum BootFile {
    /// iPXE for BIOS, chained through the ROM's UNDI driver.
    Undionly,
    /// iPXE for x86-64 UEFI with all its drivers.
    IpxeEfi,
    /// iPXE for x86-64 UEFI using the firmware's SNP driver.
    SnponlyEfi,
    /// GRUB network image for x86-64 UEFI.
    GrubX64,
    /// GRUB network image for ARM64 UEFI.
    GrubAa64,
    /// The U-Boot script image that runs `pxe get; pxe boot`.
    UbootScript,
    /// Debian's shim for x86-64 UEFI, signed by Microsoft (`shim-signed`).
    ShimX64,
    /// Debian's shim for ARM64 UEFI, signed by Microsoft (`shim-signed`).
    ShimAa64,
    /// Debian's signed network GRUB for x86-64 (`grub-efi-amd64-signed`), under the name shim
    /// loads.
    SignedGrubX64,
    /// Debian's signed network GRUB for ARM64 (`grub-efi-arm64-signed`), under the name shim
    /// loads.
    SignedGrubAa64,
}

impl BootFile {
    pub const ALL: [BootFile; 10] = [
        BootFile::Undionly,
        BootFile::IpxeEfi,
        BootFile::SnponlyEfi,
        BootFile::GrubX64,
        BootFile::GrubAa64,
        BootFile::UbootScript,
        BootFile::ShimX64,
        BootFile::ShimAa64,
        BootFile::SignedGrubX64,
        BootFile::SignedGrubAa64,
    ];

    /// The iPXE builds for x86-64 UEFI an operator chooses between (`ipxe.efi_binary`).
    pub const IPXE_EFI: [BootFile; 2] = [BootFile::IpxeEfi, BootFile::SnponlyEfi];

    pub fn file_name(self) -> &'static str {
        match self {
            BootFile::Undionly => "undionly.kpxe",
            BootFile::IpxeEfi => "ipxe.efi",
            BootFile::SnponlyEfi => "snponly.efi",
            BootFile::GrubX64 => "grubnetx64.efi",
            BootFile::GrubAa64 => "grubnetaa64.efi",
            BootFile::UbootScript => "boot.scr.uimg",
            BootFile::ShimX64 => "shimx64.efi",
            BootFile::ShimAa64 => "shimaa64.efi",
            BootFile::SignedGrubX64 => "grubx64.efi",
            BootFile::SignedGrubAa64 => "grubaa64.efi",
        }
    }

    pub fn from_file_name(name: &str) -> Option<BootFile> {
        BootFile::ALL.into_iter().find(|b| b.file_name() == name)
    }

    /// The boot programs that are files of the bootloader directory (which `cargo xtask fetch`
    /// fills), in file-name order: all but the U-Boot script image, which we render.
    pub fn bootloaders() -> impl Iterator<Item = BootFile> {
        let mut all = BootFile::ALL;
        all.sort_by_key(|b| b.file_name());
        all.into_iter().filter(|b| b.is_bootloader())
    }

    /// Whether the bytes come from the bootloader directory (see `bootloaders`).
    pub fn is_bootloader(self) -> bool {
        self != BootFile::UbootScript
    }

    pub fn is_ipxe(self) -> bool {
        matches!(self, BootFile::Undionly | BootFile::IpxeEfi | BootFile::SnponlyEfi)
    }

    /// A GRUB image of ours, into which our address is written when it is served
    /// (`render::grub_image`). Never a signed one: those are served byte for byte.
    pub fn is_grub(self) -> bool {
        matches!(self, BootFile::GrubX64 | BootFile::GrubAa64)
    }

    /// Signed for Secure Boot (shim by Microsoft, GRUB by Debian): served exactly as the
    /// package ships it, since any changed byte breaks the signature.
    pub fn is_signed(self) -> bool {
        matches!(self, BootFile::ShimX64 | BootFile::ShimAa64 | BootFile::SignedGrubX64 | BootFile::SignedGrubAa64)
    }

    /// The program this one loads by name from its own directory: shim's GRUB.
    pub fn second_stage(self) -> Option<BootFile> {
        match self {
            BootFile::ShimX64 => Some(BootFile::SignedGrubX64),
            BootFile::ShimAa64 => Some(BootFile::SignedGrubAa64),
            _ => None,
        }
    }

    /// Loaded by another of our programs by its fixed name (shim's GRUB), never handed out by
    /// DHCP: a request for it names exactly these bytes.
    pub fn is_second_stage(self) -> bool {
        BootFile::ALL.iter().any(|b| b.second_stage() == Some(self))
    }

    /// A UEFI executable.
    pub fn is_efi(self) -> bool {
        self.is_signed()
            || matches!(self, BootFile::IpxeEfi | BootFile::SnponlyEfi | BootFile::GrubX64 | BootFile::GrubAa64)
    }
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in BootFile::ALL {
            assert_eq!(BootFile::from_file_name(b.file_name()), Some(b));
            assert_eq!(b.is_efi(), b.file_name().ends_with(".efi"), "{b}");
        }
        assert_eq!(BootFile::from_file_name("pxelinux.0"), None);
    }

    #[test]
    fn bootloaders_are_the_fetched_files_by_name() {
        let names: Vec<&str> = BootFile::bootloaders().map(BootFile::file_name).collect();
        assert_eq!(
            names,
            [
                "grubaa64.efi",
                "grubnetaa64.efi",
                "grubnetx64.efi",
                "grubx64.efi",
                "ipxe.efi",
                "shimaa64.efi",
                "shimx64.efi",
                "snponly.efi",
                "undionly.kpxe"
            ]
        );
    }

    #[test]
    fn shim_loads_the_signed_grub_and_nothing_signed_is_patched() {
        assert_eq!(BootFile::ShimX64.second_stage(), Some(BootFile::SignedGrubX64));
        assert_eq!(BootFile::ShimAa64.second_stage(), Some(BootFile::SignedGrubAa64));
        let second: Vec<BootFile> = BootFile::ALL.into_iter().filter(|b| b.is_second_stage()).collect();
        assert_eq!(second, [BootFile::SignedGrubX64, BootFile::SignedGrubAa64]);
        assert!(BootFile::ALL.iter().all(|b| !(b.is_signed() && b.is_grub())));
    }
}
