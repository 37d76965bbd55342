//! The disk image from a layout plan: the two file systems, then the protective MBR with GRUB's
//! boot code, both GPT copies and GRUB's core image written around them, and a qcow2 copy.
//! Images are written to a temporary name and renamed, so a failed build leaves no half image.

use std::fs as stdfs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use super::boot::BiosBoot;
use super::gpt::{self, Guid, Partition, Table, SECTOR};
use super::identity::Ids;
use super::layout::Layout;
use super::{bios, fs};

/// The ESP's FAT label.
pub const ESP_LABEL: &str = "APPLIANCE";

/// The FAT32 file system of the ESP, from the tree in `esp`, as `work/esp.img`.
pub fn esp_filesystem(sh: &Shell, layout: &Layout, ids: &Ids, epoch: u64, esp: &Path, work: &Path) -> Result<PathBuf> {
    let image = work.join("esp.img");
    fs::Fat {
        root: esp,
        image: &image,
        sectors: layout.esp.sectors,
        hidden: layout.esp.first_lba,
        serial: ids.esp_serial,
        label: ESP_LABEL,
        epoch,
    }
    .build(sh)?;
    Ok(image)
}

/// The ext4 file system of the data partition, labelled `label`, from the tree in `data`, as
/// `work/data.img`.
pub fn data_filesystem(
    sh: &Shell,
    layout: &Layout,
    ids: &Ids,
    epoch: u64,
    (data, label): (&Path, &str),
    work: &Path,
) -> Result<PathBuf> {
    let image = work.join("data.img");
    fs::Ext4 {
        root: data,
        image: &image,
        bytes: layout.data.bytes(),
        label,
        uuid: ids.data_uuid.clone(),
        hash_seed: ids.data_hash_seed.clone(),
        epoch,
        work,
    }
    .build(sh)?;
    Ok(image)
}

/// The partition table the layout describes; the data partition is called `data_name`.
fn table(layout: &Layout, ids: &Ids, data_name: &str) -> Result<Table> {
    let partition = |type_guid: &str, guid: Guid, name: &str, extent: super::layout::Extent| -> Result<Partition> {
        Ok(Partition {
            type_guid: Guid::parse(type_guid)?,
            guid,
            name: name.into(),
            first_lba: extent.first_lba,
            last_lba: extent.last_lba(),
            attributes: 0,
        })
    };
    Ok(Table {
        disk_guid: ids.disk,
        total_sectors: layout.total_sectors,
        partitions: vec![
            partition(gpt::BIOS_BOOT, ids.bios_part, "BIOS boot", layout.bios)?,
            partition(gpt::EFI_SYSTEM, ids.esp_part, "EFI system", layout.esp)?,
            partition(gpt::LINUX_DATA, ids.data_part, data_name, layout.data)?,
        ],
    })
}

/// The pieces of a disk image.
pub struct Parts<'a> {
    pub layout: &'a Layout,
    pub ids: &'a Ids,
    pub bios: &'a BiosBoot,
    pub esp_img: &'a Path,
    pub data_img: &'a Path,
    /// The data partition's GPT name (the appliance's initramfs finds its partition by it).
    pub data_name: &'a str,
}

/// Writes `image`: MBR and primary GPT, GRUB's core image, both file systems, the backup GPT;
/// then reads the partition table back. Returns the core image's size in sectors.
pub fn assemble(parts: &Parts<'_>, image: &Path) -> Result<u64> {
    let layout = parts.layout;
    let table = table(layout, parts.ids, parts.data_name)?;
    let mut core = parts.bios.core.clone();
    let core_sectors = bios::place_core_img(&mut core, layout.bios.first_lba)?;
    let mut mbr = table.protective_mbr(parts.ids.mbr_signature);
    bios::install_boot_img(&mut mbr, &parts.bios.boot_img, layout.bios.first_lba)?;

    let tmp = temporary(image);
    {
        let mut f = stdfs::File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
        f.set_len(layout.disk_bytes())?;
        write_at(&mut f, 0, &mbr)?;
        write_at(&mut f, SECTOR, &table.primary()?)?;
        write_at(&mut f, layout.bios.offset(), &core)?;
        copy_sparse(parts.esp_img, &mut f, layout.esp.offset())?;
        copy_sparse(parts.data_img, &mut f, layout.data.offset())?;
        write_at(&mut f, layout.backup_gpt_lba() * SECTOR, &table.backup()?)?;
        f.sync_all()?;
    }
    stdfs::rename(&tmp, image)?;
    // Read back what we wrote: both GPT copies must parse with valid CRCs.
    gpt::read(&stdfs::read(image)?).context("the written partition table does not read back")?;
    Ok(core_sectors)
}

/// The qcow2 copy of `image` (`qemu-img convert`).
pub fn qcow2(sh: &Shell, image: &Path, qcow2: &Path) -> Result<()> {
    let tmp = temporary(qcow2);
    cmd!(sh, "qemu-img convert -f raw -O qcow2 {image} {tmp}").quiet().run().context("qemu-img convert failed")?;
    stdfs::rename(&tmp, qcow2)?;
    Ok(())
}

/// `.<name>.tmp` next to `path`.
fn temporary(path: &Path) -> PathBuf {
    path.with_file_name(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()))
}

fn write_at(f: &mut stdfs::File, offset: u64, bytes: &[u8]) -> Result<()> {
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Copies `src` into `dest` at `offset`, skipping all-zero blocks (the destination is a fresh
/// sparse file, so they read as zeros anyway).
fn copy_sparse(src: &Path, dest: &mut stdfs::File, offset: u64) -> Result<()> {
    let mut input = stdfs::File::open(src).with_context(|| format!("failed to open {}", src.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(64 * 1024) {
            if chunk.iter().any(|b| *b != 0) {
                write_at(dest, pos, chunk)?;
            }
            pos += chunk.len() as u64;
        }
    }
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copies_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut bytes = vec![0u8; 300 * 1024];
        bytes[5] = 1;
        bytes[200 * 1024 + 7] = 2;
        *bytes.last_mut().unwrap() = 3;
        stdfs::write(&src, &bytes).unwrap();
        let dest = dir.path().join("dest");
        let mut f = stdfs::File::create(&dest).unwrap();
        f.set_len(4096 + bytes.len() as u64 + 512).unwrap();
        f.write_all(&[9u8; 4096]).unwrap();
        copy_sparse(&src, &mut f, 4096).unwrap();
        drop(f);
        let out = stdfs::read(&dest).unwrap();
        assert_eq!(&out[..4096], &[9u8; 4096][..]);
        assert_eq!(&out[4096..4096 + bytes.len()], &bytes[..]);
        assert!(out[4096 + bytes.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn temporary_files_sit_next_to_the_image() {
        assert_eq!(temporary(Path::new("/x/images/default.img")), Path::new("/x/images/.default.img.tmp"));
    }
}
