//! Secure Boot cells (issue 17): OVMF and ArmVirt EDK2 with Secure Boot on and Microsoft's keys
//! enrolled, booting the `shim` chain (Debian's Microsoft-signed shim → Debian's signed network
//! GRUB → the profile's Debian-signed kernel) to the payload's marker, with the kernel's own
//! `secureboot: Secure boot enabled` line (printed by the payload's /init) as proof that the
//! firmware enforced it; and the firmware refusing what the `ipxe` chain hands out.
//!
//! Same harness, needs and logs as the matrix (`qemu_matrix.rs`, tests/README.md).

use appliance_core::catalog::DhcpMode::{Off, Proxy, Server};
use boot_tests::client::Client::*;
use boot_tests::matrix::Cell;
use std::process::Command;
use std::time::Duration;

/// What the payload's /init prints from the kernel log when the firmware had Secure Boot on.
const SECURE_BOOT_ON: [&str; 2] = ["secureboot: Secure boot enabled", "Kernel is locked down from EFI Secure Boot"];

fn shim_machine(hostname: &str) -> String {
    format!("{{ hostname: {hostname}, profile: tiny-live, uefi_chain: shim }}")
}

fn with_secure_boot_proof(mut cell: Cell) -> Cell {
    for text in SECURE_BOOT_ON {
        cell = cell.serial_shows(text);
    }
    cell
}

#[test]
fn ovmf_secure_boot_pxe_shim_server() {
    let cell = Cell::new("ovmf_secure_boot_pxe_shim_server", OvmfPxeSecureBoot, Server)
        .machine("52:54:00:4d:11:01", &shim_machine("sb-pxe"))
        // shim names the file it fetches from the BOOTP file field's directory.
        .serial_shows("Fetching Netboot Image grubx64.efi")
        .serial_shows("Welcome to GRUB!")
        .daemon_log_shows("uefi_chain=shim by MAC database entry 52:54:00:4d:11:01")
        .daemon_log_shows("grub/grub.cfg");
    with_secure_boot_proof(cell).run();
}

/// `--dhcp off`: the site's DHCP names us as next-server with one boot file name for everyone
/// (`undionly.kpxe`). We serve shim under that name to a machine on the shim chain, and shim,
/// asking for `grubx64.efi` beside it, gets the signed GRUB.
#[test]
fn ovmf_secure_boot_pxe_shim_off() {
    let cell = Cell::new("ovmf_secure_boot_pxe_shim_off", OvmfPxeSecureBoot, Off)
        .machine("52:54:00:4d:11:03", &shim_machine("sb-off"))
        .serial_shows("Fetching Netboot Image grubx64.efi")
        .daemon_log_shows("grubx64.efi");
    with_secure_boot_proof(cell).run();
}

/// UEFI HTTP Boot on the shim chain, by a boot image: Debian 12's signed GRUB has no `http`
/// module (so handed shim's URL, GRUB set its root to `(http,…)` and stopped at its prompt), so
/// the DHCP reply names the machine's boot image instead. The firmware downloads it into a RAM
/// disk and starts shim from it as `\EFI\BOOT\BOOTX64.EFI` (Secure Boot check by the firmware),
/// shim starts the signed GRUB beside it (its check), and GRUB reads `grub/grub.cfg`, the kernel
/// and the initrd from the RAM disk, with no further request (docs/firmware.md#a-boot-image-over-http).
#[test]
fn ovmf_secure_boot_http_shim_boot_image() {
    let cell = Cell::new("ovmf_secure_boot_http_shim_boot_image", OvmfHttpSecureBoot, Server)
        .machine("52:54:00:4d:11:02", &shim_machine("sb-http"))
        .serial_shows(">>Start HTTP Boot over IPv4")
        .serial_shows("Welcome to GRUB!")
        // The firmware asks for the size first, then the image; the second is served from the cache.
        .daemon_log_shows("method=HEAD path=/boot-image/52-54-00-4d-11-02.x86_64.img status=200")
        .daemon_log_shows("path=/boot-image/52-54-00-4d-11-02.x86_64.img status=200")
        .daemon_log_shows("(cached)")
        // Everything GRUB reads comes from the RAM disk.
        .daemon_log_lacks("grub/grub.cfg")
        .daemon_log_lacks("path=/artifacts/");
    let outcome = with_secure_boot_proof(cell).run();
    let explained = explain(&outcome.out_dir, "52:54:00:4d:11:02", "16", "HTTPClient:Arch:00016:UNDI:003001");
    for want in [
        "hands out:    boot image http://10.77.0.1/boot-image/52-54-00-4d-11-02.x86_64.img by HTTP",
        "uefi chain:   shim by MAC database entry 52:54:00:4d:11:02",
        "EFI/BOOT/BOOTX64.EFI  (shimx64.efi, Microsoft-signed)",
    ] {
        assert!(explained.contains(want), "explain lacks {want:?}:\n{explained}");
    }
}

/// Behind proxyDHCP too: unlike PXE (below), where the signed GRUB asks the site's server for
/// its config, the image carries everything GRUB reads, so which server GRUB believes in does
/// not matter.
#[test]
fn ovmf_secure_boot_http_shim_boot_image_proxy() {
    let cell = Cell::new("ovmf_secure_boot_http_shim_boot_image_proxy", OvmfHttpSecureBoot, Proxy)
        .machine("52:54:00:4d:11:06", &shim_machine("sb-http-proxy"))
        .daemon_log_shows("path=/boot-image/52-54-00-4d-11-06.x86_64.img status=200")
        .daemon_log_lacks("grub/grub.cfg");
    with_secure_boot_proof(cell).run();
}

