//! A FAT file system holding a fixed set of files, written into memory: the bytes of the boot
//! image's RAM disk. Deterministic: files are written in path order, every time stamp is the
//! zero date (the `fatfs` crate without its `chrono` feature reads no clock), and the volume id
//! is an argument. The volume is sized to its contents: 4 KiB clusters, FAT12, FAT16 or FAT32
//! by the number of clusters the files need, a little slack for the directories.
//!
//! Why `fatfs`: it is the FAT crate the Rust OS-development tools build their boot images with,
//! pure Rust, MIT-licensed, no I/O of its own (it works on any `Read + Write + Seek`, here a
//! `Cursor` over a `Vec`), and only `bitflags`, `byteorder` and `log` besides. Its releases have
//! stopped at 0.3.6, which is why the tests read every image back (with the crate, and with
//! mtools in the daemon's tests) rather than trusting it.

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use std::collections::BTreeSet;
use std::io::{Cursor, Write};

const CLUSTER: u64 = 4096;
const SECTOR: u64 = 512;
/// The cluster counts at which FAT16 and FAT32 begin (Microsoft's FAT specification); a volume
/// is kept clear of both edges, so the type its cluster count implies is the one it was made as.
const FAT16_MIN_CLUSTERS: u64 = 4085;
const FAT32_MIN_CLUSTERS: u64 = 65525;
const EDGE: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("{path:?} cannot be a file in a FAT image (an empty segment, or a file and a directory of one name)")]
    BadPath { path: String },
    #[error("writing the FAT image: {0}")]
    Write(#[from] std::io::Error),
}

/// One file of the volume: its path (`/`-separated, no leading `/`) and its bytes.
pub struct FatFile<'a> {
    pub path: &'a str,
    pub bytes: &'a [u8],
}

