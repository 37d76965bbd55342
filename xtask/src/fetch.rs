//! `cargo xtask fetch`: fills a bootloader directory from the pinned Debian
//! packages (iPXE binaries, GRUB network boot images, and the Secure Boot
//! chain: Debian's signed shim and network GRUB, copied byte for byte) plus a
//! `SOURCES` file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::debian::{self, Lock};
use crate::{host, human_size, project_root};

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Directory to fill [default: target/bootloaders in the workspace].
    ///
    /// Only the files listed in SOURCES are written; nothing else in the
    /// directory is touched.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Re-pin first: resolve apt's current candidate versions (kernels via
    /// the linux-image-cloud-amd64 / linux-image-arm64 meta packages),
    /// download and hash them, and rewrite xtask/debian.lock.
    #[arg(long)]
    pub update_lock: bool,

    /// Also download and verify every other pinned package (kernels,
    /// busybox-static, grub-pc-bin) into the cache.
    #[arg(long)]
    pub all_packages: bool,

    /// Config directory whose profiles' `deb`/`url` artifacts are fetched.
    #[arg(long, value_name = "DIR", default_value = "profiles")]
    pub config: PathBuf,

    /// Blob cache the profile artifacts go to, one file per sha256
    /// [default: target/blobs]; `appliance serve --blobs` reads it.
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
}

/// The default bootloader directory; `cargo xtask test` exports it to the
/// tests as `APPLIANCE_BOOTLOADERS`.
pub fn default_out_dir() -> PathBuf {
    project_root().join("target/bootloaders")
}

/// A file copied verbatim from a pinned package.
struct Copied {
    file: &'static str,
    package: &'static str,
    arch: &'static str,
    path: &'static str,
    /// Signed for Secure Boot: checked to carry an Authenticode signature. Its
    /// name is the one shim loads (`grubx64.efi`), and it sits beside shim,
    /// which looks for its second stage in its own directory.
    signed: bool,
}

const COPIED: [Copied; 7] = [
    Copied {
        file: "undionly.kpxe",
        package: "ipxe",
        arch: "amd64",
        path: "/usr/lib/ipxe/undionly.kpxe",
        signed: false,
    },
    Copied { file: "ipxe.efi", package: "ipxe", arch: "amd64", path: "/usr/lib/ipxe/ipxe.efi", signed: false },
    Copied { file: "snponly.efi", package: "ipxe", arch: "amd64", path: "/usr/lib/ipxe/snponly.efi", signed: false },
    Copied {
        file: "shimx64.efi",
        package: "shim-signed",
        arch: "amd64",
        path: "/usr/lib/shim/shimx64.efi.signed",
        signed: true,
    },
    Copied {
        file: "shimaa64.efi",
        package: "shim-signed",
        arch: "arm64",
        path: "/usr/lib/shim/shimaa64.efi.signed",
        signed: true,
    },
    // The network image (prefix /grub), not grubx64.efi.signed (prefix /EFI/debian, for disks).
    Copied {
        file: "grubx64.efi",
        package: "grub-efi-amd64-signed",
        arch: "amd64",
        path: "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        signed: true,
    },
    Copied {
        file: "grubaa64.efi",
        package: "grub-efi-arm64-signed",
        arch: "arm64",
        path: "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
        signed: true,
    },
];

/// A GRUB network boot image built with grub-mkimage.
struct GrubImage {
    file: &'static str,
    package: &'static str,
    arch: &'static str,
    /// grub-mkimage `-O` format, also the module directory's name.
    format: &'static str,
}

const GRUB_IMAGES: [GrubImage; 2] = [
    GrubImage { file: "grubnetx64.efi", package: "grub-efi-amd64-bin", arch: "amd64", format: "x86_64-efi" },
    GrubImage { file: "grubnetaa64.efi", package: "grub-efi-arm64-bin", arch: "arm64", format: "arm64-efi" },
];

/// GRUB's prefix: config and modules are looked up on the TFTP server that
/// the firmware booted from.
const GRUB_PREFIX: &str = "(tftp)/grub";

/// Modules embedded in the GRUB images, in this order; those a platform does
/// not build (e.g. `linuxefi`) are dropped.
const GRUB_MODULES: &[&str] = &[
    "efinet",
    "net",
    "tftp",
    "http",
    "normal",
    "configfile",
    "linux",
    "linuxefi",
    "chain",
    "echo",
    "test",
    "gzio",
    "ls",
    "search",
    "regexp",
    "sleep",
    "reboot",
    "halt",
    "efi_gop",
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
];

/// Modules an image is useless without.
const GRUB_REQUIRED: &[&str] = &["efinet", "net", "tftp", "normal", "configfile"];

