//! Golden tests of every rendered format. Update the files with
//! `UPDATE_EXPECT=1 cargo test -p appliance-core --test render_golden` and review the diff.

mod common;

use appliance_core::client::Client;
use appliance_core::decide::{decide, Stage};
use appliance_core::render::{self, Format, ServerInfo};
use common::*;
use expect_test::expect_file;

fn server() -> ServerInfo {
    ServerInfo::from_catalog(&catalog())
}

fn rendered(client: &Client, stage: Stage, format: Format) -> String {
    let c = catalog();
    let d = decide(&c, client, stage);
    render::render(&c, &d, &server(), format).unwrap().unwrap_or_else(|| panic!("nothing rendered for {d:?}"))
}

fn pxelinux(path: &str) -> String {
    let c = catalog();
    let (stage, format, client) =
        appliance_core::explain::for_path(Client::new(appliance_core::arch::Firmware::Unknown), path);
    let d = decide(&c, &client, stage);
    render::render(&c, &d, &server(), format.unwrap()).unwrap().unwrap()
}

#[test]
fn ipxe_boot_script() {
    let text = rendered(&ipxe_efi("52:54:00:00:00:03"), Stage::IpxeScript, Format::Ipxe);
    // The EFI stub of iPXE 2019 needs initrd=<name> for every initrd (docs/firmware.md#ipxe-efi-and-initrd-names).
    assert!(text.contains("initrd=initrd0.img initrd=initrd1.img"), "{text}");
    expect_file!["data/golden/ipxe_boot.ipxe"].assert_eq(&text);
}

#[test]
fn ipxe_menu_for_unknown_machine() {
    expect_file!["data/golden/ipxe_menu.ipxe"].assert_eq(&rendered(
        &ipxe_efi("52:54:00:99:00:01"),
        Stage::IpxeScript,
        Format::Ipxe,
    ));
}

#[test]
fn ipxe_local_boot_and_ignore() {
    expect_file!["data/golden/ipxe_local.ipxe"].assert_eq(&rendered(
        &ipxe_efi("52:54:00:00:00:07"),
        Stage::IpxeScript,
        Format::Ipxe,
    ));
    expect_file!["data/golden/ipxe_ignored.ipxe"].assert_eq(&rendered(
        &ipxe_efi("52:54:00:00:00:06"),
        Stage::IpxeScript,
        Format::Ipxe,
    ));
}

#[test]
fn ipxe_entry_script() {
    expect_file!["data/golden/boot.ipxe"].assert_eq(&render::ipxe_entry(&server()).unwrap());
}

#[test]
fn pxelinux_per_mac() {
    let text = pxelinux("pxelinux.cfg/01-52-54-00-00-00-05");
    assert!(text.contains("fdt artifacts/live/"), "{text}");
    expect_file!["data/golden/pxelinux_board1"].assert_eq(&text);
}

#[test]
fn pxelinux_menu_per_arch_default() {
    let text = pxelinux("pxelinux.cfg/default-arm");
    // The x86-only profile is left out of an arm64 menu, and so is the iPXE shell.
    assert!(!text.contains("x86only") && !text.contains("shell"), "{text}");
    expect_file!["data/golden/pxelinux_menu_arm64"].assert_eq(&text);
}

#[test]
fn grub_per_mac_and_menu() {
    expect_file!["data/golden/grub_board1.cfg"].assert_eq(&pxelinux("grub/grub.cfg-01-52-54-00-00-00-05"));
    let mut c = Client::new(appliance_core::arch::Firmware::Grub);
    c.arch_hint = Some((appliance_core::arch::Arch::Arm64, appliance_core::client::Learned::Overheard));
    expect_file!["data/golden/grub_menu_arm64.cfg"].assert_eq(&rendered(&c, Stage::Grub, Format::Grub));
}

#[test]
fn uboot_script_image_bytes() {
    let img = render::uboot_script().unwrap();
    expect_file!["data/golden/boot.scr.uimg.hex"].assert_eq(&hexdump(&img));
}

/// `dumpimage -l` (u-boot-tools) reads our image as a valid script image with matching CRCs.
// The test hands the image to the real tool through a file; the core itself never does either.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[test]
fn uboot_script_image_passes_dumpimage() {
    let img = render::uboot_script().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.scr.uimg");
    std::fs::write(&path, &img).unwrap();
    let out = std::process::Command::new("dumpimage")
        .arg("-l")
        .arg(&path)
        .output()
        .expect("`dumpimage` is missing: apt-get install u-boot-tools");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dumpimage failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Linux Script (uncompressed)"), "{text}");
    // One image in the table: the script, without the 64-byte header and the 8-byte table.
    assert!(text.contains(&format!("Image 0: {} Bytes", img.len() - 64 - 8)), "{text}");
    assert!(text.contains("AArch64"), "{text}");
}

fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
        out.push_str(&format!("{:08x}  {:<48} {text}\n", i * 16, hex.join(" ")));
    }
    out
}