/// A machine left on the `ipxe` chain under Secure Boot: the firmware refuses the unsigned
/// `ipxe.efi` ("Access Denied"), nothing boots, and `explain` for that machine says why.
#[test]
fn ovmf_secure_boot_refuses_ipxe() {
    let mac = "52:54:00:4d:11:04";
    let outcome = Cell::new("ovmf_secure_boot_refuses_ipxe", OvmfPxeSecureBoot, Server)
        .machine(mac, "{ hostname: sb-ipxe, profile: tiny-live }")
        .expect_no_boot(Duration::from_secs(90))
        .settled_by("Access Denied")
        .serial_shows("Access Denied")
        .daemon_log_shows("boot=Some(\"ipxe.efi\")")
        .run();
    let explained = explain(&outcome.out_dir, mac, "7", "PXEClient:Arch:00007:UNDI:003000");
    for want in [
        "hands out:    boot file ipxe.efi by TFTP",
        "uefi chain:   ipxe by appliance.yaml",
        "ipxe.efi is unsigned: firmware with Secure Boot on refuses it (Access Denied)",
    ] {
        assert!(explained.contains(want), "explain lacks {want:?}:\n{explained}");
    }
}

#[test]
fn armvirt_secure_boot_pxe_shim_server() {
    let cell = Cell::new("armvirt_secure_boot_pxe_shim_server", ArmVirtSecureBoot, Server)
        .machine("52:54:00:4d:12:01", &shim_machine("sb-arm"))
        .serial_shows("Fetching Netboot Image grubaa64.efi")
        .daemon_log_shows("uefi_chain=shim by MAC database entry 52:54:00:4d:12:01");
    with_secure_boot_proof(cell).run();
}

/// The boot image on ArmVirt: option 93 = 19 (arm64 HTTP Boot) gets the arm64 image, shim as
/// `\EFI\BOOT\BOOTAA64.EFI` and the signed `grubaa64.efi` beside it.
#[test]
fn armvirt_secure_boot_http_shim_boot_image() {
    let cell = Cell::new("armvirt_secure_boot_http_shim_boot_image", ArmVirtHttpSecureBoot, Server)
        .machine("52:54:00:4d:12:03", &shim_machine("sb-arm-http"))
        .daemon_log_shows("path=/boot-image/52-54-00-4d-12-03.arm64.img status=200")
        .daemon_log_lacks("grub/grub.cfg")
        .daemon_log_lacks("path=/artifacts/");
    with_secure_boot_proof(cell).run();
}

/// ArmVirt's Secure Boot is enforced, not only reported: our own (unsigned) GRUB image, which
/// the `ipxe` chain hands arm64, is refused.
#[test]
fn armvirt_secure_boot_refuses_our_grub() {
    Cell::new("armvirt_secure_boot_refuses_our_grub", ArmVirtSecureBoot, Server)
        .machine("52:54:00:4d:12:02", "{ hostname: sb-arm-plain, profile: tiny-live }")
        .expect_no_boot(Duration::from_secs(90))
        .settled_by("Access Denied")
        .serial_shows("Access Denied")
        .daemon_log_shows("boot=Some(\"grubnetaa64.efi\")")
        .run();
}

/// `appliance explain` on the config the cell served.
fn explain(out: &std::path::Path, mac: &str, client_arch: &str, vendor_class: &str) -> String {
    let bin = boot_tests::host::appliance_bin().expect("the appliance binary");
    let config = out.join("config");
    let output = Command::new(bin)
        .args(["explain", "--config"])
        .arg(&config)
        .args(["--mac", mac, "--client-arch", client_arch, "--vendor-class", vendor_class])
        .output()
        .expect("running appliance explain");
    assert!(output.status.success(), "appliance explain failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Behind proxyDHCP the shim chain stops in GRUB: shim reads our proxy offer (its BOOTP file
/// field is empty in the site's ACK) and fetches itself and its GRUB from us, but Debian's
/// signed GRUB, like every GRUB 2.06 (docs/firmware.md#grub-behind-proxydhcp), takes its server
/// from the site's ACK (`siaddr` 10.77.0.2 here) and never asks us for `grub/grub.cfg`. Unlike
/// our own GRUB image, a signed one cannot carry our address. This cell pins that down: on a
/// network whose DHCP server you do not control, have it name the appliance as next-server
/// (`--dhcp off`, `ovmf_secure_boot_pxe_shim_off`).
#[test]
fn ovmf_secure_boot_pxe_shim_proxy_stops_in_grub() {
    Cell::new("ovmf_secure_boot_pxe_shim_proxy_stops_in_grub", OvmfPxeSecureBoot, Proxy)
        .machine("52:54:00:4d:11:05", &shim_machine("sb-proxy"))
        .expect_no_boot(Duration::from_secs(45))
        .serial_shows("Fetching Netboot Image grubx64.efi")
        .serial_shows("Welcome to GRUB!")
        .daemon_log_shows("grubx64.efi")
        .daemon_log_lacks("grub/grub.cfg")
        .run();
}
