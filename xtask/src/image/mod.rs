//! `cargo xtask image`: one bootable, flashable, reproducible disk image from a recipe
//! (`images/<name>.yaml`) and the config it names.
//!
//! Layout (GPT, 512-byte sectors, 1 MiB aligned):
//!
//! | # | partition        | contents                                                         |
//! |---|------------------|------------------------------------------------------------------|
//! | 1 | BIOS boot, 1 MiB | GRUB i386-pc core image (its MBR code is in sector 0)            |
//! | 2 | EFI system, FAT32| `EFI/BOOT/BOOTX64.EFI`, `boot/grub/grub.cfg`, `boot/vmlinuz`, `boot/initrd.img` |
//! | 3 | appliance-data, ext4 | `config/`, `bootloaders/`, `state/artifacts/` (pre-published), `overlay.yaml`, leases at run time |
//!
//! Both GRUBs read the same `grub.cfg` from the ESP; the kernel is Debian's generic amd64
//! kernel, the initramfs holds busybox, the daemon and the modules (see `initramfs.rs`).
//! Everything is built without root, mounts or loop devices.

pub mod bios;
pub mod fs;
pub mod gpt;
pub mod host;
pub mod initramfs;
pub mod kmod;
pub mod qemu;
pub mod recipe;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs as stdfs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use appliance::catalog::Catalog;
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::debian::{self, Lock};
use crate::{human_size, project_root};
use gpt::{Guid, Partition, Table, SECTOR};
use recipe::{Ipv4, Recipe};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The image recipe.
    #[arg(long, value_name = "FILE", default_value = "images/default.yaml")]
    pub recipe: PathBuf,

    /// Output directory for <name>.img, <name>.qcow2 and <name>.toc [default: target/images].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Do not write the qcow2 copy.
    #[arg(long)]
    pub no_qcow2: bool,

    /// Which build of the daemon to bundle (dev: the stripped debug build, for fast tests).
    #[arg(long, value_enum, default_value = "release")]
    pub daemon_profile: host::DaemonProfile,
}

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

const ESP_LABEL: &str = "APPLIANCE";
/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is just under 34 MiB.
const ESP_MIN_MIB: u64 = 34;
const MIB: u64 = 1024 * 1024;

/// What a build produced.
pub struct Output {
    pub image: PathBuf,
}

/// `cargo xtask image`: prepares the host, then builds.
pub fn run(args: &Args) -> Result<()> {
    crate::host::prepare(crate::host::Task::Image, crate::host::Pins::Download)?;
    build(args).map(|_| ())
}

/// A relative input path: from the current directory if it exists there, else from the
/// workspace root (so `cargo xtask image` works from any directory of the checkout).
fn input_path(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        p.to_path_buf()
    } else {
        project_root().join(p)
    }
}

struct Steps {
    started: Instant,
    list: Vec<(String, Duration)>,
    current: Option<(String, Instant)>,
}

impl Steps {
    fn start(&mut self, name: &str) {
        self.finish();
        println!("==> {name}");
        self.current = Some((name.to_owned(), Instant::now()));
    }

    fn finish(&mut self) {
        if let Some((name, at)) = self.current.take() {
            self.list.push((name, at.elapsed()));
        }
    }
}

