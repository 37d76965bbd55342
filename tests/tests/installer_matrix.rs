//! The Debian 12 installer in the boot matrix (issue 16): the shipped `debian-installer`
//! profile, booted by each kind of firmware as the example machines of `profiles/machines.yaml`
//! (one per firmware, each with its own `vars`), must fetch its preseed from us and run to the
//! archive mirror step, past every question the preseed answers (`boot_tests::installer`).
//!
//! Columns: `server` (our DHCP gives the installer its address, router, name server and
//! domain), `proxy` (the site's dnsmasq gives all of that; we add boot information for the
//! firmware only, and nothing to the installer's own DHCP), and for U-Boot, which ignores
//! proxy offers (docs/firmware.md#u-boot-behind-proxydhcp), `off` (the site names us as
//! next-server). The VM stops as soon as the mirror step shows.
//!
//! Needs what `qemu_matrix` needs, and the installer's blobs from `cargo xtask fetch`.

use appliance_core::catalog::DhcpMode::{self, Off, Proxy, Server};
use boot_tests::client::Client::{self, *};
use boot_tests::matrix::Cell;

/// The example machines of `profiles/machines.yaml` that boot the installer.
const BIOS: &str = "52:54:00:77:00:11";
const UEFI: &str = "52:54:00:77:00:12";
const UBOOT: &str = "52:54:00:77:00:13";
const ARMVIRT: &str = "52:54:00:77:00:14";

fn installer(name: &str, client: Client, mode: DhcpMode, mac: &str) {
    Cell::new(name, client, mode).mac(mac).expect_installer().run();
}

#[test]
fn debian_installer_seabios_server() {
    installer("debian_installer_seabios_server", SeaBiosIpxeRom, Server, BIOS);
}

#[test]
fn debian_installer_seabios_proxy() {
    installer("debian_installer_seabios_proxy", SeaBiosIpxeRom, Proxy, BIOS);
}

#[test]
fn debian_installer_ovmf_server() {
    installer("debian_installer_ovmf_server", OvmfPxe, Server, UEFI);
}

#[test]
fn debian_installer_ovmf_proxy() {
    installer("debian_installer_ovmf_proxy", OvmfPxe, Proxy, UEFI);
}

#[test]
fn debian_installer_uboot_server() {
    installer("debian_installer_uboot_server", UBootArm64, Server, UBOOT);
}

#[test]
fn debian_installer_uboot_off() {
    installer("debian_installer_uboot_off", UBootArm64, Off, UBOOT);
}

#[test]
fn debian_installer_armvirt_server() {
    installer("debian_installer_armvirt_server", ArmVirtEdk2, Server, ARMVIRT);
}

#[test]
fn debian_installer_armvirt_proxy() {
    installer("debian_installer_armvirt_proxy", ArmVirtEdk2, Proxy, ARMVIRT);
}
