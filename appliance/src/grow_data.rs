//! `appliance grow-data`: at boot, the image's data partition fills its disk. The image is
//! built just large enough for its contents and the recipe's `state_mib`; written to a larger
//! USB stick or VM disk, the rest would stay unused. Three steps, each skipped when already
//! done, so a boot cut short in the middle finishes the job at the next boot:
//!
//! 1. the GPT: the backup table moves to the disk's end and the last partition (the data
//!    partition) grows to it (`appliance_core::gpt_grow` computes the sectors; the new backup
//!    is written and flushed before the primary, so one valid table exists at every moment);
//! 2. the kernel's idea of the partition's size (`BLKPG_RESIZE_PARTITION`: the partition is
//!    mounted, so the table cannot be re-read);
//! 3. the mounted ext4 file system (`EXT4_IOC_RESIZE_FS`, the kernel's online resize, which
//!    is what resize2fs asks for on a mounted file system), so the image needs no e2fsprogs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use appliance_core::gpt_grow::{self, SECTOR};

/// Partitions start and end on 1 MiB boundaries in the image; the grown end keeps to it.
const ALIGN_SECTORS: u64 = 1024 * 1024 / SECTOR;
/// Enough of the disk's start for the protective MBR, the primary header and its entries.
const HEAD_BYTES: usize = 64 * 1024;

/// What happened, for the boot log.
#[derive(Debug)]
pub struct Report {
    pub partition: PathBuf,
    /// The partition's size before and after, in bytes.
    pub before: u64,
    pub after: u64,
    /// The file system's size after, in bytes, and what is free on it.
    pub fs_bytes: u64,
    pub free: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: u64 = 1024 * 1024;
        // Both say "grown", which the image test waits for.
        let what = if self.after > self.before {
            format!("grown from {} MiB to {} MiB", self.before / MIB, self.after / MIB)
        } else {
            format!("not grown: {} MiB already fills its disk", self.after / MIB)
        };
        write!(
            f,
            "data partition {} {what}; file system {} MiB, {} MiB free",
            self.partition.display(),
            self.fs_bytes / MIB,
            self.free / MIB
        )
    }
}

/// Grows `partition` (the block device of the data partition, mounted on `mount`) to the end
/// of its disk, then the file system on it.
pub fn grow(partition: &Path, mount: &Path) -> Result<Report> {
    let sys = sysfs_of(partition)?;
    let number: u32 = read_trimmed(&sys.join("partition"))?.parse().context("the partition number in sysfs")?;
    // /sys/class/block/vda2 links to .../block/vda/vda2: the parent is the disk.
    let disk_sys = sys.canonicalize()?.parent().map(Path::to_path_buf).context("no parent disk in sysfs")?;
    let disk_name = disk_sys.file_name().context("no disk name")?.to_string_lossy().into_owned();
    let logical: u64 = read_trimmed(&disk_sys.join("queue/logical_block_size"))?.parse()?;
    ensure!(logical == SECTOR, "{disk_name} has {logical}-byte sectors; the image's GPT is written for {SECTOR}");
    let disk_path = Path::new("/dev").join(&disk_name);
    let disk =
        OpenOptions::new().read(true).write(true).open(&disk_path).with_context(|| disk_path.display().to_string())?;
    let disk_sectors = device_bytes(&disk)? / SECTOR;

    let mut head = vec![0u8; HEAD_BYTES];
    disk.read_exact_at(&mut head, 0).with_context(|| format!("reading the GPT of {}", disk_path.display()))?;
    let before = gpt_grow::partition(&head, number)?.bytes();
    if let Some(g) = gpt_grow::grow_last(&head, number, disk_sectors, ALIGN_SECTORS)
        .with_context(|| format!("the GPT of {}", disk_path.display()))?
    {
        disk.write_all_at(&g.backup, g.backup_lba * SECTOR)?;
        disk.sync_all()?;
        disk.write_all_at(&g.primary, SECTOR)?;
        disk.write_all_at(&g.mbr, 0)?;
        disk.sync_all().with_context(|| format!("writing the GPT of {}", disk_path.display()))?;
        disk.read_exact_at(&mut head, 0)?;
    }
    let extent = gpt_grow::partition(&head, number)?;

    let kernel_bytes = read_trimmed(&sys.join("size"))?.parse::<u64>()? * SECTOR;
    if kernel_bytes < extent.bytes() {
        resize_partition(&disk, number, extent.first_lba * SECTOR, extent.bytes())
            .with_context(|| format!("telling the kernel {} grew", partition.display()))?;
    }

    let (blocks, block_size) = ext4_size(partition)?;
    let want = extent.bytes() / block_size;
    if want > blocks {
        let dir = File::open(mount).with_context(|| mount.display().to_string())?;
        // SAFETY: the ioctl reads one u64 (the new block count) through the pointer, which
        // lives for the call; the descriptor is an open directory on the file system.
        #[allow(unsafe_code)]
        unsafe { ioctl::ext4_resize_fs(std::os::fd::AsRawFd::as_raw_fd(&dir), &want) }
            .with_context(|| format!("resizing the ext4 file system on {} to {want} blocks", mount.display()))?;
    }
    let (blocks, block_size) = ext4_size(partition)?;
    let free = crate::obtain::free_space(mount).unwrap_or(0);
    Ok(Report {
        partition: partition.to_path_buf(),
        before,
        after: extent.bytes(),
        fs_bytes: blocks * block_size,
        free,
    })
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned())
}

/// `/sys/class/block/<name>` of a block device node.
fn sysfs_of(dev: &Path) -> Result<PathBuf> {
    let real = dev.canonicalize().with_context(|| dev.display().to_string())?;
    let name = real.file_name().context("no device name")?;
    let sys = Path::new("/sys/class/block").join(name);
    ensure!(sys.join("partition").exists(), "{} is not a partition", dev.display());
    Ok(sys)
}

fn device_bytes(disk: &File) -> Result<u64> {
    let mut bytes = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which lives for the call.
    #[allow(unsafe_code)]
    unsafe { ioctl::blk_get_size64(std::os::fd::AsRawFd::as_raw_fd(disk), &mut bytes) }.context("BLKGETSIZE64")?;
    Ok(bytes)
}

/// The ext4 superblock's block count and block size (it starts 1024 bytes in).
fn ext4_size(partition: &Path) -> Result<(u64, u64)> {
    let mut sb = [0u8; 1024];
    File::open(partition)?.read_exact_at(&mut sb, 1024).with_context(|| partition.display().to_string())?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xef53 {
        bail!("{} holds no ext4 file system", partition.display());
    }
    let le32 = |at: usize| u64::from(u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes")));
    let incompat_64bit = le32(0x60) & 0x80 != 0;
    let blocks = le32(0x4) | if incompat_64bit { le32(0x150) << 32 } else { 0 };
    Ok((blocks, 1024 << le32(0x18)))
}

/// The three ioctls (linux/fs.h, linux/ext4.h, linux/blkpg.h), numbered for the running
/// architecture by nix.
#[allow(unsafe_code)]
mod ioctl {
    nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
    nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
    nix::ioctl_write_ptr_bad!(blkpg, 0x1269, super::BlkpgIoctlArg);
}

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

fn resize_partition(disk: &File, number: u32, start: u64, length: u64) -> Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&raw mut part).cast(),
    };
    // SAFETY: the kernel reads `arg` and the partition record it points to, both alive for the
    // call; the descriptor is the whole disk.
    #[allow(unsafe_code)]
    unsafe { ioctl::blkpg(std::os::fd::AsRawFd::as_raw_fd(disk), &arg) }?;
    Ok(())
}
