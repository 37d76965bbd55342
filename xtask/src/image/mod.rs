//! `cargo xtask image`: one bootable, flashable, reproducible disk image from a recipe
//! (`images/<name>.yaml`) and the config it names.
//!
//! Layout (GPT, 512-byte sectors, 1 MiB aligned; planned by `layout`):
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
//!
//! `build` runs named steps, each a function of what the earlier ones made: inputs
//! (`inputs`), the daemon, the artifact store, the initramfs (`boot`, `identity`), the ESP's
//! tree (`boot`), the layout plan (`layout`), the two file systems and the GPT/BIOS assembly
//! (`disk`), the qcow2 copy and the table of contents (`toc`).

pub mod bios;
pub mod boot;
pub mod disk;
pub mod fs;
pub mod gpt;
pub mod host;
pub mod identity;
pub mod initramfs;
pub mod inputs;
pub mod kmod;
pub mod layout;
pub mod recipe;
pub mod toc;

use std::fs as stdfs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use appliance_core::catalog::Catalog;
use xshell::Shell;

use crate::{debian, human_size, project_root};
pub use inputs::input_path;
use layout::{Contents, Layout};

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

/// What a build produced.
pub struct Output {
    pub image: PathBuf,
}

/// `cargo xtask image`: prepares the host, then builds.
pub fn run(args: &Args) -> Result<()> {
    crate::host::prepare(crate::host::Task::Image, crate::host::Pins::Download)?;
    build(args).map(|_| ())
}

/// The build's steps: each is announced as it starts, and their times are listed at the end.
struct Steps {
    started: Instant,
    list: Vec<(String, Duration)>,
    current: Option<(String, Instant)>,
}

impl Steps {
    fn new() -> Steps {
        Steps { started: Instant::now(), list: Vec::new(), current: None }
    }

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

    fn print(&mut self) {
        self.finish();
        println!("steps:");
        for (name, d) in &self.list {
            println!("  {:>6.1}s  {name}", d.as_secs_f64());
        }
        println!("  {:>6.1}s  total", self.started.elapsed().as_secs_f64());
    }
}

