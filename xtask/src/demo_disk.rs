//! The demo disk image the deploy profile (`profiles/deploy.yaml`) writes to a machine's
//! disk: a small, reproducible, bootable disk built with the appliance image's own steps
//! (`image::boot::grub`, `image::layout`, `image::disk`), from pinned Debian packages.
//!
//! | # | partition | contents |
//! |---|---|---|
//! | 1 | BIOS boot | GRUB i386-pc core image (its boot code in sector 0) |
//! | 2 | EFI system (FAT32) | `EFI/BOOT/BOOTX64.EFI`, `boot/grub/grub.cfg`, Debian's cloud kernel, a busybox initrd |
//! | 3 | `demo-data` (ext4) | `DEMO-DISK`, the build's id |
//!
//! It boots under SeaBIOS and OVMF; its `/init` prints `DEMO-DISK-OK demo.disk=<id> …` (the
//! kernel command line) on the serial console and idles, so a test sees that a machine booted
//! from its own disk, and which build of it.
//!
//! The deploy profile names it as a `url:` source on a host that can never resolve
//! ([`URL`], under RFC 6761's `.invalid`), pinned by its sha256: `cargo xtask fetch` builds it
//! here instead of downloading it and puts it in the blob cache, so the example config checks
//! and publishes on a fresh clone without any image server. Same inputs, same bytes: every
//! time is [`EPOCH`], identifiers derive from the inputs, and a test builds it twice and
//! compares the result with the profile's pin.

use std::fs as stdfs;
use std::path::Path;

use anyhow::{Context, Result};
use appliance_core::cpio::{self, Node};
use sha2::{Digest as _, Sha256};
use xshell::Shell;

use crate::debian::{self, Lock};
use crate::image::{boot, disk, identity::Ids, inputs};
use crate::project_root;

/// Where the deploy profile says the image comes from; `cargo xtask fetch` builds it instead.
pub const URL: &str = "http://demo-disk.invalid/appliance-demo-disk.img";
/// The time of every file on the disk (2023-06-10, the release of Debian 12).
pub const EPOCH: u64 = 1_686_355_200;
/// The data partition's GPT name and file system label.
const DATA_NAME: &str = "demo-data";

/// The demo system's `/init`: the marker with the kernel command line, then idle (a test
/// power-cycles the machine from outside).
const INIT: &str = "#!/bin/sh
# /init of the appliance's demo disk: prove that the machine booted from its own disk.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo \"DEMO-DISK-OK $(/bin/busybox cat /proc/cmdline)\"
echo 'This is the demo disk the appliance deploy profile wrote. Nothing else runs here.'
while :; do /bin/busybox sleep 3600; done
";

/// The pinned kernel: Debian's cloud kernel, as the deploy profile boots (its drivers are the
/// virtual machine's, and the demo system needs none).
fn kernel_pin(lock: &Lock) -> Result<&debian::Pin> {
    lock.pins()
        .iter()
        .find(|p| p.arch == "amd64" && p.name.starts_with("linux-image-") && p.name.ends_with("-cloud-amd64"))
        .with_context(|| format!("no cloud kernel (linux-image-*-cloud-amd64) is pinned in {}", debian::LOCK_PATH))
}

fn grub_cfg(id: &str) -> String {
    format!(
        "# The appliance's demo disk (build {id}), for BIOS and UEFI.\n\
         set timeout=0\nset default=0\n\
         if [ \"$grub_platform\" = pc ]; then\n  serial --unit=0 --speed=115200\n  terminal_input console serial\n  terminal_output console serial\nfi\n\
         menuentry \"Appliance demo disk {id}\" {{\n  echo \"Booting the demo disk {id} from the local disk\"\n  \
         linux /boot/vmlinuz console=ttyS0 quiet panic=10 demo.disk={id}\n  initrd /boot/initrd.img\n}}\n"
    )
}

