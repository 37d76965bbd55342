//! A GPT partition table written from scratch (UEFI 2.10 §5.2–5.3): the protective MBR, the
//! primary header and entry array at the start of the disk, and the backup entry array and
//! header at its end. Pure: computes bytes, the caller writes them.

use anyhow::{bail, ensure, Result};
use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
const ENTRY_COUNT: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors the entry array takes (128 × 128 bytes).
const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// Protective MBR + header + entries.
pub const PRIMARY_SECTORS: u64 = 2 + ENTRY_SECTORS;
/// Backup entries + backup header.
pub const BACKUP_SECTORS: u64 = 1 + ENTRY_SECTORS;

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Guid(pub [u8; 16]);

pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

impl Guid {
    /// Parses the usual text form, e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub fn parse(text: &str) -> Result<Guid> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        ensure!(hex.len() == 32 && text.len() == 36, "{text:?} is not a GUID");
        let raw = hex::decode(&hex).map_err(|_| anyhow::anyhow!("{text:?} is not a GUID"))?;
        let mut b = [0u8; 16];
        b.copy_from_slice(&raw);
        Ok(Guid::from_text_order(b))
    }

    /// A GUID from its 16 bytes in text order (as a UUID is written).
    pub fn from_text_order(t: [u8; 16]) -> Guid {
        let mut b = t;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Guid(b)
    }

    /// The 16 bytes in text order.
    pub fn text_order(&self) -> [u8; 16] {
        let mut t = self.0;
        t[0..4].reverse();
        t[4..6].reverse();
        t[6..8].reverse();
        t
    }

    /// A stable GUID for `what`, derived from `seed` (version 4 / RFC 4122 variant bits set, so
    /// it looks like any random GUID to tools).
    pub fn derive(seed: &[u8], what: &str) -> Guid {
        let mut t = [0u8; 16];
        t.copy_from_slice(&derive_bytes(seed, what)[..16]);
        t[6] = (t[6] & 0x0f) | 0x40;
        t[8] = (t[8] & 0x3f) | 0x80;
        Guid::from_text_order(t)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = hex::encode(self.text_order());
        write!(f, "{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }
}

/// sha256(seed, 0, what): the source of every identifier derived from the image's inputs.
pub fn derive_bytes(seed: &[u8], what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update([0]);
    h.update(what.as_bytes());
    h.finalize().into()
}

#[derive(Clone, Debug)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub name: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub disk_guid: Guid,
    pub total_sectors: u64,
    pub partitions: Vec<Partition>,
}

impl Table {
    pub fn first_usable(&self) -> u64 {
        PRIMARY_SECTORS
    }

    pub fn last_usable(&self) -> u64 {
        self.total_sectors - BACKUP_SECTORS - 1
    }

    fn check(&self) -> Result<()> {
        ensure!(self.partitions.len() <= ENTRY_COUNT as usize, "too many partitions");
        let mut previous_end = self.first_usable();
        for p in &self.partitions {
            ensure!(p.first_lba <= p.last_lba, "partition {:?} ends before it starts", p.name);
            ensure!(
                p.first_lba >= previous_end && p.last_lba <= self.last_usable(),
                "partition {:?} (sectors {}..={}) overlaps another or leaves the usable area {}..={}",
                p.name,
                p.first_lba,
                p.last_lba,
                self.first_usable(),
                self.last_usable()
            );
            ensure!(p.name.encode_utf16().count() <= 36, "partition name {:?} is longer than 36 UTF-16 units", p.name);
            previous_end = p.last_lba + 1;
        }
        Ok(())
    }