/// Builds the image on a host already prepared (`cargo xtask vm` builds before it boots).
pub fn build(args: &Args) -> Result<Output> {
    let mut steps = Steps { started: Instant::now(), list: Vec::new(), current: None };
    let sh = Shell::new().context("failed to create a shell")?;
    let recipe_path = input_path(&args.recipe);
    let out_dir = args.out.clone().unwrap_or_else(|| project_root().join("target/images"));

    steps.start("recipe and config");
    let recipe = recipe::load(&recipe_path)
        .map_err(|e| anyhow::anyhow!("{e}\n{} error(s) in the recipe {}", e.0.len(), recipe_path.display()))?;
    // The config as it is in the repository: errors name the operator's files.
    appliance::config::load(&recipe.config, recipe.overlay.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} error(s) in the config {} (`appliance check` says the same)",
            e.0.len(),
            recipe.config.display()
        )
    })?;
    let epoch = source_date_epoch(&sh);
    println!(
        "  recipe {} ({}), config {}, SOURCE_DATE_EPOCH={epoch}",
        recipe.name,
        recipe_path.display(),
        recipe.config.display()
    );

    let scratch = project_root().join("target/cache");
    stdfs::create_dir_all(&scratch)?;
    let work_dir =
        tempfile::Builder::new().prefix("image-").tempdir_in(&scratch).context("failed to create a work directory")?;
    let work = work_dir.path();
    let data = work.join("data");
    let esp = work.join("esp");

    // The config as the appliance gets it, with the recipe's DHCP overrides written in.
    let config_dir = data.join("config");
    copy_tree(&recipe.config, &config_dir)?;
    let overridden = apply_dhcp_overrides(&recipe, &config_dir)?;
    let overlay = match &recipe.overlay {
        Some(o) => {
            let dest = data.join("overlay.yaml");
            stdfs::copy(o, &dest).with_context(|| format!("failed to copy {}", o.display()))?;
            Some(dest)
        }
        None => None,
    };
    let catalog = appliance::config::load(&config_dir, overlay.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{} error(s) in the config after applying the recipe's dhcp settings ({})",
            e.0.len(),
            overridden.join(", ")
        )
    })?;
    recipe.check_against(&catalog).map_err(|e| anyhow::anyhow!("{e}\n{} error(s) in the recipe", e.0.len()))?;

    steps.start("pinned inputs (cargo xtask fetch)");
    crate::fetch::fetch(&crate::fetch::Args {
        out: None,
        update_lock: false,
        all_packages: false,
        config: recipe.config.canonicalize()?,
        blobs: None,
    })?;
    let lock = Lock::load()?;
    let kernel_pin = lock
        .pins()
        .iter()
        .find(|p| {
            p.arch == "amd64"
                && p.name.starts_with("linux-image-")
                && p.name.ends_with("-amd64")
                && !p.name.contains("cloud")
        })
        .cloned()
        .with_context(|| {
            format!(
                "no generic amd64 kernel (linux-image-<version>-amd64, from linux-image-amd64) is pinned in {}; \
                 run `cargo xtask fetch --update-lock`",
                debian::LOCK_PATH
            )
        })?;
    println!("packages for the appliance itself:");
    let kernel_tree = extracted(&sh, &lock, &kernel_pin.name, "amd64")?;
    let busybox_tree = extracted(&sh, &lock, "busybox-static", "amd64")?;
    let grub_pc_tree = extracted(&sh, &lock, "grub-pc-bin", "amd64")?;
    let grub_efi_tree = extracted(&sh, &lock, "grub-efi-amd64-bin", "amd64")?;

    let bootloaders_dir = data.join("bootloaders");
    copy_bootloaders(&recipe.bootloaders, &crate::fetch::default_out_dir(), &bootloaders_dir)?;

    steps.start(&format!("daemon (cargo build, {} profile)", format!("{:?}", args.daemon_profile).to_lowercase()));
    let daemon = host::build_daemon(&sh, args.daemon_profile, work)?;
    let libraries = host::shared_libraries(&sh, &daemon)?;
    println!(
        "  {} ({}), with {}",
        daemon.display(),
        human_size(debian::file_size(&daemon)?),
        libraries.iter().map(|l| l.path.as_str()).collect::<Vec<_>>().join(", ")
    );

    steps.start("artifact store (appliance::artifacts::publish)");
    let store = data.join("state/artifacts");
    stdfs::create_dir_all(&store)?;
    let report = appliance::artifacts::publish(&catalog, &store, &crate::blobs::default_dir())
        .map_err(|e| anyhow::anyhow!("publishing the profiles' artifacts failed: {e}"))?;
    println!("  {} artifact versions in the store", report.published.len() + report.existing.len());

    steps.start("kernel modules and initramfs");
    let modules_root = single_dir(&kernel_tree.join("lib/modules"))?;
    let kernel_version = modules_root.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let vmlinuz = kernel_tree.join(format!("boot/vmlinuz-{kernel_version}"));
    ensure!(vmlinuz.is_file(), "{} has no /boot/vmlinuz-{kernel_version}", kernel_pin.spec());
    let index = kmod::Index::scan(&modules_root)?;
    let wanted: Vec<String> = BASE_MODULES
        .iter()
        .chain(recipe::NIC_MODULES.iter())
        .map(|s| s.to_string())
        .chain(recipe.modules.iter().cloned())
        .collect();
    let modules =
        index.closure(&wanted).with_context(|| format!("kernel {} ({})", kernel_version, kernel_pin.spec()))?;

    let seed = build_seed(&recipe_path, &lock, epoch, &daemon, &libraries, &data, &modules)?;
    let ids = Ids::derive(&seed);
    let settings = initramfs::Settings {
        recipe: &recipe,
        image_id: &ids.image_id,
        kernel_version: &kernel_version,
        data_uuid: &ids.data_uuid,
        config_address: catalog.settings.address,
        http_port: catalog.settings.http_port,
        has_overlay: overlay.is_some(),
    };
    let daemon_line = format!(
        "daemon: appliance {} ({} build, stripped, {}) with {}",
        env!("CARGO_PKG_VERSION"),
        format!("{:?}", args.daemon_profile).to_lowercase(),
        human_size(debian::file_size(&daemon)?),
        libraries.iter().map(|l| l.path.rsplit('/').next().unwrap_or_default()).collect::<Vec<_>>().join(" ")
    );
    let contents = contents_text(
        &recipe,
        &catalog,
        &store,
        &kernel_pin,
        &kernel_version,
        &modules,
        &bootloaders_dir,
        &ids,
        &daemon_line,
    )?;
    stdfs::write(data.join("IMAGE-INFO"), &contents)?;
    let initrd = initramfs::build(&initramfs::Inputs {
        settings,
        busybox: &busybox_tree.join("bin/busybox"),
        daemon: &daemon,
        libraries: &libraries,
        modules_root: &modules_root,
        modules: &modules,
        build_info: &contents,
    })?;
    println!("  {} modules, initramfs {}", modules.len(), human_size(initrd.len() as u64));

    steps.start("GRUB (BIOS and UEFI) and the ESP");
    let grub_pc_dir = grub_pc_tree.join("usr/lib/grub/i386-pc");
    let grub_efi_dir = grub_efi_tree.join("usr/lib/grub/x86_64-efi");
    let core_img = work.join("core.img");
    grub_mkimage(&sh, &grub_pc_dir, "i386-pc", "(,gpt2)/boot/grub", &[GRUB_COMMON, GRUB_PC].concat(), &core_img)?;
    stdfs::create_dir_all(esp.join("EFI/BOOT"))?;
    stdfs::create_dir_all(esp.join("boot/grub"))?;
    grub_mkimage(
        &sh,
        &grub_efi_dir,
        "x86_64-efi",
        "/boot/grub",
        &[GRUB_COMMON, GRUB_EFI].concat(),
        &esp.join("EFI/BOOT/BOOTX64.EFI"),
    )?;
    stdfs::write(esp.join("boot/grub/grub.cfg"), grub_cfg(&recipe, &ids))?;
    stdfs::copy(&vmlinuz, esp.join("boot/vmlinuz"))?;
    stdfs::write(esp.join("boot/initrd.img"), &initrd)?;

    steps.start("file systems and disk image");
    let esp_entries = fs::walk(&esp)?;
    let esp_mib = (fs::allocated(&esp_entries, 512) + 2 * MIB).div_ceil(MIB).max(ESP_MIN_MIB);
    let data_entries = fs::walk(&data)?;
    let data_files = fs::allocated_unique(&data_entries, 4096)?;
    // ext4 metadata: a 4 MiB journal, inode tables, bitmaps and group descriptors (about 1%).
    let inode_bytes = (data_entries.len() as u64 + 64).max(1024) * 256;
    let data_mib = (data_files + data_files / 100 + inode_bytes + 6 * MIB).div_ceil(MIB) + u64::from(recipe.state_mib);

    let bios_start = MIB / SECTOR;
    let esp_start = 2 * MIB / SECTOR;
    let data_start = esp_start + esp_mib * MIB / SECTOR;
    let data_end = data_start + data_mib * MIB / SECTOR; // exclusive
    let total_sectors = data_end + MIB / SECTOR;
    let table = Table {
        disk_guid: ids.disk,
        total_sectors,
        partitions: vec![
            Partition {
                type_guid: Guid::parse(gpt::BIOS_BOOT)?,
                guid: ids.bios_part,
                name: "BIOS boot".into(),
                first_lba: bios_start,
                last_lba: esp_start - 1,
                attributes: 0,
            },
            Partition {
                type_guid: Guid::parse(gpt::EFI_SYSTEM)?,
                guid: ids.esp_part,
                name: "EFI system".into(),
                first_lba: esp_start,
                last_lba: data_start - 1,
                attributes: 0,
            },
            Partition {
                type_guid: Guid::parse(gpt::LINUX_DATA)?,
                guid: ids.data_part,
                name: initramfs::DATA_PARTNAME.into(),
                first_lba: data_start,
                last_lba: data_end - 1,
                attributes: 0,
            },
        ],
    };
    let esp_img = work.join("esp.img");
    fs::Fat {
        root: &esp,
        image: &esp_img,
        sectors: esp_mib * MIB / SECTOR,
        hidden: esp_start,
        serial: ids.esp_serial,
        label: ESP_LABEL,
        epoch,
    }
    .build(&sh)?;
    let data_img = work.join("data.img");
    fs::Ext4 {
        root: &data,
        image: &data_img,
        bytes: data_mib * MIB,
        label: initramfs::DATA_PARTNAME,
        uuid: ids.data_uuid.clone(),
        hash_seed: ids.data_hash_seed.clone(),
        epoch,
        work,
    }
    .build(&sh)?;

    let mut core = stdfs::read(&core_img)?;
    let core_sectors = bios::place_core_img(&mut core, bios_start)?;
    ensure!(
        core_sectors <= esp_start - bios_start,
        "the GRUB core image ({core_sectors} sectors) does not fit the BIOS boot partition"
    );
    let mut mbr = table.protective_mbr(ids.mbr_signature);
    bios::install_boot_img(&mut mbr, &stdfs::read(grub_pc_dir.join("boot.img"))?, bios_start)?;

    stdfs::create_dir_all(&out_dir).with_context(|| format!("failed to create {}", out_dir.display()))?;
    let image = out_dir.join(format!("{}.img", recipe.name));
    let tmp = out_dir.join(format!(".{}.img.tmp", recipe.name));
    {
        let mut f = stdfs::File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
        f.set_len(total_sectors * SECTOR)?;
        write_at(&mut f, 0, &mbr)?;
        write_at(&mut f, SECTOR, &table.primary()?)?;
        write_at(&mut f, bios_start * SECTOR, &core)?;
        copy_sparse(&esp_img, &mut f, esp_start * SECTOR)?;
        copy_sparse(&data_img, &mut f, data_start * SECTOR)?;
        write_at(&mut f, (total_sectors - gpt::BACKUP_SECTORS) * SECTOR, &table.backup()?)?;
        f.sync_all()?;
    }
    stdfs::rename(&tmp, &image)?;
    // Read back what we wrote: both GPT copies must parse with valid CRCs.
    gpt::read(&stdfs::read(&image)?).context("the written partition table does not read back")?;

    let qcow2 = if args.no_qcow2 {
        None
    } else {
        steps.start("qcow2 (qemu-img convert)");
        let qcow2 = out_dir.join(format!("{}.qcow2", recipe.name));
        let tmp = out_dir.join(format!(".{}.qcow2.tmp", recipe.name));
        cmd!(sh, "qemu-img convert -f raw -O qcow2 {image} {tmp}").quiet().run().context("qemu-img convert failed")?;
        stdfs::rename(&tmp, &qcow2)?;
        Some(qcow2)
    };
    steps.finish();

    let mut toc = String::new();
    let _ = writeln!(toc, "appliance image {} (id {}), from {}", recipe.name, ids.image_id, display_rel(&recipe_path));
    for f in std::iter::once(&image).chain(qcow2.iter()) {
        let _ = writeln!(
            toc,
            "  {}  {}  sha256 {}",
            display_rel(f),
            human_size(debian::file_size(f)?),
            debian::sha256_file(f)?
        );
    }
    let store_bytes = fs::allocated_unique(&fs::walk(&store)?, 4096)?;
    let _ = writeln!(
        toc,
        "  size {} ({} without the {} of profile artifacts)",
        human_size(total_sectors * SECTOR),
        human_size((total_sectors * SECTOR).saturating_sub(store_bytes)),
        human_size(store_bytes)
    );
    let _ = writeln!(toc, "partitions:");
    let _ = writeln!(
        toc,
        "  1  BIOS boot       {:>9}  GRUB i386-pc core image ({} sectors)",
        human_size(MIB),
        core_sectors
    );
    let _ = writeln!(toc, "  2  EFI system      {:>9}  FAT32 {ESP_LABEL}: EFI/BOOT/BOOTX64.EFI, boot/grub/grub.cfg, boot/vmlinuz, boot/initrd.img ({})", human_size(esp_mib * MIB), human_size(initrd.len() as u64));
    let _ = writeln!(
        toc,
        "  3  appliance-data  {:>9}  ext4 {} UUID {}: config, bootloaders, artifacts, state ({} MiB free for state)",
        human_size(data_mib * MIB),
        initramfs::DATA_PARTNAME,
        ids.data_uuid,
        recipe.state_mib
    );
    toc.push_str(&contents);
    let toc_path = out_dir.join(format!("{}.toc", recipe.name));
    stdfs::write(&toc_path, &toc)?;

    println!("\n{toc}");
    println!("steps:");
    for (name, d) in &steps.list {
        println!("  {:>6.1}s  {name}", d.as_secs_f64());
    }
    println!("  {:>6.1}s  total", steps.started.elapsed().as_secs_f64());
    println!("\nwrite it to a USB stick with: dd if={} of=/dev/sdX bs=4M conv=fsync", display_rel(&image));
    println!("or boot it in QEMU with:       cargo xtask vm --recipe {}", display_rel(&recipe_path));
    Ok(Output { image })
}

