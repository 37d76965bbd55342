//! `cargo xtask vm`: boots the appliance image in QEMU (TCG) on a private network, with its
//! serial console in the terminal; `cargo xtask vm --client bios|uefi` starts a machine that
//! network-boots from it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use testkit::qemu::firmware::{self, E1000_ROM};
use testkit::qemu::{Disk, Firmware, Link, Machine, Net, Nic, Serial, Side, Vm};

use crate::project_root;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FirmwareArg {
    /// SeaBIOS (the client boots by its NIC's iPXE ROM).
    Bios,
    /// OVMF (the client boots by its NIC's iPXE EFI ROM).
    Uefi,
    /// U-Boot on arm64 (clients only; TFTP, boot.scr.uimg and pxelinux.cfg).
    UbootArm64,
}

impl FirmwareArg {
    fn firmware(self) -> Firmware {
        match self {
            FirmwareArg::Bios => Firmware::SeaBios,
            FirmwareArg::Uefi => Firmware::Ovmf,
            FirmwareArg::UbootArm64 => Firmware::UBootArm64,
        }
    }

    /// As on the command line; also the name of the machine's folder under target/vm/<recipe>/.
    fn name(self) -> &'static str {
        match self {
            FirmwareArg::Bios => "bios",
            FirmwareArg::Uefi => "uefi",
            FirmwareArg::UbootArm64 => "uboot-arm64",
        }
    }
}

/// What QEMU needs for the appliance VM and its clients, as "path (Debian package p)".
fn missing_prerequisites() -> Vec<String> {
    firmware::missing(&FIRMWARES, &FILES).iter().map(ToString::to_string).collect()
}

/// The firmwares `cargo xtask vm` can start, for the appliance and its clients.
pub(crate) const FIRMWARES: [Firmware; 3] = [Firmware::SeaBios, Firmware::Ovmf, Firmware::UBootArm64];
/// Other files it needs, with their Debian packages.
pub(crate) const FILES: [(&str, &str); 2] = [(E1000_ROM, "ipxe-qemu"), ("/usr/bin/qemu-img", "qemu-utils")];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image recipe (the image is built first, unless --no-build).
    #[arg(long, value_name = "FILE", default_value = "images/default.yaml")]
    pub recipe: PathBuf,

    /// Firmware of the appliance VM.
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: FirmwareArg,

    /// Instead of the appliance, start a client that network-boots from the running appliance VM.
    #[arg(long, value_enum, value_name = "FIRMWARE")]
    pub client: Option<FirmwareArg>,

    /// The client's MAC address.
    #[arg(long, default_value = "52:54:00:77:00:02")]
    pub mac: String,

    /// The private link: the appliance uses UDP 127.0.0.1:PORT, the client PORT+1.
    #[arg(long, default_value_t = 47700)]
    pub port: u16,

    /// Use the image already in target/images instead of building it.
    #[arg(long)]
    pub no_build: bool,

    /// Forget the appliance's state (leases) kept between runs in target/vm/<name>/.
    #[arg(long)]
    pub fresh: bool,

    /// Show the VGA screen in a window as well.
    #[arg(long)]
    pub gui: bool,
}