    fn entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.guid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    fn header(&self, my_lba: u64, alternate_lba: u64, entries_lba: u64, entries_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        // 16..20: header CRC32, computed below over the 92 bytes with this field zero.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR without boot code: one 0xEE partition over the whole disk (capped at
    /// 2^32-1 sectors), a disk signature, and 55 AA.
    pub fn protective_mbr(&self, disk_signature: u32) -> [u8; 512] {
        let mut m = [0u8; 512];
        m[0x1b8..0x1bc].copy_from_slice(&disk_signature.to_le_bytes());
        let e = &mut m[0x1be..0x1ce];
        e[0] = 0x00; // not active: the UEFI spec wants 0 here
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xee;
        e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (self.total_sectors - 1).min(u64::from(u32::MAX)) as u32;
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Sectors 1..PRIMARY_SECTORS (header + entries), for LBA 1.
    pub fn primary(&self) -> Result<Vec<u8>> {
        self.check()?;
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let mut out = self.header(1, self.total_sectors - 1, 2, crc);
        out.extend_from_slice(&entries);
        Ok(out)
    }

    /// The last BACKUP_SECTORS sectors of the disk (entries, then the backup header).
    pub fn backup(&self) -> Result<Vec<u8>> {
        self.check()?;
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let entries_lba = self.total_sectors - BACKUP_SECTORS;
        let mut out = entries;
        out.extend_from_slice(&self.header(self.total_sectors - 1, 1, entries_lba, crc));
        Ok(out)
    }
}

/// Reads a GPT back from a whole disk image (for tests and the table of contents): checks both
/// headers' and entry arrays' CRCs and returns the partitions.
pub fn read(disk: &[u8]) -> Result<Vec<Partition>> {
    let sector = |lba: u64| -> Result<&[u8]> {
        let start = (lba * SECTOR) as usize;
        disk.get(start..start + SECTOR as usize).ok_or_else(|| anyhow::anyhow!("sector {lba} is past the end"))
    };
    ensure!(
        (disk.len() as u64).is_multiple_of(SECTOR) && disk.len() as u64 >= 2 * PRIMARY_SECTORS * SECTOR,
        "disk too small"
    );
    let mbr = sector(0)?;
    ensure!(mbr[510..512] == [0x55, 0xaa] && mbr[0x1be + 4] == 0xee, "no protective MBR");
    let total = disk.len() as u64 / SECTOR;
    let mut result = None;
    for lba in [1, total - 1] {
        let h = sector(lba)?;
        ensure!(&h[0..8] == b"EFI PART", "no GPT header at LBA {lba}");
        let mut copy = h[..92].to_vec();
        copy[16..20].fill(0);
        let crc = u32::from_le_bytes(h[16..20].try_into()?);
        ensure!(crc32fast::hash(&copy) == crc, "header CRC mismatch at LBA {lba}");
        let my = u64::from_le_bytes(h[24..32].try_into()?);
        ensure!(my == lba, "header at LBA {lba} says it is at {my}");
        let entries_lba = u64::from_le_bytes(h[72..80].try_into()?);
        let count = u32::from_le_bytes(h[80..84].try_into()?) as usize;
        let size = u32::from_le_bytes(h[84..88].try_into()?) as usize;
        let start = (entries_lba * SECTOR) as usize;
        let array = disk.get(start..start + count * size).ok_or_else(|| anyhow::anyhow!("entries past the end"))?;
        let crc = u32::from_le_bytes(h[88..92].try_into()?);
        ensure!(crc32fast::hash(array) == crc, "entry array CRC mismatch (header at LBA {lba})");
        let mut parts = Vec::new();
        for e in array.chunks(size) {
            if e[0..16].iter().all(|b| *b == 0) {
                continue;
            }
            let units: Vec<u16> =
                e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
            parts.push(Partition {
                type_guid: Guid(e[0..16].try_into()?),
                guid: Guid(e[16..32].try_into()?),
                first_lba: u64::from_le_bytes(e[32..40].try_into()?),
                last_lba: u64::from_le_bytes(e[40..48].try_into()?),
                attributes: u64::from_le_bytes(e[48..56].try_into()?),
                name: String::from_utf16_lossy(&units),
            });
        }
        match &result {
            None => result = Some(parts),
            Some(first) => {
                if format!("{first:?}") != format!("{parts:?}") {
                    bail!("primary and backup partition entries differ");
                }
            }
        }
    }
    result.ok_or_else(|| anyhow::anyhow!("no GPT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip_and_disk_order() {
        let g = Guid::parse(EFI_SYSTEM).unwrap();
        // The on-disk bytes of the ESP type GUID, as every GPT tool writes them.
        assert_eq!(hex::encode(g.0), "28732ac11ff8d211ba4b00a0c93ec93b");
        assert_eq!(g.to_string().to_uppercase(), EFI_SYSTEM);
        let d = Guid::derive(b"seed", "disk");
        assert_eq!(d, Guid::derive(b"seed", "disk"));
        assert_ne!(d, Guid::derive(b"seed", "esp"));
        assert_eq!(d.to_string().as_bytes()[14], b'4');
        assert!(Guid::parse("nope").is_err());
    }

    /// BIOS boot at 1 MiB, the data partition up to the last MiB, the backup GPT in it.
    fn small_table(total: u64) -> Table {
        Table {
            disk_guid: Guid::derive(b"t", "disk"),
            total_sectors: total,
            partitions: vec![
                Partition {
                    type_guid: Guid::parse(BIOS_BOOT).unwrap(),
                    guid: Guid::derive(b"t", "bios"),
                    name: "BIOS boot".into(),
                    first_lba: 2048,
                    last_lba: 4095,
                    attributes: 0,
                },
                Partition {
                    type_guid: Guid::parse(LINUX_DATA).unwrap(),
                    guid: Guid::derive(b"t", "data"),
                    name: "appliance-data".into(),
                    first_lba: 4096,
                    last_lba: total - 2048 - 1,
                    attributes: 0,
                },
            ],
        }
    }

    fn disk_of(table: &Table) -> Vec<u8> {
        let mut disk = vec![0u8; (table.total_sectors * SECTOR) as usize];
        disk[..512].copy_from_slice(&table.protective_mbr(0x1234_5678));
        let primary = table.primary().unwrap();
        disk[512..512 + primary.len()].copy_from_slice(&primary);
        let backup = table.backup().unwrap();
        let at = disk.len() - backup.len();
        disk[at..].copy_from_slice(&backup);
        disk
    }

    #[test]
    fn table_reads_back_with_valid_crcs() {
        let table = small_table(8192);
        let mut disk = disk_of(&table);
        let parts = read(&disk).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].name, "appliance-data");
        assert_eq!(parts[0].first_lba, 2048);

        disk[512 + 600] ^= 1; // corrupt the primary entry array
        assert!(format!("{:#}", read(&disk).unwrap_err()).contains("CRC"));

        let mut bad = table.clone();
        bad.partitions[1].first_lba = 4000;
        assert!(bad.primary().is_err());
    }

    /// The appliance's first-boot growth (`appliance_core::gpt_grow`) on a table this module
    /// wrote, copied to a larger disk: the result reads back with valid CRCs at the new end.
    #[test]
    fn the_data_partition_grows_to_a_larger_disk() {
        use appliance_core::gpt_grow::{self, GptError};
        let image = disk_of(&small_table(8192));
        let head = &image[..(PRIMARY_SECTORS * SECTOR) as usize];
        // On a disk of its own size there is nothing to do.
        assert_eq!(gpt_grow::grow_last(head, 2, 8192, 2048), Ok(None));
        assert_eq!(gpt_grow::grow_last(head, 1, 20000, 2048), Err(GptError::NotLast { partition: 1, last: 2 }));
        assert_eq!(gpt_grow::grow_last(head, 3, 20000, 2048), Err(GptError::NoPartition(3)));
        assert_eq!(gpt_grow::grow_last(head, 2, 4096, 2048), Err(GptError::DiskShrank { disk: 4096, table: 8192 }));

        let total = 20000u64;
        let mut disk = image.clone();
        disk.resize((total * SECTOR) as usize, 0);
        let g = gpt_grow::grow_last(head, 2, total, 2048).unwrap().unwrap();
        // The last whole MiB before the backup GPT's 33 sectors.
        assert_eq!((g.first_lba, g.old_last_lba, g.new_last_lba), (4096, 6143, (total - 33) / 2048 * 2048 - 1));
        assert_eq!(g.backup_lba, total - 33);
        let at = (g.backup_lba * SECTOR) as usize;
        disk[at..at + g.backup.len()].copy_from_slice(&g.backup);
        disk[512..512 + g.primary.len()].copy_from_slice(&g.primary);
        disk[..512].copy_from_slice(&g.mbr);
        let parts = read(&disk).unwrap();
        assert_eq!((parts[1].first_lba, parts[1].last_lba), (4096, g.new_last_lba));
        assert_eq!((parts[1].name.as_str(), parts[1].guid), ("appliance-data", Guid::derive(b"t", "data")));
        assert_eq!(parts[0].last_lba, 4095);
        assert_eq!(u32::from_le_bytes(disk[0x1ca..0x1ce].try_into().unwrap()), total as u32 - 1);
        let head = &disk[..(PRIMARY_SECTORS * SECTOR) as usize];
        assert_eq!(gpt_grow::partition(head, 2).unwrap().bytes(), (g.new_last_lba - 4095) * SECTOR);
        // Done once: a second boot finds nothing to grow.
        assert_eq!(gpt_grow::grow_last(head, 2, total, 2048), Ok(None));

        let mut broken = image.clone();
        broken[512 + 40] ^= 1;
        assert_eq!(gpt_grow::grow_last(&broken[..17408], 2, total, 2048), Err(GptError::HeaderCrc));
    }
}