/// Writes `files` into a new FAT volume labelled `label`, with `volume_id` as its serial number.
pub fn build(files: &[FatFile<'_>], label: [u8; 11], volume_id: u32) -> Result<Vec<u8>, FatError> {
    let mut files: Vec<&FatFile<'_>> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(b.path));
    let dirs = directories(&files)?;
    let (fat_type, clusters) = geometry(&files, &dirs);
    // Reserved sectors, the root directory of FAT12/16 and both FATs, generously: whatever
    // is left over becomes free clusters.
    let fat_bytes = (clusters + 2) * 4;
    let total = (clusters * CLUSTER + 2 * fat_bytes + 128 * 1024).div_ceil(SECTOR) * SECTOR;
    let mut image = Cursor::new(vec![0u8; total as usize]);
    let options = FormatVolumeOptions::new()
        .bytes_per_cluster(CLUSTER as u32)
        .fat_type(fat_type)
        .volume_id(volume_id)
        .volume_label(label);
    fatfs::format_volume(&mut image, options)?;
    image.set_position(0);
    {
        let fs = FileSystem::new(&mut image, FsOptions::new())?;
        {
            let root = fs.root_dir();
            for dir in &dirs {
                root.create_dir(dir)?;
            }
            for f in &files {
                let mut out = root.create_file(f.path)?;
                out.write_all(f.bytes)?;
                out.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(image.into_inner())
}

/// Every directory the files need, parents before children.
fn directories(files: &[&FatFile<'_>]) -> Result<BTreeSet<String>, FatError> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let bad = || FatError::BadPath { path: f.path.to_string() };
        if f.path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(bad());
        }
        let mut end = 0;
        while let Some(i) = f.path[end..].find('/') {
            end += i;
            dirs.insert(f.path[..end].to_string());
            end += 1;
        }
    }
    if files.iter().any(|f| dirs.contains(f.path)) || files.windows(2).any(|w| w[0].path == w[1].path) {
        let path = files.iter().find(|f| dirs.contains(f.path)).map_or_else(String::new, |f| f.path.to_string());
        return Err(FatError::BadPath { path });
    }
    Ok(dirs)
}

/// The FAT type and the number of data clusters for these files and directories.
fn geometry(files: &[&FatFile<'_>], dirs: &BTreeSet<String>) -> (FatType, u64) {
    let data: u64 = files.iter().map(|f| (f.bytes.len() as u64).div_ceil(CLUSTER)).sum();
    // A directory entry with its long name is at most 21 slots of 32 bytes; each directory also
    // holds `.` and `..`. Counted for every file and directory in one, generously.
    let entries = (files.len() + dirs.len()) as u64 * 21 * 32 + dirs.len() as u64 * 64;
    let needed = data + entries.div_ceil(CLUSTER) + dirs.len() as u64 + 16;
    if needed + EDGE < FAT16_MIN_CLUSTERS {
        (FatType::Fat12, needed)
    } else if needed + EDGE < FAT32_MIN_CLUSTERS {
        (FatType::Fat16, needed.max(FAT16_MIN_CLUSTERS + EDGE))
    } else {
        (FatType::Fat32, needed.max(FAT32_MIN_CLUSTERS + EDGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const LABEL: [u8; 11] = *b"TEST       ";

    fn read_back(image: Vec<u8>, path: &str) -> Vec<u8> {
        let fs = FileSystem::new(Cursor::new(image), FsOptions::new()).unwrap();
        let mut out = Vec::new();
        fs.root_dir().open_file(path).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn files_read_back_and_the_bytes_are_the_same_each_time() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let files = [
            FatFile { path: "EFI/BOOT/BOOTX64.EFI", bytes: b"shim" },
            FatFile { path: "artifacts/tiny-live/0123456789ab/initrd.img", bytes: &big },
            FatFile { path: "grub/grub.cfg", bytes: b"set timeout=0\n" },
        ];
        let a = build(&files, LABEL, 7).unwrap();
        assert_eq!(a, build(&files, LABEL, 7).unwrap());
        assert_ne!(a, build(&files, LABEL, 8).unwrap(), "the volume id is in the image");
        assert_eq!(read_back(a.clone(), "artifacts/tiny-live/0123456789ab/initrd.img"), big);
        assert_eq!(read_back(a.clone(), "EFI/BOOT/BOOTX64.EFI"), b"shim");
        assert_eq!(read_back(a, "grub/grub.cfg"), b"set timeout=0\n");
    }

    #[test]
    fn order_of_the_list_does_not_matter() {
        let one = [FatFile { path: "a/x", bytes: b"1" }, FatFile { path: "b", bytes: b"2" }];
        let two = [FatFile { path: "b", bytes: b"2" }, FatFile { path: "a/x", bytes: b"1" }];
        assert_eq!(build(&one, LABEL, 1).unwrap(), build(&two, LABEL, 1).unwrap());
    }

    #[test]
    fn the_type_follows_the_cluster_count_and_the_volume_fits_its_files() {
        for (size, want) in [(1 << 20, FatType::Fat12), (40 << 20, FatType::Fat16)] {
            let bytes = vec![0x5a; size];
            let image = build(&[FatFile { path: "k", bytes: &bytes }], LABEL, 1).unwrap();
            assert!(image.len() < size + size / 16 + (1 << 20), "{} bytes for {size}", image.len());
            let fs = FileSystem::new(Cursor::new(image), FsOptions::new()).unwrap();
            assert_eq!(fs.fat_type(), want);
        }
    }

    #[test]
    fn paths_that_cannot_be_files_are_refused() {
        for bad in [&["a//b"][..], &["/a"], &["a/.."], &["a", "a/b"], &["a", "a"]] {
            let files: Vec<FatFile<'_>> = bad.iter().map(|p| FatFile { path: p, bytes: b"" }).collect();
            assert!(matches!(build(&files, LABEL, 1), Err(FatError::BadPath { .. })), "{bad:?}");
        }
    }
}
