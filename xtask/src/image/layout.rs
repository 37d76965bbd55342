//! The disk layout as a pure plan: from what goes on the disk (the ESP's and the data
//! partition's contents, the recipe's room for state, GRUB's core image) to where each
//! partition starts, how large it is and how large the disk is. No I/O: the build measures the
//! staged trees, asks for a plan, and builds the file systems and the partition table from it.
//!
//! ```text
//! | MBR + primary GPT | BIOS boot | EFI system (FAT32) | appliance-data (ext4) | backup GPT |
//! 0                   align       2·align              ESP end                 disk end - align
//! ```
//!
//! Every partition starts and ends on an `align` boundary (1 MiB: what partitioning tools do,
//! right for any flash erase block and 4K-sector disk). The primary GPT fits before the first
//! boundary and the backup GPT into the last `align` of the disk.

use anyhow::{ensure, Result};

use super::gpt::{BACKUP_SECTORS, PRIMARY_SECTORS, SECTOR};

pub const MIB: u64 = 1024 * 1024;
/// The alignment of every partition.
pub const ALIGN: u64 = MIB;
/// The BIOS boot partition before rounding to the alignment (GRUB's i386-pc core image with
/// our modules is about 150 KiB).
pub const BIOS_BOOT_BYTES: u64 = MIB;
/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is just under 34 MiB.
pub const ESP_MIN_BYTES: u64 = 34 * MIB;
/// Free room on the ESP beyond its files' clusters: the FAT tables and directories.
const ESP_SPARE: u64 = 2 * MIB;
/// ext4's fixed metadata: a 4 MiB journal, superblock copies, group descriptors, bitmaps.
const EXT4_FIXED: u64 = 6 * MIB;
/// Bytes per ext4 inode (`inode_size` in `fs::Ext4`'s mke2fs.conf).
const INODE_BYTES: u64 = 256;

/// What the plan is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contents {
    /// Bytes the ESP's files and directories take in 512-byte clusters.
    pub esp_bytes: u64,
    /// Bytes the data partition's files and directories take in 4 KiB blocks (duplicate files
    /// once: they become hard links).
    pub data_bytes: u64,
    /// Files and directories on the data partition.
    pub data_entries: u64,
    /// Free room for the appliance's state (leases), on top of the data partition's contents.
    pub state_mib: u32,
    /// GRUB's i386-pc core image, which fills the BIOS boot partition from its start.
    pub core_bytes: u64,
    /// Partition alignment in bytes: a multiple of the sector size, and room for a GPT.
    pub align: u64,
}

/// A run of sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first_lba: u64,
    pub sectors: u64,
}

impl Extent {
    /// The last sector (inclusive, as GPT writes it).
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.sectors - 1
    }

    /// The first sector after it.
    pub fn end_lba(&self) -> u64 {
        self.first_lba + self.sectors
    }

    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub bios: Extent,
    pub esp: Extent,
    pub data: Extent,
    /// Sectors of the whole disk, the backup GPT's included.
    pub total_sectors: u64,
}

impl Layout {
    /// The plan for `contents`; fails when the alignment leaves no room for the GPT or the core
    /// image does not fit the BIOS boot partition.
    pub fn plan(contents: &Contents) -> Result<Layout> {
        let align = contents.align;
        ensure!(
            align > 0 && align.is_multiple_of(SECTOR),
            "the partition alignment ({align} bytes) is not a whole number of {SECTOR}-byte sectors"
        );
        ensure!(
            align / SECTOR >= PRIMARY_SECTORS.max(BACKUP_SECTORS),
            "the partition alignment ({align} bytes) leaves no room for the GPT ({PRIMARY_SECTORS} sectors)"
        );
        let sectors = |bytes: u64| round_up(bytes, align) / SECTOR;

        let bios = Extent { first_lba: align / SECTOR, sectors: sectors(BIOS_BOOT_BYTES) };
        let core_sectors = contents.core_bytes.div_ceil(SECTOR);
        ensure!(
            core_sectors <= bios.sectors,
            "the GRUB core image ({core_sectors} sectors) does not fit the BIOS boot partition ({} sectors)",
            bios.sectors
        );
        let esp_need = (contents.esp_bytes + ESP_SPARE).max(ESP_MIN_BYTES);
        let esp = Extent { first_lba: bios.end_lba(), sectors: sectors(esp_need) };
        let data = Extent { first_lba: esp.end_lba(), sectors: sectors(data_need(contents)) };
        // The backup GPT goes into the last `align` bytes, which keeps the disk size aligned too.
        let total_sectors = data.end_lba() + align / SECTOR;
        Ok(Layout { bios, esp, data, total_sectors })
    }

    /// Where the backup GPT (entries, then header in the very last sector) starts.
    pub fn backup_gpt_lba(&self) -> u64 {
        self.total_sectors - BACKUP_SECTORS
    }

    pub fn disk_bytes(&self) -> u64 {
        self.total_sectors * SECTOR
    }
}

/// The data partition: its files, ext4's metadata (about 1% for block and inode bitmaps and
/// group descriptors, the inode tables, the journal), and the room for state.
fn data_need(c: &Contents) -> u64 {
    let inode_tables = inodes(c.data_entries) * INODE_BYTES;
    let metadata = c.data_bytes / 100 + inode_tables + EXT4_FIXED;
    // The state room is added after rounding, so it is all free space.
    round_up(c.data_bytes + metadata, c.align) + u64::from(c.state_mib) * MIB
}

/// The inodes the data partition gets for `entries` files and directories: 64 spare for the
/// appliance's state, 1024 at least.
pub fn inodes(entries: u64) -> u64 {
    (entries + 64).max(1024)
}

