//! The boot image of a UEFI HTTP Boot client on the shim chain: what the plan puts where (shim
//! as the removable-media program, its GRUB beside it, the machine's config, the artifacts at the
//! paths the config names), that the bytes are the same for the same inputs and readable back as
//! FAT, and that the key follows every input.

mod common;

use appliance_core::boot_file::BootFile;
use appliance_core::boot_image::{self, BootImageError, Contents, Plan};
use appliance_core::catalog::{Catalog, Digest};
use appliance_core::decide::{decide, Stage};
use appliance_core::render::ServerInfo;
use common::*;
use std::io::{Cursor, Read};

const LIVE: &str = "name: live\ncmdline: quiet\narch:\n  x86_64:\n    kernel: { path: k }\n    initrd: [{ path: i }]\n  arm64:\n    kernel: { path: ka }\n";
const RESCUE: &str = "name: rescue\narch:\n  x86_64:\n    kernel: { path: r }\n";
const MENUS: &str = "menus:\n  pick:\n    entries:\n      - profile: live\n      - profile: rescue\n";
const MACHINES: &str = "\
machines:
  \"52:54:00:00:00:01\": { hostname: sb1, profile: live, uefi_chain: shim }
  \"52:54:00:00:00:02\": { hostname: menu1, menu: pick, uefi_chain: shim }
  \"52:54:00:00:00:03\": { hostname: disk1, action: local, uefi_chain: shim }
";
const SHIM: Digest = [1; 32];
const GRUB: Digest = [2; 32];

