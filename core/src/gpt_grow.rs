//! Growing a GPT disk's last partition to the end of a larger disk (the appliance image written
//! to a USB stick or VM disk bigger than itself). Pure: reads the first sectors of the disk as
//! bytes and returns the sectors to write; the daemon crate does the I/O, tells the kernel and
//! grows the file system.
//!
//! A GPT (UEFI 2.10 §5.3) has a primary header at LBA 1 with its entry array after it, and a
//! backup entry array and header in the disk's last sectors. On a disk larger than the image
//! the backup sits where the image ended and the disk's tail is unused. Growing moves the
//! backup to the real end (which also moves the header's last usable LBA) and extends the last
//! partition's end, kept on the `align` boundary its end had; the partition's start, GUIDs and
//! name stay. The caller writes `backup` first and `primary` after: until the primary is
//! written, the old table (whose own backup is still in place) is the valid one.

use thiserror::Error;

/// The sector size the appliance image's GPT is written for.
pub const SECTOR: u64 = 512;
/// The primary header's LBA.
const HEADER_LBA: u64 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GptError {
    #[error("no GPT header at LBA 1")]
    NoHeader,
    #[error("the GPT header's CRC does not match (a damaged table)")]
    HeaderCrc,
    #[error("the GPT entry array's CRC does not match (a damaged table)")]
    EntriesCrc,
    #[error("the GPT entry array (at LBA {lba}, {bytes} bytes) is not within the bytes read")]
    EntriesOutside { lba: u64, bytes: u64 },
    #[error("partition {0} is not in the GPT")]
    NoPartition(u32),
    #[error("partition {partition} is not the last on the disk (partition {last} ends after it)")]
    NotLast { partition: u32, last: u32 },
    #[error("the disk ({disk} sectors) is smaller than its GPT says ({table} sectors)")]
    DiskShrank { disk: u64, table: u64 },
}

/// What growing changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The partition's first sector (unchanged).
    pub first_lba: u64,
    /// Its last sector before and after (inclusive, as GPT writes it).
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    /// The new backup entry array and header, to write at `backup_lba` (the disk's last sectors).
    pub backup_lba: u64,
    pub backup: Vec<u8>,
    /// The new protective MBR (sector 0) and primary header and entry array (from LBA 1).
    pub mbr: Vec<u8>,
    pub primary: Vec<u8>,
}

/// A partition's extent as the GPT says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
}

impl Extent {
    pub fn bytes(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

struct Table<'a> {
    head: &'a [u8],
    header: &'a [u8],
    entries_lba: u64,
    entry_size: usize,
    entries: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header's CRC32: over its first `size` bytes with the CRC field zero.
fn header_crc(header: &[u8], size: usize) -> u32 {
    let mut copy = header[..size].to_vec();
    copy[16..20].fill(0);
    crc32fast::hash(&copy)
}

fn table(head: &[u8]) -> Result<Table<'_>, GptError> {
    let at = (HEADER_LBA * SECTOR) as usize;
    let header = head.get(at..at + SECTOR as usize).ok_or(GptError::NoHeader)?;
    if &header[0..8] != b"EFI PART" {
        return Err(GptError::NoHeader);
    }
    let size = u32_at(header, 12) as usize;
    if !(92..=SECTOR as usize).contains(&size) || header_crc(header, size) != u32_at(header, 16) {
        return Err(GptError::HeaderCrc);
    }
    let entries_lba = u64_at(header, 72);
    let (count, entry_size) = (u32_at(header, 80) as u64, u32_at(header, 84) as u64);
    let bytes = count * entry_size;
    let start = entries_lba.saturating_mul(SECTOR);
    let entries = usize::try_from(start)
        .ok()
        .and_then(|s| head.get(s..s.checked_add(bytes as usize)?))
        .filter(|_| entry_size >= 128)
        .ok_or(GptError::EntriesOutside { lba: entries_lba, bytes })?;
    if crc32fast::hash(entries) != u32_at(header, 88) {
        return Err(GptError::EntriesCrc);
    }
    Ok(Table { head, header, entries_lba, entry_size: entry_size as usize, entries })
}

impl Table<'_> {
    /// Used entries: (1-based number, extent).
    fn partitions(&self) -> impl Iterator<Item = (u32, Extent)> + '_ {
        self.entries
            .chunks(self.entry_size)
            .enumerate()
            .filter(|(_, e)| e[0..16].iter().any(|b| *b != 0))
            .map(|(i, e)| (i as u32 + 1, Extent { first_lba: u64_at(e, 32), last_lba: u64_at(e, 40) }))
    }
}

