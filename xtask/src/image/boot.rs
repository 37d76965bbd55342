//! What boots the appliance: Debian's kernel with the modules the image needs, the initramfs
//! (busybox, the daemon, the modules), and GRUB for BIOS (a core image for the BIOS boot
//! partition) and for UEFI (`BOOTX64.EFI` on the ESP), both reading one `grub.cfg` from the ESP.

use std::fmt::Write as _;
use std::fs as stdfs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use xshell::{cmd, Shell};

use super::identity::{self, Ids};
use super::inputs::{single_dir, Config, Pinned};
use super::recipe::{self, Recipe};
use super::{initramfs, kmod, toc, Daemon};
use crate::human_size;

/// NIC, storage and platform drivers every image carries, besides the recipe's own.
const BASE_MODULES: &[&str] = &[
    // The power button, for busybox acpid.
    "evdev",
    "button",
    // The data partition's file system and the checksum it uses.
    "crc32c_generic",
    "crc32c_intel",
    "ext4",
    // Disks: SATA and IDE, NVMe, virtio, USB sticks, SD cards.
    "sd_mod",
    "ahci",
    "ata_piix",
    "ata_generic",
    "nvme",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    // USB keyboards for the console shell.
    "usbhid",
    "hid_generic",
];

/// GRUB modules built into both core images; `normal` reads `grub.cfg` from the ESP.
const GRUB_COMMON: &[&str] =
    &["part_gpt", "fat", "normal", "linux", "echo", "test", "terminal", "sleep", "halt", "reboot", "ls", "cat"];
const GRUB_PC: &[&str] = &["biosdisk", "serial"];
const GRUB_EFI: &[&str] = &["efi_gop"];

