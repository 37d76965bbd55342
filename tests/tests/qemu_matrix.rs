//! The QEMU boot matrix (issue 4): real firmware netboots from `appliance serve` on a private
//! bridge in a network namespace; a cell passes when the payload prints its marker naming the
//! expected profile, architecture and version (the one `appliance::config_dir::load` computes).
//!
//! Columns: `server` (we are the DHCP server), `proxy` (a foreign dnsmasq hands out addresses,
//! we add boot information), `off` (the foreign dnsmasq names us as next-server with one fixed
//! boot file, `undionly.kpxe`, for every client; we recognise the client and serve the right
//! bytes under that name).
//!
//! Needs root, QEMU and the firmware packages, and `cargo xtask fetch`; a missing piece fails
//! the cell with its name. Every cell writes `target/qemu-tests/<test>/` (serial.log,
//! daemon.log, dnsmasq.log, qemu.cmdline, config/, result.txt) and appends a line to
//! `target/qemu-tests/summary.tsv`. At most two VMs run at once (`BOOT_TESTS_VMS`);
//! `BOOT_TESTS_TIMEOUT` (seconds) changes the per-cell limit.

use appliance_core::catalog::DhcpMode::{Off, Proxy, Server};
use boot_tests::client::Client::*;
use boot_tests::matrix::Cell;
use std::time::Duration;
use testkit::lab::SITE_IP;

const TINY_LIVE: &str = "profile: tiny-live";

fn known(hostname: &str) -> String {
    format!("{{ hostname: {hostname}, {TINY_LIVE} }}")
}

// --- SeaBIOS + QEMU's iPXE ROM (e1000, the default ROM) --------------------------------------

/// Also the status pages in a real browser: the machine's row and timeline, read from the DOM
/// headless Chromium builds (screenshots in the cell's folder).
#[test]
fn seabios_ipxe_rom_server() {
    Cell::new("seabios_ipxe_rom_server", SeaBiosIpxeRom, Server)
        .machine("52:54:00:4d:01:01", &known("bios-ipxe"))
        .status_pages()
        .run();
}

#[test]
fn seabios_ipxe_rom_proxy() {
    Cell::new("seabios_ipxe_rom_proxy", SeaBiosIpxeRom, Proxy).machine("52:54:00:4d:01:02", &known("bios-ipxe")).run();
}

#[test]
fn seabios_ipxe_rom_off() {
    Cell::new("seabios_ipxe_rom_off", SeaBiosIpxeRom, Off).machine("52:54:00:4d:01:03", &known("bios-ipxe")).run();
}

// --- SeaBIOS, stock-PXE path: chain undionly.kpxe first (`chain_ipxe: true`) ------------------

fn chained(hostname: &str) -> String {
    format!("{{ hostname: {hostname}, {TINY_LIVE}, chain_ipxe: true }}")
}

#[test]
fn seabios_chain_undionly_server() {
    Cell::new("seabios_chain_undionly_server", SeaBiosIpxeRom, Server)
        .machine("52:54:00:4d:02:01", &chained("bios-chain"))
        .daemon_log_shows("path=undionly.kpxe")
        .run();
}

#[test]
fn seabios_chain_undionly_proxy() {
    Cell::new("seabios_chain_undionly_proxy", SeaBiosIpxeRom, Proxy)
        .machine("52:54:00:4d:02:02", &chained("bios-chain"))
        .daemon_log_shows("path=undionly.kpxe")
        .run();
}

// --- OVMF's own PXE (virtio-net-pci, empty romfile) → ipxe.efi --------------------------------

#[test]
fn ovmf_pxe_server() {
    Cell::new("ovmf_pxe_server", OvmfPxe, Server).machine("52:54:00:4d:03:01", &known("uefi-pxe")).run();
}

#[test]
fn ovmf_pxe_proxy() {
    Cell::new("ovmf_pxe_proxy", OvmfPxe, Proxy).machine("52:54:00:4d:03:02", &known("uefi-pxe")).run();
}

#[test]
fn ovmf_pxe_off() {
    Cell::new("ovmf_pxe_off", OvmfPxe, Off).machine("52:54:00:4d:03:03", &known("uefi-pxe")).run();
}

// --- OVMF UEFI HTTP Boot (HTTPClient) ------------------------------------------------------------

#[test]
fn ovmf_http_boot_server() {
    Cell::new("ovmf_http_boot_server", OvmfHttp, Server).machine("52:54:00:4d:04:01", &known("uefi-http")).run();
}

#[test]
fn ovmf_http_boot_proxy() {
    Cell::new("ovmf_http_boot_proxy", OvmfHttp, Proxy).machine("52:54:00:4d:04:02", &known("uefi-http")).run();
}

// --- U-Boot qemu_arm64 (virtio-net-device) → boot.scr.uimg → pxelinux.cfg ---------------------

#[test]
fn uboot_arm64_server() {
    Cell::new("uboot_arm64_server", UBootArm64, Server).machine("52:54:00:4d:05:01", &known("uboot")).run();
}