/// One file of the bootloader directory, built in the work directory.
struct Built {
    file: &'static str,
    path: PathBuf,
    /// `package:arch=version`
    package: String,
    how: String,
}

/// `cargo xtask fetch`: prepares the host, then fetches.
pub fn run(args: &Args) -> Result<()> {
    let pins = if args.update_lock { host::Pins::Repin } else { host::Pins::Download };
    host::prepare(host::Task::Fetch, pins)?;
    fetch(args)
}

/// The fetch itself, on a host already prepared (`image` and `test` run it as one of their steps).
pub fn fetch(args: &Args) -> Result<()> {
    let sh = Shell::new().context("failed to create a shell")?;
    let lock = if args.update_lock { debian::update_lock(&sh)? } else { Lock::load()? };
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => default_out_dir(),
    };

    println!("packages (pinned in {}, cache {}):", debian::LOCK_PATH, debian::cache_dir().display());
    let mut needed: Vec<(&str, &str)> = Vec::new();
    for (name, arch) in
        COPIED.iter().map(|c| (c.package, c.arch)).chain(GRUB_IMAGES.iter().map(|i| (i.package, i.arch)))
    {
        if !needed.contains(&(name, arch)) {
            needed.push((name, arch));
        }
    }
    if args.all_packages {
        for pin in lock.pins() {
            if !needed.contains(&(pin.name.as_str(), pin.arch.as_str())) {
                needed.push((&pin.name, &pin.arch));
            }
        }
    }
    // Fail on a missing pin before downloading anything.
    for (name, arch) in &needed {
        lock.get(name, arch)?;
    }
    let mut debs = BTreeMap::new();
    for (name, arch) in needed {
        debs.insert((name, arch), debian::ensure_deb(&sh, &lock, name, arch)?);
    }

    let scratch = project_root().join("target/cache");
    fs::create_dir_all(&scratch).with_context(|| format!("failed to create {}", scratch.display()))?;
    let work =
        tempfile::Builder::new().prefix("fetch-").tempdir_in(&scratch).context("failed to create a work directory")?;
    let work = work.path();

    let mut built = Vec::new();

    // iPXE, shim and the signed GRUB: copied as shipped.
    for c in &COPIED {
        let pin = lock.get(c.package, c.arch)?;
        let tree = work.join(format!("{}_{}", c.package, c.arch));
        if !tree.exists() {
            debian::extract(&sh, &debs[&(c.package, c.arch)], &tree)?;
        }
        let source = debian::resolve_in_tree(&tree, c.path)
            .with_context(|| format!("{} not found in {} {}", c.file, pin.spec(), pin.version))?;
        if c.signed {
            check_signed(&source).with_context(|| format!("{} from {} {}", c.path, pin.spec(), pin.version))?;
        }
        built.push(Built {
            file: c.file,
            path: source,
            package: format!("{}={}", pin.spec(), pin.version),
            how: format!("copied from {}", c.path),
        });
    }

    // GRUB: built from the pinned modules with the host's grub-mkimage.
    let mkimage_version = grub_mkimage_version(&sh)?;
    for image in &GRUB_IMAGES {
        let pin = lock.get(image.package, image.arch)?;
        if !mkimage_version.ends_with(&pin.version) {
            println!(
                "warning: host {mkimage_version:?} differs from pinned {} {}; \
                 the image may not match what CI builds",
                pin.spec(),
                pin.version
            );
        }
        let tree = work.join(image.package);
        debian::extract(&sh, &debs[&(image.package, image.arch)], &tree)?;
        let module_dir = tree.join("usr/lib/grub").join(image.format);
        ensure!(
            module_dir.join("moddep.lst").is_file(),
            "{} {} has no GRUB modules at /usr/lib/grub/{}",
            pin.spec(),
            pin.version,
            image.format
        );
        let modules = select_modules(&module_dir, image.format)?;
        let path = build_grub_image(&sh, work, image, &module_dir, &modules)?;
        built.push(Built {
            file: image.file,
            path,
            package: format!("{}={}", pin.spec(), pin.version),
            how: format!("{mkimage_version} -O {} -p {GRUB_PREFIX} {}", image.format, modules.join(" ")),
        });
    }

    install(&out, &mut built)?;

    let config = match &args.config {
        c if c.as_os_str().is_empty() => project_root().join("profiles"),
        c if c.is_absolute() => c.clone(),
        c => project_root().join(c),
    };
    let blobs = args.blobs.clone().unwrap_or_else(crate::blobs::default_dir);
    crate::blobs::fetch(&sh, &lock, &config, &blobs)
}

/// Fails unless the PE image at `path` carries an Authenticode signature.
fn check_signed(path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let head = &bytes[..bytes.len().min(appliance_core::pe::HEAD_LEN)];
    match appliance_core::pe::authenticode(head, bytes.len() as u64)? {
        appliance_core::pe::Authenticode::Signed { .. } => Ok(()),
        appliance_core::pe::Authenticode::Unsigned => bail!("it carries no Authenticode signature"),
    }
}

