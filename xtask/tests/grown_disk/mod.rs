//! The image's data partition on a disk larger than the image: the boot log's growth line,
//! the daemon's free room, and the partition table left on the disk.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::qemu::Vm;

use super::{ok, EXTRA_DISK_MIB};

/// The boot log's `data partition ... grown from A MiB to B MiB` line after `from` (a later
/// boot's: `not grown: ... already fills its disk`; a failure's: `was not grown: why`), and the
/// daemon's free room on its state file system after it.
pub fn check_growth(appliance: &mut Vm, from: usize, first_boot: bool) -> usize {
    let (_, end) = ok(appliance.wait_for(" grown", from, Duration::from_secs(150)));
    let (_, end) = ok(appliance.wait_for("\n", end, Duration::from_secs(10)));
    let text = appliance.text();
    let line = text[from..end].lines().rev().find(|l| l.contains(" grown")).unwrap_or_default();
    let mib = |after: &str| -> u64 {
        line.split(after).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    if first_boot {
        let (before, after) = (mib("grown from "), mib(" MiB to "));
        assert!(
            after >= before + EXTRA_DISK_MIB - 1,
            "the data partition did not grow by the disk's extra {EXTRA_DISK_MIB} MiB: {line:?}; {}",
            appliance.tail()
        );
        eprintln!("  {}", line.trim());
    } else {
        assert!(line.contains("already fills its disk"), "a second boot: {line:?}; {}", appliance.tail());
    }
    let (_, end) = ok(appliance.wait_for("state file system", end, Duration::from_secs(150)));
    let (_, end) = ok(appliance.wait_for("\n", end, Duration::from_secs(10)));
    let text = appliance.text();
    let free: u64 = text[..end]
        .rsplit("free_mib=")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(free >= EXTRA_DISK_MIB - 16, "the daemon's state file system has {free} MiB free; {}", appliance.tail());
    end
}

/// The grown disk's partition table, read back once the VM is off: the primary header names
/// a backup header in the disk's last sector, which is there, names the primary, and whose
/// entry array matches its CRC (the backup is written before the primary at boot).
pub fn check_backup_gpt(disk: &Path) {
    let raw = disk.with_extension("raw");
    let status = Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(disk).arg(&raw).status();
    assert!(status.expect("qemu-img runs").success(), "qemu-img convert failed");
    let file = std::fs::File::open(&raw).unwrap();
    let sectors = file.metadata().unwrap().len() / 512;
    let sector = |lba: u64| {
        let mut b = vec![0u8; 512];
        file.read_exact_at(&mut b, lba * 512).unwrap();
        b
    };
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let (primary, backup) = (sector(1), sector(sectors - 1));
    assert_eq!(&primary[..8], b"EFI PART", "no primary GPT header");
    assert_eq!(u64_at(&primary, 32), sectors - 1, "the primary GPT does not name the disk's last sector");
    assert_eq!(&backup[..8], b"EFI PART", "no backup GPT header in the disk's last sector");
    assert_eq!((u64_at(&backup, 24), u64_at(&backup, 32)), (sectors - 1, 1), "the backup GPT header's LBAs");
    let mut entries = vec![0u8; (u32_at(&backup, 80) * u32_at(&backup, 84)) as usize];
    file.read_exact_at(&mut entries, u64_at(&backup, 72) * 512).unwrap();
    assert_eq!(crc32fast::hash(&entries), u32_at(&backup, 88), "the backup GPT's entries do not match its CRC");
    assert_eq!(entries, {
        let mut e = vec![0u8; entries.len()];
        file.read_exact_at(&mut e, u64_at(&primary, 72) * 512).unwrap();
        e
    });
    drop(file);
    let _ = std::fs::remove_file(&raw);
}
