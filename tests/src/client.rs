//! The matrix's client machines: which firmware boots, over which NIC, and what its console
//! shows when it takes the boot path its row is about. Each runs in QEMU on a tap on the test's
//! bridge, its serial console in `serial.log`, QEMU's own messages in `qemu.log`, the command
//! line in `qemu.cmdline`.

use appliance_core::arch::Arch;
use std::path::Path;
use std::time::Duration;
use testkit::qemu::firmware::{E1000_ROM, VIRTIO_ROM};
use testkit::qemu::{Firmware, Machine, Net, Nic};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// SeaBIOS with QEMU's default e1000 option ROM, which is iPXE.
    SeaBiosIpxeRom,
    /// SeaBIOS with QEMU's iPXE ROM on virtio-net-pci: for payloads whose kernel drives virtio
    /// NICs only (Debian's cloud kernel in the deploy profile).
    SeaBiosVirtio,
    /// OVMF's own PXE stack: virtio-net-pci without option ROM.
    OvmfPxe,
    /// OVMF UEFI HTTP Boot: as `OvmfPxe`, with PXE switched off through fw_cfg so the boot
    /// manager goes on to its "UEFI HTTPv4" entry.
    OvmfHttp,
    /// U-Boot 2023.01 `qemu_arm64` on virtio-net-device (MMIO; the PCI one gets a wrong MAC).
    UBootArm64,
    /// ArmVirt EDK2 (`QEMU_EFI.fd`) on virtio-net-pci without option ROM.
    ArmVirtEdk2,
    /// `OvmfPxe` with Secure Boot on and Microsoft's keys enrolled.
    OvmfPxeSecureBoot,
    /// `OvmfHttp` with Secure Boot on and Microsoft's keys enrolled.
    OvmfHttpSecureBoot,
    /// ArmVirt EDK2 (AAVMF) with Secure Boot on and Microsoft's keys enrolled, PXE.
    ArmVirtSecureBoot,
    /// `ArmVirtSecureBoot` by UEFI HTTP Boot (PXE switched off through fw_cfg, as for `OvmfHttp`).
    ArmVirtHttpSecureBoot,
}

impl Client {
    pub fn firmware(self) -> Firmware {
        match self {
            Client::SeaBiosIpxeRom | Client::SeaBiosVirtio => Firmware::SeaBios,
            Client::OvmfPxe | Client::OvmfHttp => Firmware::Ovmf,
            Client::UBootArm64 => Firmware::UBootArm64,
            Client::ArmVirtEdk2 => Firmware::ArmVirt,
            Client::OvmfPxeSecureBoot | Client::OvmfHttpSecureBoot => Firmware::OvmfSecureBoot,
            Client::ArmVirtSecureBoot | Client::ArmVirtHttpSecureBoot => Firmware::ArmVirtSecureBoot,
        }
    }

    pub fn arch(self) -> Arch {
        if self.firmware().is_arm64() {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// Files besides the firmware's own, with the Debian package that has each.
    pub fn extra_files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Client::SeaBiosIpxeRom => &[(E1000_ROM, "ipxe-qemu")],
            Client::SeaBiosVirtio => &[(VIRTIO_ROM, "ipxe-qemu")],
            _ => &[],
        }
    }

    /// What the firmware prints on the serial console when it takes the boot path the matrix
    /// row is about (so a fallback path cannot pass the cell unnoticed).
    pub fn path_texts(self) -> &'static [&'static str] {
        match self {
            // SeaBIOS's serial console (sercon) shows the iPXE ROM's screen.
            Client::SeaBiosIpxeRom | Client::SeaBiosVirtio => &["iPXE initialising devices"],
            Client::OvmfPxe | Client::OvmfPxeSecureBoot => &[">>Start PXE over IPv4"],
            Client::OvmfHttp | Client::OvmfHttpSecureBoot => &[">>Start HTTP Boot over IPv4"],
            Client::UBootArm64 => &["Retrieving file: pxelinux.cfg/"],
            Client::ArmVirtEdk2 | Client::ArmVirtSecureBoot => &[">>Start PXE over IPv4", "Welcome to GRUB!"],
            Client::ArmVirtHttpSecureBoot => &[">>Start HTTP Boot over IPv4", "Welcome to GRUB!"],
        }
    }

    /// The machine, on `tap`, with its files in `out`. 512 MB for every client: x86 (14 MB
    /// kernel) and arm64 (33 MB uncompressed Image, loaded by U-Boot at fixed addresses or by
    /// GRUB) both boot in it. Without a disk every firmware goes on to the network by itself.
    pub fn machine(self, mac: &str, tap: &str, out: &Path, lifetime: Duration) -> Machine {
        let (model, rom) = match self {
            Client::SeaBiosIpxeRom => ("e1000", true),
            Client::SeaBiosVirtio => ("virtio-net-pci", true),
            Client::OvmfPxe
            | Client::OvmfHttp
            | Client::ArmVirtEdk2
            | Client::OvmfPxeSecureBoot
            | Client::OvmfHttpSecureBoot
            | Client::ArmVirtSecureBoot
            | Client::ArmVirtHttpSecureBoot => ("virtio-net-pci", false),
            Client::UBootArm64 => ("virtio-net-device", false),
        };
        let nic = Nic { model, mac: mac.to_string(), rom, boot_first: false };
        let mut machine = Machine::new(self.firmware(), nic, Net::Tap(tap.to_string()), out.to_path_buf());
        machine.no_reboot = true;
        machine.lifetime = Some(lifetime);
        if matches!(self, Client::OvmfHttp | Client::OvmfHttpSecureBoot | Client::ArmVirtHttpSecureBoot) {
            machine.fw_cfg.push("name=opt/org.tianocore/IPv4PXESupport,string=no".into());
            machine.fw_cfg.push("name=opt/org.tianocore/IPv6PXESupport,string=no".into());
        }
        machine
    }
}