/// `grub-mkimage (GRUB) 2.06-13+deb12u2`, checking the tool is there.
fn grub_mkimage_version(sh: &Shell) -> Result<String> {
    let version = cmd!(sh, "grub-mkimage --version").quiet().read().context(
        "grub-mkimage is not available; install the Debian package grub-common (`cargo xtask fetch` as root does)",
    )?;
    Ok(version.trim().to_owned())
}

/// The wanted modules this GRUB platform actually has.
fn select_modules(module_dir: &Path, format: &str) -> Result<Vec<&'static str>> {
    let (present, missing): (Vec<&str>, Vec<&str>) =
        GRUB_MODULES.iter().partition(|module| module_dir.join(format!("{module}.mod")).is_file());
    if !missing.is_empty() {
        println!("  {format}: leaving out modules this platform does not have: {}", missing.join(" "));
    }
    for module in GRUB_REQUIRED {
        ensure!(present.contains(module), "{format}: required GRUB module {module} is missing");
    }
    ensure!(
        present.contains(&"linux") || present.contains(&"linuxefi"),
        "{format}: neither the linux nor the linuxefi GRUB module exists"
    );
    Ok(present)
}

/// Runs grub-mkimage twice and insists on identical output, so the
/// checksums in SOURCES are reproducible.
fn build_grub_image(
    sh: &Shell,
    work: &Path,
    image: &GrubImage,
    module_dir: &Path,
    modules: &[&str],
) -> Result<PathBuf> {
    let format = image.format;
    // The appliance writes its address into this config when it serves the image.
    let early = work.join("early.cfg");
    fs::write(&early, appliance_core::render::grub_image::early_config()).context("failed to write early.cfg")?;
    let mut outputs = Vec::new();
    for attempt in ["a", "b"] {
        let output = work.join(format!("{}.{attempt}", image.file));
        cmd!(sh, "grub-mkimage -d {module_dir} -O {format} -o {output} -c {early} -p {GRUB_PREFIX} {modules...}")
            .quiet()
            .run()
            .with_context(|| format!("grub-mkimage failed to build {}", image.file))?;
        outputs.push(output);
    }
    let first = fs::read(&outputs[0]).context("failed to read the GRUB image")?;
    let second = fs::read(&outputs[1]).context("failed to read the GRUB image")?;
    if first != second {
        bail!("grub-mkimage output for {} is not reproducible (two builds differ)", image.file);
    }
    let placeholder = appliance_core::render::grub_image::SERVER_PLACEHOLDER.as_bytes();
    ensure!(
        first.windows(placeholder.len()).any(|w| w == placeholder),
        "{}: the embedded config's server placeholder is not stored verbatim in the image",
        image.file
    );
    Ok(outputs.swap_remove(0))
}

/// Copies the built files into `out`, writes SOURCES and prints the table.
fn install(out: &Path, built: &mut [Built]) -> Result<()> {
    built.sort_by_key(|b| b.file);
    fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;

    let mut sources = String::from(
        "# Bootloaders written by `cargo xtask fetch` from the Debian packages pinned in\n\
         # xtask/debian.lock. One line per file:\n\
         #   <file> <sha256> <package>:<arch>=<version> <how it was made>\n",
    );
    let mut rows = Vec::new();
    for b in built.iter() {
        let sha256 = debian::sha256_file(&b.path)?;
        let size = debian::file_size(&b.path)?;
        replace_file(&b.path, &out.join(b.file))?;
        let _ = writeln!(sources, "{} {sha256} {} {}", b.file, b.package, b.how);
        rows.push([b.file.to_owned(), human_size(size), sha256[..16].to_owned(), b.package.clone()]);
    }
    let sources_path = out.join("SOURCES");
    let tmp = out.join(".SOURCES.tmp");
    fs::write(&tmp, sources).with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, &sources_path).with_context(|| format!("failed to write {}", sources_path.display()))?;

    println!("bootloaders in {}:", out.display());
    let header = ["FILE".to_owned(), "SIZE".to_owned(), "SHA256".to_owned(), "FROM".to_owned()];
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        println!(
            "  {:<w0$}  {:>w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
    }
    println!("  (full checksums and build details in {})", sources_path.display());
    Ok(())
}

/// Replaces `dest` atomically with a copy of `src`.
fn replace_file(src: &Path, dest: &Path) -> Result<()> {
    let name = dest.file_name().context("destination has no file name")?;
    let tmp = dest.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    fs::copy(src, &tmp).with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, dest).with_context(|| format!("failed to write {}", dest.display()))
}