pub fn run(args: &Args) -> Result<()> {
    crate::host::prepare(crate::host::Task::Vm, crate::host::Pins::Download)?;
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        bail!("cannot start QEMU, missing: {}", missing.join(", "));
    }
    let link = Link { appliance_port: args.port, client_port: args.port.checked_add(1).context("--port too large")? };
    let recipe = crate::image::recipe::load(&crate::image::input_path(&args.recipe))
        .map_err(|e| anyhow::anyhow!("{e}\n{} error(s) in the recipe", e.0.len()))?;
    let dir = project_root().join("target/vm").join(&recipe.name);

    if let Some(client) = args.client {
        let arm = client.firmware() == Firmware::UBootArm64;
        let nic = Nic {
            model: if arm { "virtio-net-device" } else { "e1000" },
            mac: args.mac.clone(),
            rom: true,
            boot_first: true,
        };
        let mut machine = Machine::new(
            client.firmware(),
            nic,
            Net::Udp(link, Side::Client),
            dir.join(format!("client-{}", client.name())),
        );
        machine.memory_mb = if arm { 1024 } else { 512 };
        machine.serial = Serial::Stdio;
        machine.monitor = true;
        machine.gui = args.gui;
        println!(
            "client {} ({}, {}) network-booting from the appliance VM on UDP 127.0.0.1:{}",
            args.mac,
            client.name(),
            if arm { "virtio-net-device" } else { "e1000 with QEMU's iPXE ROM" },
            link.appliance_port
        );
        println!("serial console below; Ctrl-A X quits\n");
        let mut vm = Vm::start("client", &machine, None)?;
        vm.wait()?;
        return Ok(());
    }

    let image = if args.no_build {
        project_root().join("target/images").join(format!("{}.img", recipe.name))
    } else {
        crate::image::build(&crate::image::Args {
            recipe: args.recipe.clone(),
            out: None,
            no_qcow2: true,
            daemon_profile: Default::default(),
        })?
        .image
    };
    if !image.is_file() {
        bail!(
            "{} does not exist; build it with `cargo xtask image --recipe {}`",
            image.display(),
            args.recipe.display()
        );
    }
    let firmware = args.firmware.firmware();
    if firmware.is_arm64() {
        bail!("the appliance runs on x86-64 (--firmware bios or uefi); U-Boot arm64 is for --client");
    }
    let vm_dir = dir.join(args.firmware.name());
    std::fs::create_dir_all(&vm_dir)?;
    // The appliance writes its state (leases) to a qcow2 overlay, kept between runs as long as
    // the image stays the same.
    let overlay = vm_dir.join("disk.qcow2");
    let stamp = vm_dir.join("image.sha256");
    let image_sha = crate::debian::sha256_file(&image)?;
    let same_image = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == image_sha);
    if args.fresh || !same_image || !overlay.is_file() {
        if overlay.is_file() {
            println!("starting from the pristine image ({})", if args.fresh { "--fresh" } else { "the image changed" });
        }
        let _ = std::fs::remove_file(&overlay);
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image)
            .arg(&overlay)
            .status()
            .context("failed to run qemu-img (package qemu-utils)")?;
        if !status.success() {
            bail!("qemu-img create failed for {}", overlay.display());
        }
        std::fs::write(&stamp, &image_sha)?;
    } else {
        println!("keeping the appliance's state from the last run ({}); --fresh forgets it", overlay.display());
    }

    let nic = Nic { model: "virtio-net-pci", mac: "52:54:00:77:00:fe".into(), rom: false, boot_first: false };
    let mut machine = Machine::new(firmware, nic, Net::Udp(link, Side::Appliance), vm_dir);
    machine.disk = Some(Disk { path: overlay, format: "qcow2", ide: false });
    machine.serial = Serial::Stdio;
    machine.monitor = true;
    machine.gui = args.gui;
    let client_cmd = format!(
        "qemu-system-x86_64 -accel tcg -m 512 -nographic -boot n -netdev {} -device e1000,netdev=net0,mac={}",
        link.netdev(Side::Client),
        args.mac
    );
    println!(
        "\nappliance VM: {} ({}), {} firmware, TCG",
        image.display(),
        recipe.name,
        if firmware == Firmware::SeaBios { "SeaBIOS" } else { "OVMF" }
    );
    println!(
        "private network: a point-to-point Ethernet link over UDP 127.0.0.1:{} (appliance) <-> 127.0.0.1:{} (client)",
        link.appliance_port, link.client_port
    );
    println!("attach a client from another terminal (one at a time):");
    println!("  cargo xtask vm --client bios     # SeaBIOS, e1000 with QEMU's iPXE ROM");
    println!("  cargo xtask vm --client uefi     # OVMF, e1000 with QEMU's iPXE EFI ROM");
    println!("  cargo xtask vm --client uboot-arm64 --mac 52:54:00:77:00:05   # U-Boot arm64 (arm-board)");
    println!("or with your own QEMU:\n  {client_cmd}");
    println!(
        "stop: `poweroff` in the appliance's shell (press Enter), or `system_powerdown` in QEMU's monitor \
         (Ctrl-A C); Ctrl-A X quits QEMU at once\n"
    );
    let mut vm = Vm::start("appliance", &machine, None)?;
    let status = vm.wait()?;
    println!("appliance VM exited ({status})");
    Ok(())
}