/// Stock U-Boot (2023.01, built without `CONFIG_SERVERIP_FROM_PROXYDHCP`) takes the site's
/// DHCP offer and ignores our proxy offer: it asks the site's DHCP host (10.77.0.2, the offer's
/// `siaddr`) for `boot.scr.uimg`, times out, retries as EFI, and boots nothing of ours. This
/// cell pins that behaviour down: no marker within the bounded time, the console shows the TFTP
/// attempt at the site's address, and our daemon's log shows it did see the board's DHCP.
///
/// Operator guidance: proxy mode cannot boot stock U-Boot boards. On a network whose DHCP you
/// do not control, have the site DHCP server name the appliance as next-server (off mode: its
/// reply's `siaddr`, any boot file name; U-Boot asks for `boot.scr.uimg` by itself and the
/// appliance recognises the board by MAC), or build U-Boot with
/// `CONFIG_SERVERIP_FROM_PROXYDHCP=y`, or set `serverip` in the board's environment.
#[test]
fn uboot_arm64_proxy_is_not_booted() {
    Cell::new("uboot_arm64_proxy_is_not_booted", UBootArm64, Proxy)
        .machine("52:54:00:4d:05:02", &known("uboot"))
        .expect_no_boot(Duration::from_secs(60))
        .serial_shows(&format!("TFTP from server {SITE_IP}"))
        .run();
}

#[test]
fn uboot_arm64_off() {
    Cell::new("uboot_arm64_off", UBootArm64, Off).machine("52:54:00:4d:05:03", &known("uboot")).run();
}

// --- ArmVirt EDK2 (QEMU_EFI.fd) → GRUB arm64 → grub.cfg ------------------------------------------

#[test]
fn armvirt_grub_server() {
    Cell::new("armvirt_grub_server", ArmVirtEdk2, Server).machine("52:54:00:4d:06:01", &known("armvirt")).run();
}

#[test]
fn armvirt_grub_proxy() {
    Cell::new("armvirt_grub_proxy", ArmVirtEdk2, Proxy).machine("52:54:00:4d:06:02", &known("armvirt")).run();
}

#[test]
fn armvirt_grub_off() {
    Cell::new("armvirt_grub_off", ArmVirtEdk2, Off).machine("52:54:00:4d:06:03", &known("armvirt")).run();
}

// --- Decisions: MAC database, unknown machines, vendor (OUI) rules -------------------------------

/// A machine in the MAC database gets its own profile: tiny-rescue (whose /init prints the marker
/// and opens a shell instead of powering off; the harness stops the VM at the marker).
#[test]
fn mac_database_picks_the_profile() {
    Cell::new("mac_database_picks_the_profile", SeaBiosIpxeRom, Server)
        .machine("52:54:00:4d:07:01", "{ hostname: rescue-me, profile: tiny-rescue }")
        .expect_boot("tiny-rescue")
        // On the marker line itself (the kernel command line): the VM is stopped at the marker,
        // so what init prints after it may never reach the log.
        .serial_shows("appliance.rescue=1")
        .run();
}

/// A machine not in the MAC database gets the menu (the shipped policy) and, nobody pressing a
/// key, the menu's default (tiny-live) after the timeout (2 s here).
#[test]
fn unknown_machine_gets_the_menu_default() {
    Cell::new("unknown_machine_gets_the_menu_default", SeaBiosIpxeRom, Server)
        .mac("52:54:00:4d:07:02")
        .menu_timeout(2)
        .serial_shows("Lab network boot")
        .daemon_log_shows("unknown-machine policy")
        .run();
}

/// The vendor rule used by the OUI cells: boards with OUI 52:54:01 are arm64 and boot tiny-live.
const OUI_RULE: &str = "{ oui: '52:54:01', arch: arm64, profile: tiny-live, comment: boot-test boards }";

/// A vendor (OUI) rule decides the architecture when the daemon has no option 93 for the client:
/// off mode on a network where the site's DHCP does not reach us (a relayed site DHCP; emulated
/// by moving our DHCP listener to a port no client sends to, so nothing is overheard). An
/// unknown U-Boot board with OUI 52:54:01 fetches `boot.scr.uimg`, then asks for
/// `pxelinux.cfg/01-<mac>`: only the vendor rule says what it is, and it must get the arm64
/// tiny-live config at once (the daemon log names the rule).
#[test]
fn vendor_rule_decides_the_architecture_uboot() {
    Cell::new("vendor_rule_decides_the_architecture_uboot", UBootArm64, Off)
        .mac("52:54:01:4d:08:01")
        .vendor_rule(OUI_RULE)
        .daemon_dhcp_port(1067)
        .daemon_log_shows("arch_rule=vendor rule 52:54:01")
        .run();
}

/// The same for UEFI firmware: an unknown ArmVirt EDK2 machine with OUI 52:54:01, no DHCP
/// overheard, asks by TFTP for the site's fixed `undionly.kpxe`. Only the vendor rule says it is
/// arm64, so it must get GRUB for arm64 under that name (not the x86 `undionly.kpxe`), then the
/// arm64 kernel.
#[test]
fn vendor_rule_decides_the_architecture_uefi() {
    Cell::new("vendor_rule_decides_the_architecture_uefi", ArmVirtEdk2, Off)
        .mac("52:54:01:4d:08:02")
        .vendor_rule(OUI_RULE)
        .daemon_dhcp_port(1067)
        .daemon_log_shows("arch_rule=vendor rule 52:54:01")
        .run();
}
