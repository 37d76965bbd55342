//! Installing GRUB for BIOS booting into a disk image, without root and without
//! `grub-bios-setup`: what that tool does for a core image embedded in a BIOS boot partition.
//!
//! - `boot.img` (512 bytes, GRUB's MBR code) goes into the first 440 bytes of sector 0; the
//!   disk signature and the (protective) partition table after it stay. At 0x5c it holds the
//!   LBA of the core image's first sector (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`); at 0x66 a
//!   two-byte jump that, when replaced by two NOPs, makes it trust only hard-disk drive numbers
//!   the BIOS passes in DL (what grub-bios-setup does for hard disks, working around BIOSes
//!   that pass a wrong drive number).
//! - `core.img` starts with `diskboot.img`, whose last 12 bytes are a block list entry
//!   (start LBA: u64, sector count: u16, load segment: u16) describing where the rest of the
//!   core image lies; for a contiguous copy that is `core LBA + 1` and `sectors - 1`.
//!
//! Reed-Solomon recovery codes (grub-bios-setup's default for embedded images) are left out,
//! as `grub-bios-setup --no-rs-codes` does.

use anyhow::{ensure, Result};

pub const KERNEL_SECTOR: usize = 0x5c;
pub const DRIVE_CHECK: usize = 0x66;
/// Boot code ends where the disk signature starts.
pub const CODE_END: usize = 0x1b8;
const BLOCKLIST: usize = 512 - 12;

/// Puts `boot_img`'s code into `mbr` (which already holds the protective partition table)
/// and points it at the core image at `core_lba`.
pub fn install_boot_img(mbr: &mut [u8; 512], boot_img: &[u8], core_lba: u64) -> Result<()> {
    ensure!(boot_img.len() == 512, "boot.img is {} bytes, expected 512", boot_img.len());
    ensure!(boot_img[510..512] == [0x55, 0xaa], "boot.img has no 55 AA signature");
    // The default GRUB writes at build time; anything else means a layout we do not know.
    ensure!(
        boot_img[KERNEL_SECTOR..KERNEL_SECTOR + 8] == 1u64.to_le_bytes(),
        "boot.img does not have GRUB 2's kernel sector field at 0x5c"
    );
    ensure!(boot_img[DRIVE_CHECK] == 0xeb, "boot.img has no drive-check jump at 0x66");
    mbr[..CODE_END].copy_from_slice(&boot_img[..CODE_END]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    mbr[DRIVE_CHECK] = 0x90;
    mbr[DRIVE_CHECK + 1] = 0x90;
    Ok(())
}

/// Fills the core image's first block list entry for a contiguous copy at `core_lba`, and pads
/// it to whole sectors. Returns the sector count.
pub fn place_core_img(core: &mut Vec<u8>, core_lba: u64) -> Result<u64> {
    ensure!(core.len() > 512, "core.img is only {} bytes", core.len());
    let sectors = (core.len() as u64).div_ceil(512);
    let len = u16::try_from(sectors - 1).map_err(|_| anyhow::anyhow!("core.img is too large ({sectors} sectors)"))?;
    let written = u16::from_le_bytes([core[BLOCKLIST + 8], core[BLOCKLIST + 9]]);
    let segment = u16::from_le_bytes([core[BLOCKLIST + 10], core[BLOCKLIST + 11]]);
    // grub-mkimage fills the length; the load segment is diskboot's default 0x820.
    ensure!(
        written == len && segment == 0x820,
        "core.img's block list (len {written}, segment {segment:#x}) is not what grub-mkimage writes \
         for {sectors} sectors"
    );
    core.resize((sectors * 512) as usize, 0);
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    Ok(sectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_boot_img() -> Vec<u8> {
        let mut b = vec![0xccu8; 512];
        b[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&1u64.to_le_bytes());
        b[DRIVE_CHECK] = 0xeb;
        b[DRIVE_CHECK + 1] = 0x05;
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn boot_img_keeps_partition_table_and_points_at_core() {
        let mut mbr = [0u8; 512];
        mbr[0x1b8] = 0x42;
        mbr[0x1be + 4] = 0xee;
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        install_boot_img(&mut mbr, &fake_boot_img(), 2048).unwrap();
        assert_eq!(mbr[0], 0xcc);
        assert_eq!(u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()), 2048);
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(mbr[0x1b8], 0x42);
        assert_eq!(mbr[0x1be + 4], 0xee);
        assert!(install_boot_img(&mut mbr, &[0u8; 512], 1).is_err());
    }

    #[test]
    fn core_blocklist_points_past_its_first_sector() {
        let mut core = vec![0u8; 512 * 3 + 100];
        core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
        core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&3u16.to_le_bytes());
        core[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&0x820u16.to_le_bytes());
        assert_eq!(place_core_img(&mut core, 2048).unwrap(), 4);
        assert_eq!(core.len(), 2048);
        assert_eq!(u64::from_le_bytes(core[BLOCKLIST..BLOCKLIST + 8].try_into().unwrap()), 2049);
    }
}