fn display_rel(p: &Path) -> String {
    let root = project_root();
    let cwd = std::env::current_dir().unwrap_or(root.clone());
    p.strip_prefix(&cwd).or_else(|_| p.strip_prefix(&root)).unwrap_or(p).display().to_string()
}

/// SOURCE_DATE_EPOCH from the environment, else the time of the last commit, else the day
/// Debian 12 was released.
fn source_date_epoch(sh: &Shell) -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return v;
    }
    let root = project_root();
    cmd!(sh, "git -C {root} log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1_686_355_200)
}

/// Identifiers derived from the build seed.
struct Ids {
    image_id: String,
    disk: Guid,
    bios_part: Guid,
    esp_part: Guid,
    data_part: Guid,
    esp_serial: u32,
    mbr_signature: u32,
    data_uuid: String,
    data_hash_seed: String,
}

impl Ids {
    fn derive(seed: &[u8]) -> Ids {
        let u32_of = |what: &str| {
            let b = gpt::derive_bytes(seed, what);
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        Ids {
            image_id: hex::encode(&seed[..6]),
            disk: Guid::derive(seed, "disk"),
            bios_part: Guid::derive(seed, "partition bios"),
            esp_part: Guid::derive(seed, "partition esp"),
            data_part: Guid::derive(seed, "partition data"),
            esp_serial: u32_of("esp serial"),
            mbr_signature: u32_of("mbr signature"),
            data_uuid: Guid::derive(seed, "data uuid").to_string(),
            data_hash_seed: Guid::derive(seed, "data hash seed").to_string(),
        }
    }
}

/// A digest of every input: same inputs, same identifiers (and so the same bytes).
fn build_seed(
    recipe_path: &Path,
    lock: &Lock,
    epoch: u64,
    daemon: &Path,
    libraries: &[host::Library],
    data: &Path,
    modules: &[kmod::Module],
) -> Result<Vec<u8>> {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("format", b"appliance-image/1");
    field("recipe", &stdfs::read(recipe_path)?);
    for pin in lock.pins() {
        field("pin", format!("{} {} {} {}", pin.name, pin.arch, pin.version, pin.sha256).as_bytes());
    }
    field("epoch", &epoch.to_le_bytes());
    for script in initramfs::embedded_scripts() {
        field("script", script.as_bytes());
    }
    field("daemon", debian::sha256_file(daemon)?.as_bytes());
    for lib in libraries {
        field("library", format!("{} {}", lib.path, debian::sha256_file(&lib.file)?).as_bytes());
    }
    for m in modules {
        field("module", m.rel.to_string_lossy().as_bytes());
    }
    for entry in fs::walk(data)? {
        match entry {
            fs::Entry::Dir(rel) => field("dir", rel.as_bytes()),
            fs::Entry::File { rel, path, exec, .. } => {
                field("file", format!("{rel} {exec} {}", debian::sha256_file(&path)?).as_bytes())
            }
        }
    }
    Ok(h.finalize().to_vec())
}

/// An extracted copy of a pinned package in target/cache/extracted (verified download first).
fn extracted(sh: &Shell, lock: &Lock, name: &str, arch: &str) -> Result<PathBuf> {
    let pin = lock.get(name, arch)?;
    let deb = debian::ensure_deb(sh, lock, name, arch)?;
    let tree = project_root().join("target/cache/extracted").join(format!(
        "{}_{}_{}",
        pin.name,
        pin.version.replace(':', "%3a"),
        pin.arch
    ));
    if !tree.is_dir() {
        let tmp = tree.with_file_name(format!(
            ".{}.{}.tmp",
            tree.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = stdfs::remove_dir_all(&tmp);
        debian::extract(sh, &deb, &tmp)?;
        if let Err(e) = stdfs::rename(&tmp, &tree) {
            // A concurrent build may have extracted the same package first.
            let _ = stdfs::remove_dir_all(&tmp);
            if !tree.is_dir() {
                return Err(e).with_context(|| format!("failed to move {}", tmp.display()));
            }
        }
    }
    Ok(tree)
}

fn single_dir(dir: &Path) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = stdfs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        n => bail!("expected one directory in {}, found {n}", dir.display()),
    }
}

/// Copies a directory tree (regular files and directories, following symlinks; hidden entries
/// are left out).
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    stdfs::create_dir_all(dest).with_context(|| format!("failed to create {}", dest.display()))?;
    let mut entries: Vec<_> = stdfs::read_dir(src)
        .with_context(|| format!("failed to list {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let from = e.path();
        let to = dest.join(&name);
        let meta = stdfs::metadata(&from).with_context(|| format!("failed to read {}", from.display()))?;
        if meta.is_dir() {
            copy_tree(&from, &to)?;
        } else if meta.is_file() {
            stdfs::copy(&from, &to).with_context(|| format!("failed to copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// Writes the recipe's `dhcp.mode` / `dhcp.pool` into the copied appliance.yaml. Returns what
/// was changed (empty when nothing was).
fn apply_dhcp_overrides(recipe: &Recipe, config: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    if recipe.dhcp_mode.is_none() && recipe.pool.is_none() {
        return Ok(changed);
    }
    let path = config.join(appliance::config::SETTINGS_FILE);
    let text = stdfs::read_to_string(&path).unwrap_or_default();
    let mut doc: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("failed to parse {}", path.display()))?
    };
    let root = doc.as_mapping_mut().context("appliance.yaml is not a mapping")?;
    let dhcp = root
        .entry("dhcp".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()))
        .as_mapping_mut()
        .context("appliance.yaml: dhcp is not a mapping")?;
    if let Some(mode) = recipe.dhcp_mode {
        dhcp.insert("mode".into(), mode.to_string().into());
        changed.push(format!("dhcp.mode = {mode}"));
    }
    if let Some((start, end)) = recipe.pool {
        let mut pool = serde_yaml::Mapping::new();
        pool.insert("start".into(), start.to_string().into());
        pool.insert("end".into(), end.to_string().into());
        dhcp.insert("pool".into(), pool.into());
        changed.push(format!("dhcp.pool = {start}..{end}"));
    }
    let body = serde_yaml::to_string(&doc)?;
    let header = format!(
        "# Written by `cargo xtask image` from {}: the repository's appliance.yaml with {}.\n",
        recipe.path.file_name().unwrap_or_default().to_string_lossy(),
        changed.join(", ")
    );
    stdfs::write(&path, header + &body)?;
    Ok(changed)
}

/// Copies the recipe's bootloaders (and their SOURCES lines) from `cargo xtask fetch`'s output.
fn copy_bootloaders(wanted: &[String], from: &Path, to: &Path) -> Result<()> {
    stdfs::create_dir_all(to)?;
    let sources = stdfs::read_to_string(from.join("SOURCES")).unwrap_or_default();
    let mut kept = String::new();
    for line in sources.lines() {
        let file = line.split_whitespace().next().unwrap_or_default();
        if line.starts_with('#') || wanted.iter().any(|w| w == file) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    for name in wanted {
        let src = from.join(name);
        stdfs::copy(&src, to.join(name))
            .with_context(|| format!("bootloader {name} is missing in {}", from.display()))?;
    }
    stdfs::write(to.join("SOURCES"), kept)?;
    Ok(())
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

/// What is inside, for the table of contents (also stored in the image).
#[allow(clippy::too_many_arguments)]
fn contents_text(
    recipe: &Recipe,
    catalog: &Catalog,
    store: &Path,
    kernel_pin: &debian::Pin,
    kernel_version: &str,
    modules: &[kmod::Module],
    bootloaders: &Path,
    ids: &Ids,
    daemon_line: &str,
) -> Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "image {} id {}{}",
        recipe.name,
        ids.image_id,
        if recipe.description.is_empty() { String::new() } else { format!(": {}", recipe.description) }
    );
    let _ = writeln!(
        t,
        "kernel: {} {} ({kernel_version}), {} modules loaded at boot",
        kernel_pin.name,
        kernel_pin.version,
        modules.len()
    );
    let _ = writeln!(t, "  NIC drivers: {}", recipe::NIC_MODULES.join(" "));
    let _ = writeln!(t, "{daemon_line}");
    let net = match &recipe.ipv4 {
        Ipv4::Static { address, prefix, gateway } => {
            format!("{address}/{prefix}{}", gateway.map(|g| format!(" via {g}")).unwrap_or_default())
        }
        Ipv4::Dhcp => "DHCP client (udhcpc)".into(),
    };
    let d = &catalog.settings.dhcp;
    let pool = d.pool.map(|(s, e)| format!(", pool {s}-{e}")).unwrap_or_default();
    let _ = writeln!(t, "network: interface {}, address {net}; serving DHCP mode {}{pool}", recipe.interface, d.mode);
    let _ = writeln!(
        t,
        "console: {}",
        [
            recipe.serial.as_ref().map(|s| format!("serial {s} {} baud", recipe.baud)),
            recipe.vga.then(|| "VGA".to_owned())
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ")
    );
    let _ = writeln!(t, "bootloaders:");
    let sources = stdfs::read_to_string(bootloaders.join("SOURCES")).unwrap_or_default();
    for line in sources.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        if let [file, sha, package, ..] = f[..] {
            let size = debian::file_size(&bootloaders.join(file)).map(human_size).unwrap_or_default();
            let _ = writeln!(t, "  {file:<16} {size:>10}  sha256 {}  {package}", &sha[..16.min(sha.len())]);
        }
    }
    let _ = writeln!(t, "profiles ({} in the artifact store):", catalog.profiles.len());
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in catalog.profiles.values() {
        for (arch, set) in &p.arches {
            let files: Vec<String> = set
                .files()
                .map(|a| {
                    let size = debian::file_size(&store.join(&p.name).join(&set.version).join(&a.name))
                        .map(human_size)
                        .unwrap_or_else(|_| "?".into());
                    format!("{} ({size})", a.name)
                })
                .collect();
            rows.insert(
                (p.name.clone(), arch.to_string()),
                format!("{:<8} {}  {}", arch.to_string(), set.version, files.join(", ")),
            );
        }
    }
    for ((name, _), row) in rows {
        let _ = writeln!(t, "  {name:<16} {row}");
    }
    Ok(t)
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

    /// Every recipe in images/ parses, and validates against its config as the build sees it
    /// (the recipe's DHCP settings written in, the overlay merged).
    #[test]
    fn every_shipped_recipe_validates_against_its_config() {
        let dir = project_root().join("images");
        let mut count = 0;
        for entry in stdfs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let recipe = recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let work = tempfile::tempdir().unwrap();
            let config = work.path().join("config");
            copy_tree(&recipe.config, &config).unwrap();
            apply_dhcp_overrides(&recipe, &config).unwrap();
            let catalog = appliance::config::load(&config, recipe.overlay.as_deref())
                .unwrap_or_else(|e| panic!("{}: config: {e}", path.display()));
            recipe.check_against(&catalog).unwrap_or_else(|e| panic!("{e}"));
            count += 1;
        }
        assert!(count >= 2, "expected default.yaml and proxy.yaml in {}", dir.display());
    }

    #[test]
    fn recipe_dhcp_settings_are_written_into_the_copied_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        copy_tree(&project_root().join("profiles"), &config).unwrap();
        let recipe_path = project_root().join("images/proxy.yaml");
        let recipe = recipe::parse(
            &recipe_path,
            "config: ../profiles\nnetwork: { address: dhcp }\ndhcp: { mode: proxy, pool: { start: 10.77.0.150, end: 10.77.0.160 } }\n",
        )
        .unwrap();
        let changed = apply_dhcp_overrides(&recipe, &config).unwrap();
        assert_eq!(changed, ["dhcp.mode = proxy", "dhcp.pool = 10.77.0.150..10.77.0.160"]);
        let catalog = appliance::config::load(&config, None).unwrap();
        assert_eq!(catalog.settings.dhcp.mode, appliance::catalog::DhcpMode::Proxy);
        assert_eq!(catalog.settings.dhcp.pool.unwrap().0.to_string(), "10.77.0.150");
        // Everything else is kept.
        assert_eq!(catalog.settings.dhcp.domain.as_deref(), Some("lab.internal"));
        recipe.check_against(&catalog).unwrap();
    }

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