/// The staging area: `data/` and `esp/` are the two file systems' trees; removed on drop.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn create() -> Result<Work> {
        let scratch = project_root().join("target/cache");
        stdfs::create_dir_all(&scratch)?;
        let dir = tempfile::Builder::new()
            .prefix("image-")
            .tempdir_in(&scratch)
            .context("failed to create a work directory")?;
        Ok(Work { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    fn esp(&self) -> PathBuf {
        self.path().join("esp")
    }
}

/// Builds the image on a host already prepared (`cargo xtask vm` builds before it boots).
pub fn build(args: &Args) -> Result<Output> {
    let mut steps = Steps::new();
    let sh = Shell::new().context("failed to create a shell")?;
    let recipe_path = input_path(&args.recipe);
    let out_dir = args.out.clone().unwrap_or_else(|| project_root().join("target/images"));
    let work = Work::create()?;
    let (data, esp) = (work.data(), work.esp());

    steps.start("recipe and config");
    let config = inputs::config(&sh, &recipe_path, &data)?;
    let recipe = &config.recipe;
    steps.start("pinned inputs (cargo xtask fetch)");
    let pinned = inputs::pinned(&sh, recipe, &data)?;
    steps.start(&format!("daemon (cargo build, {} profile)", profile_name(args.daemon_profile)));
    let daemon = daemon(&sh, args.daemon_profile, work.path())?;
    steps.start("artifact store (appliance::artifacts::publish)");
    let store = artifact_store(&config.catalog, &data, recipe.git.is_some())?;
    steps.start("kernel modules and initramfs");
    let boot = boot::initramfs(&recipe_path, &config, &pinned, &daemon, &store, &data)?;
    steps.start("GRUB (BIOS and UEFI) and the ESP's files");
    let bios_boot = boot::esp(&sh, recipe, &pinned, &boot, work.path(), &esp)?;
    steps.start("layout");
    let layout = plan_layout(recipe.state_mib, &bios_boot, &esp, &data)?;
    steps.start("ESP file system (FAT32)");
    let esp_img = disk::esp_filesystem(&sh, &layout, &boot.ids, config.epoch, &esp, work.path())?;
    steps.start("data partition (ext4)");
    let data_img =
        disk::data_filesystem(&sh, &layout, &boot.ids, config.epoch, (&data, initramfs::DATA_PARTNAME), work.path())?;
    steps.start("GPT and BIOS boot code (disk image)");
    stdfs::create_dir_all(&out_dir).with_context(|| format!("failed to create {}", out_dir.display()))?;
    let image = out_dir.join(format!("{}.img", recipe.name));
    let parts = disk::Parts {
        layout: &layout,
        ids: &boot.ids,
        bios: &bios_boot,
        esp_img: &esp_img,
        data_img: &data_img,
        data_name: initramfs::DATA_PARTNAME,
    };
    let core_sectors = disk::assemble(&parts, &image)?;
    let qcow2 = if args.no_qcow2 {
        None
    } else {
        steps.start("qcow2 (qemu-img convert)");
        let qcow2 = out_dir.join(format!("{}.qcow2", recipe.name));
        disk::qcow2(&sh, &image, &qcow2)?;
        Some(qcow2)
    };

    steps.start("table of contents");
    let files: Vec<(&Path, String)> =
        std::iter::once(&image).chain(qcow2.iter()).map(|f| (f.as_path(), display_rel(f))).collect();
    let toc = toc::table_of_contents(&toc::Toc {
        recipe,
        recipe_shown: &display_rel(&recipe_path),
        ids: &boot.ids,
        files: &files,
        store: &store,
        layout: &layout,
        core_sectors,
        esp_label: disk::ESP_LABEL,
        initrd_bytes: boot.initrd.len() as u64,
        contents: &boot.contents,
    })?;
    stdfs::write(out_dir.join(format!("{}.toc", recipe.name)), &toc)?;
    println!("\n{toc}");
    steps.print();
    println!("\nwrite it to a USB stick with: dd if={} of=/dev/sdX bs=4M conv=fsync", display_rel(&image));
    println!("or boot it in QEMU with:       cargo xtask vm --recipe {}", display_rel(&recipe_path));
    Ok(Output { image })
}

/// The daemon binary as it goes into the initramfs, with the shared libraries it loads.
pub struct Daemon {
    pub binary: PathBuf,
    pub libraries: Vec<host::Library>,
    pub profile: host::DaemonProfile,
}

impl Daemon {
    /// Its line in IMAGE-INFO.
    fn line(&self) -> Result<String> {
        Ok(format!(
            "daemon: appliance {} ({} build, stripped, {}) with {}",
            env!("CARGO_PKG_VERSION"),
            profile_name(self.profile),
            human_size(debian::file_size(&self.binary)?),
            self.libraries.iter().map(|l| l.path.rsplit('/').next().unwrap_or_default()).collect::<Vec<_>>().join(" ")
        ))
    }
}

/// Builds the daemon (stripped) and finds the shared libraries it needs.
fn daemon(sh: &Shell, profile: host::DaemonProfile, work: &Path) -> Result<Daemon> {
    let binary = host::build_daemon(sh, profile, work)?;
    let libraries = host::shared_libraries(sh, &binary)?;
    println!(
        "  {} ({}), with {}",
        binary.display(),
        human_size(debian::file_size(&binary)?),
        libraries.iter().map(|l| l.path.as_str()).collect::<Vec<_>>().join(", ")
    );
    Ok(Daemon { binary, libraries, profile })
}

/// Publishes the profiles' artifacts into `data/state/artifacts`, as the daemon would at start.
/// With `ship_blobs` (a recipe that follows a repository) the blobs the sources come from go
/// into `data/state/blobs` too, the daemon's blob cache: a commit that gives a profile a new
/// version from the same sources (a changed kernel command line) is then published without a
/// network, as no published artifact holds a file that goes inside a generated initrd. Files
/// equal to a published artifact (a kernel) become hard links to it in the file system.
fn artifact_store(catalog: &Catalog, data: &Path, ship_blobs: bool) -> Result<PathBuf> {
    let store = data.join("state/artifacts");
    stdfs::create_dir_all(&store)?;
    let blobs = crate::blobs::default_dir();
    let report = appliance::artifacts::publish(catalog, &store, &blobs)
        .map_err(|e| anyhow::anyhow!("publishing the profiles' artifacts failed: {e}"))?;
    println!("  {} artifact versions in the store", report.published.len() + report.existing.len());
    if ship_blobs {
        let plan = appliance_core::obtain::plan(catalog, &|_| false, &|_, _| false);
        let shas = plan.fetch.iter().map(|f| *f.sha256()).chain(plan.unobtainable.iter().map(|u| u.sha256));
        let dest = data.join("state/blobs");
        stdfs::create_dir_all(&dest)?;
        let mut shipped = 0;
        for sha in shas {
            let name = hex::encode(sha);
            let from = blobs.join(&name);
            if from.is_file() {
                stdfs::copy(&from, dest.join(&name)).with_context(|| format!("copying {}", from.display()))?;
                shipped += 1;
            }
        }
        println!("  {shipped} source blobs in the blob cache (the recipe follows a repository)");
    }
    Ok(store)
}

/// Measures the ESP's and the data partition's trees and plans the disk from them.
pub(crate) fn plan_layout(state_mib: u32, bios_boot: &boot::BiosBoot, esp: &Path, data: &Path) -> Result<Layout> {
    let data_entries = fs::walk(data)?;
    let layout = Layout::plan(&Contents {
        esp_bytes: fs::allocated(&fs::walk(esp)?, 512),
        data_bytes: fs::allocated_unique(&data_entries, 4096)?,
        data_entries: data_entries.len() as u64,
        state_mib,
        core_bytes: bios_boot.core.len() as u64,
        align: layout::ALIGN,
    })?;
    let at = |e: layout::Extent| format!("{} at {}", human_size(e.bytes()), human_size(e.offset()));
    println!(
        "  BIOS boot {}, ESP {}, data {}; disk {}",
        at(layout.bios),
        at(layout.esp),
        at(layout.data),
        human_size(layout.disk_bytes())
    );
    Ok(layout)
}

/// `release` or `dev`.
fn profile_name(profile: host::DaemonProfile) -> String {
    format!("{profile:?}").to_lowercase()
}

fn display_rel(p: &Path) -> String {
    let root = project_root();
    let cwd = std::env::current_dir().unwrap_or(root.clone());
    p.strip_prefix(&cwd).or_else(|_| p.strip_prefix(&root)).unwrap_or(p).display().to_string()
}