/// The kernel and the modules the image loads.
pub struct Kernel {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<version>` of the extracted package.
    pub modules_root: PathBuf,
    pub modules: Vec<kmod::Module>,
}

/// What the initramfs step made.
pub struct Boot {
    pub kernel: Kernel,
    pub ids: Ids,
    /// IMAGE-INFO: what is inside (also in the table of contents).
    pub contents: String,
    pub initrd: Vec<u8>,
}

/// GRUB's BIOS boot code: `boot.img` for the MBR and the core image for the BIOS boot partition.
pub struct BiosBoot {
    pub boot_img: Vec<u8>,
    pub core: Vec<u8>,
}

/// Picks the kernel modules, derives the image's identity, writes IMAGE-INFO into the data
/// partition's tree and builds the initramfs.
pub fn initramfs(
    recipe_path: &Path,
    config: &Config,
    pinned: &Pinned,
    daemon: &Daemon,
    store: &Path,
    data: &Path,
) -> Result<Boot> {
    let recipe = &config.recipe;
    let kernel = kernel(recipe, pinned)?;
    let seed = identity::seed(&identity::Inputs {
        recipe_path,
        lock: &pinned.lock,
        epoch: config.epoch,
        daemon: &daemon.binary,
        libraries: &daemon.libraries,
        data,
        modules: &kernel.modules,
    })?;
    let ids = Ids::derive(&seed);
    let settings = initramfs::Settings {
        recipe,
        image_id: &ids.image_id,
        kernel_version: &kernel.version,
        data_uuid: &ids.data_uuid,
        config_address: config.catalog.settings().address,
        http_port: config.catalog.settings().http_port,
        has_overlay: config.overlay.is_some(),
    };
    let contents = toc::image_info(&toc::Info {
        recipe,
        catalog: &config.catalog,
        store,
        kernel_pin: &pinned.kernel_pin,
        kernel_version: &kernel.version,
        modules: &kernel.modules,
        bootloaders: &pinned.bootloaders,
        ids: &ids,
        daemon_line: &daemon.line()?,
    })?;
    stdfs::write(data.join("IMAGE-INFO"), &contents)?;
    let initrd = initramfs::build(&initramfs::Inputs {
        settings,
        busybox: &pinned.busybox.join("bin/busybox"),
        daemon: &daemon.binary,
        libraries: &daemon.libraries,
        modules_root: &kernel.modules_root,
        modules: &kernel.modules,
        build_info: &contents,
    })?;
    println!("  {} modules, initramfs {}", kernel.modules.len(), human_size(initrd.len() as u64));
    Ok(Boot { kernel, ids, contents, initrd })
}

/// The pinned kernel and the closure of the modules every image needs plus the recipe's.
fn kernel(recipe: &Recipe, pinned: &Pinned) -> Result<Kernel> {
    let modules_root = single_dir(&pinned.kernel.join("lib/modules"))?;
    let version = modules_root.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let vmlinuz = pinned.kernel.join(format!("boot/vmlinuz-{version}"));
    ensure!(vmlinuz.is_file(), "{} has no /boot/vmlinuz-{version}", pinned.kernel_pin.spec());
    let index = kmod::Index::scan(&modules_root)?;
    let wanted: Vec<String> = BASE_MODULES
        .iter()
        .chain(recipe::NIC_MODULES.iter())
        .map(|s| s.to_string())
        .chain(recipe.modules.iter().cloned())
        .collect();
    let modules =
        index.closure(&wanted).with_context(|| format!("kernel {} ({})", version, pinned.kernel_pin.spec()))?;
    Ok(Kernel { version, vmlinuz, modules_root, modules })
}

/// Builds both GRUBs and fills the ESP's tree (`EFI/BOOT/BOOTX64.EFI`, `boot/grub/grub.cfg`,
/// `boot/vmlinuz`, `boot/initrd.img`); returns GRUB's BIOS boot code.
pub fn esp(sh: &Shell, recipe: &Recipe, pinned: &Pinned, boot: &Boot, work: &Path, esp: &Path) -> Result<BiosBoot> {
    let bios = grub(sh, &pinned.grub_pc, &pinned.grub_efi, work, esp)?;
    stdfs::write(esp.join("boot/grub/grub.cfg"), grub_cfg(recipe, &boot.ids))?;
    stdfs::copy(&boot.kernel.vmlinuz, esp.join("boot/vmlinuz"))?;
    stdfs::write(esp.join("boot/initrd.img"), &boot.initrd)?;
    Ok(bios)
}

/// GRUB for a disk laid out as `layout` plans it (GPT; the ESP is partition 2), from the
/// extracted `grub-pc-bin` and `grub-efi-amd64-bin` packages: `EFI/BOOT/BOOTX64.EFI` in the
/// ESP's tree `esp` and, for BIOS, the boot code to install; both read `/boot/grub/grub.cfg`
/// from the ESP (`boot/grub/` is created for it). Also the demo disk's (`demo_disk`).
pub fn grub(sh: &Shell, grub_pc: &Path, grub_efi: &Path, work: &Path, esp: &Path) -> Result<BiosBoot> {
    let grub_pc_dir = grub_pc.join("usr/lib/grub/i386-pc");
    let grub_efi_dir = grub_efi.join("usr/lib/grub/x86_64-efi");
    let core_img = work.join("core.img");
    grub_mkimage(sh, &grub_pc_dir, "i386-pc", "(,gpt2)/boot/grub", &[GRUB_COMMON, GRUB_PC].concat(), &core_img)?;
    stdfs::create_dir_all(esp.join("EFI/BOOT"))?;
    stdfs::create_dir_all(esp.join("boot/grub"))?;
    grub_mkimage(
        sh,
        &grub_efi_dir,
        "x86_64-efi",
        "/boot/grub",
        &[GRUB_COMMON, GRUB_EFI].concat(),
        &esp.join("EFI/BOOT/BOOTX64.EFI"),
    )?;
    Ok(BiosBoot { boot_img: stdfs::read(grub_pc_dir.join("boot.img"))?, core: stdfs::read(&core_img)? })
}

fn grub_mkimage(sh: &Shell, module_dir: &Path, format: &str, prefix: &str, modules: &[&str], out: &Path) -> Result<()> {
    ensure!(module_dir.join("moddep.lst").is_file(), "no GRUB modules in {}", module_dir.display());
    for m in modules {
        ensure!(module_dir.join(format!("{m}.mod")).is_file(), "GRUB {format} has no module {m}");
    }
    cmd!(sh, "grub-mkimage -d {module_dir} -O {format} -p {prefix} -o {out} {modules...}")
        .quiet()
        .run()
        .with_context(|| format!("grub-mkimage failed to build the {format} image"))
}

fn grub_cfg(recipe: &Recipe, ids: &Ids) -> String {
    let mut cmdline = format!("{} panic=10 quiet appliance.image={}", recipe.console_args(), recipe.name);
    if !recipe.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&recipe.cmdline);
    }
    let mut out = format!(
        "# GRUB configuration of the appliance image {} (id {}), for BIOS and UEFI.\n\
         # Written by `cargo xtask image`; the kernel and initramfs are next to it in /boot.\n\
         set timeout={}\nset default=0\n",
        recipe.name, ids.image_id, recipe.boot_menu_timeout
    );
    if let Some(unit) = recipe.serial.as_deref().and_then(|s| s.strip_prefix("ttyS")) {
        // Under UEFI the firmware's console usually reaches the serial port already.
        let _ = write!(
            out,
            "if [ \"$grub_platform\" = pc ]; then\n  serial --unit={unit} --speed={}\n  terminal_input console serial\n  terminal_output console serial\nfi\n",
            recipe.baud
        );
    }
    for (title, extra) in [("", ""), (" (rescue shell, daemon not started)", " appliance.rescue=1")] {
        let _ = write!(
            out,
            "menuentry \"Network-boot appliance {}{title}\" {{\n  echo \"Loading the appliance ({}) ...\"\n  linux /boot/vmlinuz {cmdline}{extra}\n  initrd /boot/initrd.img\n}}\n",
            recipe.name, ids.image_id
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project_root;

    #[test]
    fn grub_config_boots_both_entries_with_the_recipe_consoles() {
        let recipe = recipe::parse(
            &project_root().join("images/x.yaml"),
            "config: ../profiles\nnetwork: { address: 10.77.0.1/24 }\nconsole: { serial: ttyS1, baud: 57600 }\nkernel: { cmdline: \"loglevel=7\" }\n",
        )
        .unwrap();
        let cfg = grub_cfg(&recipe, &Ids::derive(&[7u8; 32]));
        assert!(cfg.contains("serial --unit=1 --speed=57600"), "{cfg}");
        assert!(
            cfg.contains(
                "linux /boot/vmlinuz console=tty0 console=ttyS1,57600n8 panic=10 quiet appliance.image=x loglevel=7\n"
            ),
            "{cfg}"
        );
        assert!(cfg.contains("appliance.rescue=1"), "{cfg}");
        assert_eq!(cfg.matches("initrd /boot/initrd.img").count(), 2);
    }
}
