//! What is inside an image, in words: IMAGE-INFO (stored on the data partition and in the
//! initramfs, shown by the appliance) and the table of contents next to the image
//! (`<name>.toc`: the files with their sha256, the partitions, then IMAGE-INFO).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs as stdfs;
use std::path::Path;

use anyhow::Result;
use appliance_core::catalog::Catalog;

use super::identity::Ids;
use super::layout::Layout;
use super::recipe::{self, Ipv4, Recipe};
use super::{fs, initramfs, kmod};
use crate::debian;
use crate::human_size;

/// What IMAGE-INFO describes.
pub struct Info<'a> {
    pub recipe: &'a Recipe,
    pub catalog: &'a Catalog,
    /// The artifact store on the data partition.
    pub store: &'a Path,
    pub kernel_pin: &'a debian::Pin,
    pub kernel_version: &'a str,
    pub modules: &'a [kmod::Module],
    pub bootloaders: &'a Path,
    pub ids: &'a Ids,
    pub daemon_line: &'a str,
}

/// IMAGE-INFO: the image, kernel, daemon, network, console, bootloaders and profiles.
pub fn image_info(i: &Info<'_>) -> Result<String> {
    let recipe = i.recipe;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "image {} id {}{}",
        recipe.name,
        i.ids.image_id,
        if recipe.description.is_empty() { String::new() } else { format!(": {}", recipe.description) }
    );
    let _ = writeln!(
        t,
        "kernel: {} {} ({}), {} modules loaded at boot",
        i.kernel_pin.name,
        i.kernel_pin.version,
        i.kernel_version,
        i.modules.len()
    );
    let _ = writeln!(t, "  NIC drivers: {}", recipe::NIC_MODULES.join(" "));
    let _ = writeln!(t, "{}", i.daemon_line);
    let net = match &recipe.ipv4 {
        Ipv4::Static { address, prefix, gateway } => {
            format!("{address}/{prefix}{}", gateway.map(|g| format!(" via {g}")).unwrap_or_default())
        }
        Ipv4::Dhcp => "DHCP client (udhcpc)".into(),
    };
    let d = &i.catalog.settings().dhcp;
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
    let sources = stdfs::read_to_string(i.bootloaders.join("SOURCES")).unwrap_or_default();
    for line in sources.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        if let [file, sha, package, ..] = f[..] {
            let size = debian::file_size(&i.bootloaders.join(file)).map(human_size).unwrap_or_default();
            let _ = writeln!(t, "  {file:<16} {size:>10}  sha256 {}  {package}", &sha[..16.min(sha.len())]);
        }
    }
    let _ = writeln!(t, "profiles ({} in the artifact store):", i.catalog.profiles().len());
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in i.catalog.profiles() {
        for (arch, set) in &p.arches {
            let files: Vec<String> = set
                .files()
                .map(|a| {
                    let size = debian::file_size(&i.store.join(&p.name).join(&set.version).join(&a.name))
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

/// What the table of contents lists besides IMAGE-INFO.
pub struct Toc<'a> {
    pub recipe: &'a Recipe,
    /// The recipe as the user named it.
    pub recipe_shown: &'a str,
    pub ids: &'a Ids,
    /// The image and its qcow2 copy, as (file, how to show its path).
    pub files: &'a [(&'a Path, String)],
    pub store: &'a Path,
    pub layout: &'a Layout,
    pub core_sectors: u64,
    pub esp_label: &'a str,
    pub initrd_bytes: u64,
    pub contents: &'a str,
}

/// The table of contents: files with sizes and sha256, partitions, then IMAGE-INFO.
pub fn table_of_contents(t: &Toc<'_>) -> Result<String> {
    let mut toc = String::new();
    let _ = writeln!(toc, "appliance image {} (id {}), from {}", t.recipe.name, t.ids.image_id, t.recipe_shown);
    for (f, shown) in t.files {
        let _ = writeln!(toc, "  {shown}  {}  sha256 {}", human_size(debian::file_size(f)?), debian::sha256_file(f)?);
    }
    let store_bytes = fs::allocated_unique(&fs::walk(t.store)?, 4096)?;
    let disk = t.layout.disk_bytes();
    let _ = writeln!(
        toc,
        "  size {} ({} without the {} of profile artifacts)",
        human_size(disk),
        human_size(disk.saturating_sub(store_bytes)),
        human_size(store_bytes)
    );
    let _ = writeln!(toc, "partitions:");
    let _ = writeln!(
        toc,
        "  1  BIOS boot       {:>9}  GRUB i386-pc core image ({} sectors)",
        human_size(t.layout.bios.bytes()),
        t.core_sectors
    );
    let _ = writeln!(
        toc,
        "  2  EFI system      {:>9}  FAT32 {}: EFI/BOOT/BOOTX64.EFI, boot/grub/grub.cfg, boot/vmlinuz, boot/initrd.img ({})",
        human_size(t.layout.esp.bytes()),
        t.esp_label,
        human_size(t.initrd_bytes)
    );
    let _ = writeln!(
        toc,
        "  3  appliance-data  {:>9}  ext4 {} UUID {}: config, bootloaders, artifacts, state ({} MiB free for state)",
        human_size(t.layout.data.bytes()),
        initramfs::DATA_PARTNAME,
        t.ids.data_uuid,
        t.recipe.state_mib
    );
    toc.push_str(t.contents);
    Ok(toc)
}