/// Builds the demo disk as `out` (a raw image). Returns its sha256 in hex.
pub fn build(sh: &Shell, lock: &Lock, out: &Path) -> Result<String> {
    let kernel = kernel_pin(lock)?;
    let kernel_tree = inputs::extracted(sh, lock, &kernel.name, "amd64")?;
    let busybox = inputs::extracted(sh, lock, "busybox-static", "amd64")?;
    let grub_pc = inputs::extracted(sh, lock, "grub-pc-bin", "amd64")?;
    let grub_efi = inputs::extracted(sh, lock, "grub-efi-amd64-bin", "amd64")?;
    let vmlinuz = inputs::single_dir(&kernel_tree.join("lib/modules")).map(|m| {
        kernel_tree.join("boot").join(format!("vmlinuz-{}", m.file_name().unwrap_or_default().to_string_lossy()))
    })?;

    let scratch = project_root().join("target/cache");
    stdfs::create_dir_all(&scratch)?;
    let work = tempfile::Builder::new().prefix("demo-disk-").tempdir_in(&scratch)?;
    let (esp, data) = (work.path().join("esp"), work.path().join("data"));
    stdfs::create_dir_all(&data)?;
    let bios = boot::grub(sh, &grub_pc, &grub_efi, work.path(), &esp)?;
    stdfs::copy(&vmlinuz, esp.join("boot/vmlinuz")).with_context(|| format!("copying {}", vmlinuz.display()))?;
    let initrd = cpio::gzip(&cpio::archive([
        ("init".to_string(), 0o755, Node::File(INIT.as_bytes().to_vec())),
        ("bin/busybox".to_string(), 0o755, Node::File(stdfs::read(busybox.join("bin/busybox"))?)),
        ("bin/sh".to_string(), 0o777, Node::Symlink("busybox".into())),
        ("dev/console".to_string(), 0o600, Node::CharDevice { major: 5, minor: 1 }),
    ]));
    stdfs::write(esp.join("boot/initrd.img"), &initrd)?;

    // The identifiers (and so every byte) derive from what goes on the disk.
    let mut seed = Sha256::new();
    for part in [
        b"appliance-demo-disk/1".as_slice(),
        &stdfs::read(&vmlinuz)?,
        &initrd,
        &bios.boot_img,
        &bios.core,
        &stdfs::read(esp.join("EFI/BOOT/BOOTX64.EFI"))?,
    ] {
        seed.update((part.len() as u64).to_le_bytes());
        seed.update(part);
    }
    let ids = Ids::derive(&seed.finalize());
    stdfs::write(esp.join("boot/grub/grub.cfg"), grub_cfg(&ids.image_id))?;
    stdfs::write(data.join("DEMO-DISK"), format!("appliance demo disk, build {}\n", ids.image_id))?;

    let plan = crate::image::plan_layout(0, &bios, &esp, &data)?;
    let esp_img = disk::esp_filesystem(sh, &plan, &ids, EPOCH, &esp, work.path())?;
    let data_img = disk::data_filesystem(sh, &plan, &ids, EPOCH, (&data, DATA_NAME), work.path())?;
    if let Some(dir) = out.parent() {
        stdfs::create_dir_all(dir)?;
    }
    let parts = disk::Parts {
        layout: &plan,
        ids: &ids,
        bios: &bios,
        esp_img: &esp_img,
        data_img: &data_img,
        data_name: DATA_NAME,
    };
    disk::assemble(&parts, out)?;
    debian::sha256_file(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layout;

    /// The sha256 `profiles/deploy.yaml` pins for the image.
    fn pinned() -> String {
        let text = stdfs::read_to_string(project_root().join("profiles/deploy.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let image = &doc["arch"]["x86_64"]["image"];
        assert_eq!(image["url"].as_str(), Some(URL), "the deploy profile names the demo disk's URL");
        image["sha256"].as_str().unwrap().to_string()
    }

    /// Two builds give the same bytes, and those are the ones the deploy profile pins: a change
    /// to the demo disk (or to a package it is made of) must update `profiles/deploy.yaml`.
    #[test]
    fn the_demo_disk_is_reproducible_and_pinned_by_the_deploy_profile() {
        let sh = Shell::new().unwrap();
        let lock = Lock::load().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        let sha_a = build(&sh, &lock, &a).unwrap();
        let sha_b = build(&sh, &lock, &b).unwrap();
        assert_eq!(sha_a, sha_b, "two builds differ");
        assert_eq!(sha_a, pinned(), "profiles/deploy.yaml pins another demo disk: update its image sha256");
        let partitions = crate::image::gpt::read(&stdfs::read(&a).unwrap()).unwrap();
        let names: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["BIOS boot", "EFI system", DATA_NAME]);
        assert_eq!(stdfs::metadata(&a).unwrap().len() % layout::ALIGN, 0);
    }
}