fn catalog_with(live: &str) -> Catalog {
    validate_files(&[
        ("appliance.yaml", "server: { address: 10.0.0.1 }\ndhcp: { mode: proxy }\n"),
        ("machines.yaml", MACHINES),
        ("menus.yaml", MENUS),
        ("live.yaml", live),
        ("rescue.yaml", RESCUE),
        ("k", "kernel x86_64"),
        ("i", "initrd x86_64"),
        ("ka", "kernel arm64"),
        ("r", "rescue kernel"),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn server() -> ServerInfo {
    ServerInfo::new("10.0.0.1".parse().unwrap(), "http://10.0.0.1".into())
}

fn plan_for(c: &Catalog, client: &appliance_core::client::Client) -> Option<Plan> {
    boot_image::plan(c, &decide(c, client, Stage::Grub), &server()).unwrap()
}

fn read_back(image: &[u8], path: &str) -> Vec<u8> {
    let fs = fatfs::FileSystem::new(Cursor::new(image.to_vec()), fatfs::FsOptions::new()).unwrap();
    let mut out = Vec::new();
    fs.root_dir().open_file(path).unwrap_or_else(|e| panic!("{path}: {e}")).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn shim_is_the_removable_program_with_its_grub_beside_it_and_the_config_names_the_files_in_the_image() {
    let c = catalog_with(LIVE);
    let plan = plan_for(&c, &uefi_http_x64("52:54:00:00:00:01")).expect("an image for a machine with a profile");
    assert_eq!((plan.shim, plan.grub), (BootFile::ShimX64, BootFile::SignedGrubX64));
    assert_eq!(plan.shim_path, "EFI/BOOT/BOOTX64.EFI");
    assert_eq!(plan.grub_path(), "EFI/BOOT/grubx64.efi");
    let paths: Vec<String> = plan.artifacts.iter().map(|a| a.path()).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    for path in &paths {
        assert!(path.starts_with("artifacts/live/"), "{path}");
        // GRUB's root is the RAM disk, so the config's absolute paths are paths in the image.
        assert!(plan.config.contains(&format!(" /{path}")), "{path} not in\n{}", plan.config);
    }
    let arm = plan_for(&c, &uefi_http_arm64("52:54:00:00:00:01")).unwrap();
    assert_eq!((arm.shim_path, arm.grub_path().as_str()), ("EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/grubaa64.efi"));
    assert_eq!(arm.artifacts.len(), 1);
}

#[test]
fn the_bytes_read_back_and_are_the_same_for_the_same_inputs() {
    let c = catalog_with(LIVE);
    let plan = plan_for(&c, &uefi_http_x64("52:54:00:00:00:01")).unwrap();
    let kernel = vec![0x4d; 200_000];
    let contents = Contents { shim: b"shim bytes", grub: b"grub bytes", artifacts: vec![b"initrd", &kernel] };
    let key = plan.key(&SHIM, &GRUB);
    let image = plan.build(&contents, &key).unwrap();
    assert_eq!(image, plan.build(&contents, &key).unwrap());
    assert_eq!(read_back(&image, "EFI/BOOT/BOOTX64.EFI"), b"shim bytes");
    assert_eq!(read_back(&image, "EFI/BOOT/grubx64.efi"), b"grub bytes");
    assert_eq!(read_back(&image, boot_image::CONFIG_PATH), plan.config.as_bytes());
    // Artifacts in the plan's (path) order: the store's `initrd.img` sorts before the kernel `k`.
    let names: Vec<&str> = plan.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["initrd.img", "k"]);
    assert_eq!(read_back(&image, &plan.artifacts[0].path()), b"initrd");
    assert_eq!(read_back(&image, &plan.artifacts[1].path()), kernel);
    // No clock in the image: every entry's date is all zero bits (1980, month and day 0: none).
    let fs = fatfs::FileSystem::new(Cursor::new(image.clone()), fatfs::FsOptions::new()).unwrap();
    for entry in fs.root_dir().open_dir("EFI/BOOT").unwrap().iter().map(Result::unwrap) {
        let m = entry.modified();
        assert_eq!((m.date.year, m.date.month, m.date.day), (1980, 0, 0), "{}", entry.file_name());
    }
    drop(fs);
    let short = Contents { shim: b"", grub: b"", artifacts: vec![b"one"] };
    assert!(matches!(plan.build(&short, &key), Err(BootImageError::ArtifactCount { given: 1, planned: 2 })));
}

#[test]
fn the_key_follows_the_programs_the_config_and_the_artifacts() {
    let c = catalog_with(LIVE);
    let plan = plan_for(&c, &uefi_http_x64("52:54:00:00:00:01")).unwrap();
    let key = plan.key(&SHIM, &GRUB);
    assert_eq!(key, plan_for(&c, &uefi_http_x64("52:54:00:00:00:01")).unwrap().key(&SHIM, &GRUB));
    assert_ne!(key, plan.key(&[9; 32], &GRUB), "another shim");
    assert_ne!(key, plan.key(&SHIM, &[9; 32]), "another GRUB");
    let cmdline = catalog_with(&LIVE.replace("quiet", "loud"));
    assert_ne!(key, plan_for(&cmdline, &uefi_http_x64("52:54:00:00:00:01")).unwrap().key(&SHIM, &GRUB));
    let mut other_kernel = plan.clone();
    other_kernel.artifacts[1].digest = [7; 32];
    assert_ne!(key, other_kernel.key(&SHIM, &GRUB));
}

#[test]
fn a_menu_carries_every_entrys_files_and_local_boot_only_its_config() {
    let c = catalog_with(LIVE);
    let menu = plan_for(&c, &uefi_http_x64("52:54:00:00:00:02")).unwrap();
    let profiles: Vec<&str> = menu.artifacts.iter().map(|a| a.profile.as_str()).collect();
    assert_eq!(profiles, ["live", "live", "rescue"]);
    // GRUB's config sends it back to the firmware's next boot option; nothing else to carry.
    let local = plan_for(&c, &uefi_http_x64("52:54:00:00:00:03")).unwrap();
    assert!(local.artifacts.is_empty() && !local.config.contains("linux "), "{}", local.config);
}

#[test]
fn image_names_say_machine_and_architecture() {
    let (m, a) = (mac("52:54:00:12:34:56"), appliance_core::arch::Arch::X86_64);
    let path = boot_image::url_path(m, a);
    assert_eq!(path, "boot-image/52-54-00-12-34-56.x86_64.img");
    assert_eq!(boot_image::parse_file_name(path.rsplit('/').next().unwrap()), Some((m, a)));
    for bad in ["52-54-00-12-34-56.x86_64", "52-54-00-12-34.x86_64.img", "52-54-00-12-34-56.sparc.img", ".img"] {
        assert_eq!(boot_image::parse_file_name(bad), None, "{bad}");
    }
}
