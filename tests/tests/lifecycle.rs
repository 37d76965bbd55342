//! The provisioning lifecycle on real firmware (issue 15): one VM per cell with an empty disk,
//! network first, then disk. It netboots the deploy profile, which writes the demo disk and
//! reports `installed`; the daemon is killed with SIGKILL and restarted between that report and
//! the reboot; the machine netboots, is told to boot locally, and its firmware boots the disk
//! (`DEMO-DISK-OK`); after `appliance rearm` and a power-cycle it netboots the deploy profile
//! again. `boot_tests::lifecycle` has the steps; times go to `target/qemu-tests/summary.tsv`.
//!
//! Needs root, QEMU, SeaBIOS, OVMF, ipxe-qemu and `cargo xtask fetch` (which builds the demo
//! disk into the blob cache). `BOOT_TESTS_TIMEOUT` (seconds) is each phase's limit (240).

use boot_tests::client::Client::{OvmfPxe, SeaBiosVirtio};
use boot_tests::lifecycle::Lifecycle;

/// SeaBIOS + QEMU's iPXE ROM on virtio-net: the local boot is iPXE's `sanboot --drive 0x80`.
#[test]
fn lifecycle_seabios() {
    Lifecycle::new("lifecycle_seabios", SeaBiosVirtio, "52:54:00:4d:10:01").run();
}

/// OVMF's own PXE → ipxe.efi: the local boot is iPXE's `exit` back to the boot manager, which
/// goes on to the disk.
#[test]
fn lifecycle_ovmf() {
    Lifecycle::new("lifecycle_ovmf", OvmfPxe, "52:54:00:4d:10:02").run();
}

/// OVMF's own PXE on the shim chain (Secure Boot off): shim → Debian's signed GRUB, whose
/// config, once the machine is installed, chainloads the disk's own loader (a GRUB `exit`
/// returns success, and OVMF then stops at its menu: docs/firmware.md#grub-exit-under-uefi).
#[test]
fn lifecycle_ovmf_shim() {
    let mut cell = Lifecycle::new("lifecycle_ovmf_shim", OvmfPxe, "52:54:00:4d:10:03");
    cell.entry_extra = "uefi_chain: shim".into();
    cell.run();
}