/// Partition `number`'s extent in the GPT at the start of `head` (the disk's first sectors:
/// the MBR, the primary header and its entry array).
pub fn partition(head: &[u8], number: u32) -> Result<Extent, GptError> {
    let found = table(head)?.partitions().find(|(n, _)| *n == number);
    found.map(|(_, e)| e).ok_or(GptError::NoPartition(number))
}

/// The table that makes partition `number` (the last one) end at the last `align`-sector
/// boundary before the backup GPT of a `disk_sectors`-sector disk; `None` when the table
/// already spans the disk and the partition cannot grow by a whole `align`.
pub fn grow_last(head: &[u8], number: u32, disk_sectors: u64, align: u64) -> Result<Option<Growth>, GptError> {
    let t = table(head)?;
    let (_, extent) = t.partitions().find(|(n, _)| *n == number).ok_or(GptError::NoPartition(number))?;
    if let Some((last, _)) = t.partitions().find(|(n, e)| *n != number && e.last_lba > extent.last_lba) {
        return Err(GptError::NotLast { partition: number, last });
    }
    let table_sectors = u64_at(t.header, 32) + 1;
    if disk_sectors < table_sectors {
        return Err(GptError::DiskShrank { disk: disk_sectors, table: table_sectors });
    }
    let entry_sectors = (t.entries.len() as u64).div_ceil(SECTOR);
    let backup_header = disk_sectors - 1;
    let backup_lba = backup_header - entry_sectors;
    let last_usable = backup_lba - 1;
    let align = align.max(1);
    let end = (last_usable + 1) / align * align;
    let new_last = if end > extent.last_lba + 1 { end - 1 } else { extent.last_lba };
    if new_last == extent.last_lba && table_sectors == disk_sectors {
        return Ok(None);
    }

    let mut entries = t.entries.to_vec();
    let e = (number as usize - 1) * t.entry_size;
    entries[e + 40..e + 48].copy_from_slice(&new_last.to_le_bytes());
    let entries_crc = crc32fast::hash(&entries);
    let size = u32_at(t.header, 12) as usize;
    let header = |my: u64, alternate: u64, entries_at: u64| {
        let mut h = t.header.to_vec();
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = header_crc(&h, size);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut primary = header(HEADER_LBA, backup_header, t.entries_lba);
    // `primary` runs from LBA 1 to the entry array's end; the sectors between the header and
    // the array (none in the tables the image builder writes) keep their bytes.
    let gap = (t.entries_lba - HEADER_LBA - 1) * SECTOR;
    let gap_start = ((HEADER_LBA + 1) * SECTOR) as usize;
    primary.extend_from_slice(&t.head[gap_start..gap_start + gap as usize]);
    primary.extend_from_slice(&entries);
    let mut backup = entries;
    backup.resize((entry_sectors * SECTOR) as usize, 0);
    backup.extend_from_slice(&header(backup_header, HEADER_LBA, backup_lba));

    // The protective MBR's 0xEE entry covers the whole disk, capped at 2^32-1 sectors.
    let mut mbr = t.head[..SECTOR as usize].to_vec();
    for p in 0..4 {
        let at = 0x1be + 16 * p;
        if mbr[at + 4] == 0xee {
            let size = (disk_sectors - 1).min(u64::from(u32::MAX)) as u32;
            mbr[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
        }
    }
    Ok(Some(Growth {
        first_lba: extent.first_lba,
        old_last_lba: extent.last_lba,
        new_last_lba: new_last,
        backup_lba,
        backup,
        mbr,
        primary,
    }))
}

// Tested in the image builder (`xtask/src/image/gpt.rs`), against the tables it writes.