fn round_up(bytes: u64, align: u64) -> u64 {
    bytes.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::gpt::{Guid, Partition, Table};

    /// About what the default image holds.
    fn contents() -> Contents {
        Contents {
            esp_bytes: 24 * MIB + 123_456,
            data_bytes: 48 * MIB + 4096 * 17,
            data_entries: 120,
            state_mib: 8,
            core_bytes: 296 * 512 - 100,
            align: ALIGN,
        }
    }

    fn plan(c: Contents) -> Layout {
        Layout::plan(&c).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn mib(sectors: u64) -> u64 {
        sectors * SECTOR / MIB
    }

    #[test]
    fn partitions_follow_each_other_on_mib_boundaries() {
        let l = plan(contents());
        assert_eq!((l.bios.first_lba, l.bios.sectors), (2048, 2048));
        assert_eq!(l.esp.first_lba, 4096);
        assert_eq!(l.data.first_lba, l.esp.end_lba());
        for e in [l.bios, l.esp, l.data] {
            assert_eq!(e.offset() % MIB, 0, "{e:?}");
            assert_eq!(e.bytes() % MIB, 0, "{e:?}");
        }
        assert_eq!(l.disk_bytes() % MIB, 0);
    }

    #[test]
    fn the_backup_gpt_fills_the_last_mib_after_the_data_partition() {
        let l = plan(contents());
        assert_eq!(l.total_sectors, l.data.end_lba() + 2048);
        assert_eq!(l.backup_gpt_lba(), l.total_sectors - 33);
        assert!(l.backup_gpt_lba() > l.data.last_lba());
        // The partition table the build writes from the plan is valid.
        let part = |name: &str, e: Extent| Partition {
            type_guid: Guid([1; 16]),
            guid: Guid([2; 16]),
            name: name.into(),
            first_lba: e.first_lba,
            last_lba: e.last_lba(),
            attributes: 0,
        };
        let table = Table {
            disk_guid: Guid([3; 16]),
            total_sectors: l.total_sectors,
            partitions: vec![part("bios", l.bios), part("esp", l.esp), part("data", l.data)],
        };
        assert!(l.data.last_lba() <= table.last_usable());
        table.primary().unwrap();
        table.backup().unwrap();
    }

    #[test]
    fn a_small_esp_gets_the_fat32_minimum() {
        let l = plan(Contents { esp_bytes: 10 * MIB, ..contents() });
        assert_eq!(mib(l.esp.sectors), 34);
        let l = plan(Contents { esp_bytes: 0, ..contents() });
        assert_eq!(mib(l.esp.sectors), 34);
    }

    #[test]
    fn a_large_esp_gets_two_spare_mib_rounded_up() {
        assert_eq!(mib(plan(Contents { esp_bytes: 40 * MIB, ..contents() }).esp.sectors), 42);
        assert_eq!(mib(plan(Contents { esp_bytes: 40 * MIB + 1, ..contents() }).esp.sectors), 43);
        assert_eq!(mib(plan(Contents { esp_bytes: 32 * MIB + 1, ..contents() }).esp.sectors), 35);
    }

    #[test]
    fn the_data_partition_holds_files_metadata_and_state() {
        // 48 MiB + 68 KiB of files, 1% of that, 1024 inodes (256 KiB), 6 MiB: 54.8 → 55 MiB;
        // then 8 MiB of state.
        assert_eq!(mib(plan(contents()).data.sectors), 63);
        assert_eq!(mib(plan(Contents { state_mib: 0, ..contents() }).data.sectors), 55);
        // Many small files: the inode tables count (10 000 entries: 2.5 MiB).
        let many = Contents { data_bytes: 0, data_entries: 10_000 - 64, state_mib: 0, ..contents() };
        assert_eq!(plan(many).data.bytes(), round_up(10_000 * 256 + 6 * MIB, MIB));
        // An empty data partition still has its journal and inode tables.
        let empty = Contents { data_bytes: 0, data_entries: 0, state_mib: 0, ..contents() };
        assert_eq!(mib(plan(empty).data.sectors), 7);
    }

    #[test]
    fn other_alignments_align_everything() {
        let l = plan(Contents { align: 4 * MIB, ..contents() });
        assert_eq!(l.bios.first_lba * SECTOR, 4 * MIB);
        for e in [l.bios, l.esp, l.data] {
            assert_eq!(e.offset() % (4 * MIB), 0, "{e:?}");
            assert_eq!(e.bytes() % (4 * MIB), 0, "{e:?}");
        }
        assert_eq!(l.total_sectors * SECTOR % (4 * MIB), 0);
        // The smallest alignment with room for the GPT.
        let l = plan(Contents { align: 34 * SECTOR, core_bytes: 1000, ..contents() });
        assert_eq!(l.bios.first_lba, 34);
        assert_eq!(l.backup_gpt_lba(), l.data.end_lba() + 1);
    }

    #[test]
    fn impossible_plans_are_refused() {
        let err = |c: Contents| format!("{:#}", Layout::plan(&c).unwrap_err());
        assert!(err(Contents { align: 1000, ..contents() }).contains("not a whole number"));
        assert!(err(Contents { align: 0, ..contents() }).contains("not a whole number"));
        assert!(err(Contents { align: 33 * SECTOR, ..contents() }).contains("no room for the GPT"));
        assert!(err(Contents { core_bytes: MIB + 1, ..contents() }).contains("does not fit the BIOS boot partition"));
        assert!(Layout::plan(&Contents { core_bytes: MIB, ..contents() }).is_ok());
    }
}
