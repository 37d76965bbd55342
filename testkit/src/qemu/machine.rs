//! One VM's configuration and its QEMU command line: firmware, memory, an optional disk, one
//! NIC on a tap or on a point-to-point UDP link, the serial console to a file or this terminal,
//! an optional monitor socket, and a hard lifetime.

use super::firmware::{
    Firmware, AAVMF_CODE, AAVMF_VARS_MS, ARMVIRT_EFI, OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS, OVMF_VARS_MS,
    UBOOT_ARM64,
};
use crate::netns::Netns;
use anyhow::{Context, Result};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The I/O port of the first serial port, for SeaBIOS's serial console.
const COM1: u16 = 0x3f8;

/// A point-to-point Ethernet link between two QEMUs: UDP datagrams on 127.0.0.1, so no root,
/// bridge or tap is needed and either side may restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub appliance_port: u16,
    pub client_port: u16,
}

/// Which end of a `Link` a machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Appliance,
    Client,
}

impl Link {
    /// Two currently free UDP ports on 127.0.0.1.
    pub fn free() -> Result<Link> {
        let a = UdpSocket::bind("127.0.0.1:0").context("no free UDP port on 127.0.0.1")?;
        let b = UdpSocket::bind("127.0.0.1:0").context("no free UDP port on 127.0.0.1")?;
        Ok(Link { appliance_port: a.local_addr()?.port(), client_port: b.local_addr()?.port() })
    }

    /// The `-netdev` argument for one side.
    pub fn netdev(&self, side: Side) -> String {
        let (me, peer) = match side {
            Side::Appliance => (self.appliance_port, self.client_port),
            Side::Client => (self.client_port, self.appliance_port),
        };
        format!("socket,id=net0,udp=127.0.0.1:{peer},localaddr=127.0.0.1:{me}")
    }
}

/// What the NIC is plugged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    /// An existing persistent tap (`script=no`), e.g. on a `lab::Lab` bridge.
    Tap(String),
    /// One side of a UDP `Link`.
    Udp(Link, Side),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// `virtio-net-pci`, `virtio-net-device`, `e1000`, `e1000e`, ...
    pub model: &'static str,
    pub mac: String,
    /// Keep QEMU's option ROM (iPXE) on a PCI NIC; without it the firmware's own network stack
    /// drives the NIC (or nothing does, for a machine that boots from its disk).
    pub rom: bool,
    /// Put the NIC first in the firmware's boot order (PCI NICs), ahead of any disk.
    pub boot_first: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    /// On the chipset's IDE/AHCI controller instead of virtio.
    pub ide: bool,
}

/// Where the serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serial {
    /// A log file (tests).
    File(PathBuf),
    /// This terminal, with QEMU's monitor multiplexed on Ctrl-A C (interactive use).
    Stdio,
}

/// One VM's configuration.
#[derive(Clone, Debug)]
pub struct Machine {
    pub firmware: Firmware,
    pub memory_mb: u32,
    pub disk: Option<Disk>,
    pub nic: Nic,
    pub net: Net,
    /// Extra `-fw_cfg` items, e.g. `name=opt/org.tianocore/IPv4PXESupport,string=no`.
    pub fw_cfg: Vec<String>,
    /// Working directory: OVMF's variables, SeaBIOS's serial console port, the monitor
    /// socket, `qemu.log` and `qemu.cmdline`.
    pub dir: PathBuf,
    pub serial: Serial,
    /// A human monitor on `dir/monitor.sock` (`Vm::monitor`).
    pub monitor: bool,
    /// Show the VGA screen in a window.
    pub gui: bool,
    /// Exit instead of rebooting (clients whose payload powers off).
    pub no_reboot: bool,
    /// QEMU is ended after this long, so nothing outlives a crashed test.
    pub lifetime: Option<Duration>,
}

impl Machine {
    /// 512 MB, no disk, serial console to `dir/serial.log`, no monitor, no window, reboots
    /// allowed, no lifetime.
    pub fn new(firmware: Firmware, nic: Nic, net: Net, dir: PathBuf) -> Machine {
        Machine {
            firmware,
            memory_mb: 512,
            disk: None,
            nic,
            net,
            fw_cfg: Vec::new(),
            serial: Serial::File(dir.join("serial.log")),
            dir,
            monitor: false,
            gui: false,
            no_reboot: false,
            lifetime: None,
        }
    }

    pub fn monitor_socket(&self) -> PathBuf {
        self.dir.join("monitor.sock")
    }

    /// The command line, inside `netns` if given. Prepares `dir` as it goes: creates it,
    /// writes SeaBIOS's serial port file, copies OVMF's variable store there once (so it is
    /// kept between runs in the same directory) and removes a stale monitor socket.
    pub fn command(&self, netns: Option<&Netns>) -> Result<Command> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("failed to create {}", self.dir.display()))?;
        let program = self.firmware.program().0;
        let mut c = match netns {
            Some(ns) => ns.command(program, self.lifetime),
            None => crate::procs::limited(program, self.lifetime),
        };
        c.args(["-accel", &self.firmware.accel(), "-m", &self.memory_mb.to_string(), "-smp", "1"]);
        c.args(["-nodefaults", "-no-user-config"]);
        if self.no_reboot {
            c.arg("-no-reboot");
        }
        if self.gui {
            c.args(["-vga", "std"]);
        } else {
            c.args(["-display", "none"]);
        }
        if self.monitor {
            let monitor = self.monitor_socket();
            let _ = std::fs::remove_file(&monitor);
            c.arg("-monitor").arg(format!("unix:{},server=on,wait=off", monitor.display()));
        } else {
            c.args(["-monitor", "none"]);
        }
        match &self.serial {
            Serial::File(path) => c.arg("-serial").arg(format!("file:{}", path.display())),
            Serial::Stdio => c.args(["-serial", "mon:stdio"]),
        };
        self.firmware_args(&mut c)?;
        for item in &self.fw_cfg {
            c.arg("-fw_cfg").arg(item);
        }
        if let Some(disk) = &self.disk {
            // Network first, then the disk (a machine netbooting until it is installed), or the
            // disk alone. OVMF drops devices without a boot index from the boot order once any
            // device has one, so the disk gets the next index rather than none.
            let boot = match (self.nic.boot_first, self.firmware.pci()) {
                (true, true) => ",bootindex=1",
                // The NIC has no boot index to come after (U-Boot's NICs sit on MMIO).
                (true, false) => "",
                (false, _) => ",bootindex=0",
            };
            c.arg("-drive").arg(format!("file={},format={},if=none,id=disk0", disk.path.display(), disk.format));
            // `ide.0` is the PIIX IDE controller on `pc` and the ICH9 AHCI controller on `q35`.
            let device = if disk.ide { "ide-hd,bus=ide.0" } else { "virtio-blk-pci" };
            c.arg("-device").arg(format!("{device},drive=disk0{boot}"));
        }
        match &self.net {
            Net::Tap(tap) => c.arg("-netdev").arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no")),
            Net::Udp(link, side) => c.arg("-netdev").arg(link.netdev(*side)),
        };
        let pci = self.firmware.pci();
        let rom = if self.nic.rom || !pci { "" } else { ",romfile=" };
        let boot = if self.nic.boot_first && pci { ",bootindex=0" } else { "" };
        c.arg("-device").arg(format!("{},netdev=net0,mac={}{rom}{boot}", self.nic.model, self.nic.mac));
        Ok(c)
    }

    /// The machine type, CPU and firmware.
    fn firmware_args(&self, c: &mut Command) -> Result<()> {
        match self.firmware {
            Firmware::SeaBios => {
                // SeaBIOS's serial console (`etc/sercon-port`, a little-endian I/O port) copies
                // what option ROMs such as iPXE print to the serial port.
                let sercon = self.dir.join("sercon-port");
                std::fs::write(&sercon, COM1.to_le_bytes())?;
                c.args(["-machine", "pc"])
                    .arg("-fw_cfg")
                    .arg(format!("name=etc/sercon-port,file={}", sercon.display()));
            }
            Firmware::Ovmf => {
                c.args(["-machine", "q35"]);
                self.pflash(c, OVMF_CODE, OVMF_VARS, "OVMF_VARS.fd")?;
            }
            Firmware::UBootArm64 => {
                c.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios", UBOOT_ARM64]);
            }
            Firmware::ArmVirt => {
                c.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios", ARMVIRT_EFI]);
            }
            Firmware::OvmfSecureBoot => {
                // SMM and secure pflash: the secboot build keeps its variables (Secure Boot's
                // keys among them) out of the guest OS's reach, and does not start without them.
                c.args(["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]);
                self.pflash(c, OVMF_CODE_SECBOOT, OVMF_VARS_MS, "OVMF_VARS.ms.fd")?;
            }
            Firmware::ArmVirtSecureBoot => {
                c.args(["-machine", "virt", "-cpu", "cortex-a57"]);
                self.pflash(c, AAVMF_CODE, AAVMF_VARS_MS, "AAVMF_VARS.ms.fd")?;
            }
        }
        Ok(())
    }

    /// The firmware's code read-only in the first flash, and this VM's copy of `vars` (made once,
    /// as `name` in its directory) in the second.
    fn pflash(&self, c: &mut Command, code: &str, vars: &str, name: &str) -> Result<()> {
        let copy = self.dir.join(name);
        if !copy.exists() {
            std::fs::copy(vars, &copy).with_context(|| format!("failed to copy {vars}"))?;
        }
        c.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"));
        c.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", copy.display()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::render_cmdline;

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("testkit-machine-{}-{name}", std::process::id()))
    }

    fn nic(model: &'static str, rom: bool, boot_first: bool) -> Nic {
        Nic { model, mac: "52:54:00:00:00:01".into(), rom, boot_first }
    }

    #[test]
    fn a_seabios_client_on_a_tap_keeps_the_ipxe_rom() {
        let d = dir("seabios");
        let m = Machine::new(Firmware::SeaBios, nic("e1000", true, false), Net::Tap("tap0".into()), d.clone());
        let line = render_cmdline(&m.command(None).unwrap());
        let want = format!(
            "qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nodefaults -no-user-config -display none -monitor none \
             -serial file:{d}/serial.log -machine pc -fw_cfg name=etc/sercon-port,file={d}/sercon-port \
             -netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device e1000,netdev=net0,mac=52:54:00:00:00:01",
            d = d.display()
        );
        assert_eq!(line, want);
        assert_eq!(std::fs::read(d.join("sercon-port")).unwrap(), [0xf8, 0x03]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn an_ovmf_appliance_boots_its_disk_first_and_keeps_its_variables() {
        let d = dir("ovmf");
        let link = Link { appliance_port: 47700, client_port: 47701 };
        let mut m =
            Machine::new(Firmware::Ovmf, nic("e1000e", false, false), Net::Udp(link, Side::Appliance), d.clone());
        m.disk = Some(Disk { path: "/x/disk.qcow2".into(), format: "qcow2", ide: true });
        m.monitor = true;
        m.lifetime = Some(Duration::from_secs(600));
        if !std::path::Path::new(OVMF_VARS).is_file() {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("OVMF_VARS.fd"), b"vars").unwrap();
        }
        let line = render_cmdline(&m.command(None).unwrap());
        for part in [
            "timeout -k 5 600 qemu-system-x86_64 -accel tcg",
            &format!("-monitor unix:{}/monitor.sock,server=on,wait=off", d.display()),
            &format!("-drive if=pflash,format=raw,unit=1,file={}/OVMF_VARS.fd", d.display()),
            "-drive file=/x/disk.qcow2,format=qcow2,if=none,id=disk0 -device ide-hd,bus=ide.0,drive=disk0,bootindex=0",
            "-netdev socket,id=net0,udp=127.0.0.1:47701,localaddr=127.0.0.1:47700",
            "-device e1000e,netdev=net0,mac=52:54:00:00:00:01,romfile=",
        ] {
            assert!(line.contains(part), "{line}\nlacks {part}");
        }
        assert!(d.join("OVMF_VARS.fd").is_file());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_machine_installed_from_the_network_boots_its_nic_then_its_disk() {
        let d = dir("netfirst");
        let mut m =
            Machine::new(Firmware::SeaBios, nic("virtio-net-pci", true, true), Net::Tap("tap0".into()), d.clone());
        m.disk = Some(Disk { path: "/x/disk.img".into(), format: "raw", ide: false });
        let line = render_cmdline(&m.command(None).unwrap());
        assert!(line.contains("-device virtio-blk-pci,drive=disk0,bootindex=1"), "{line}");
        assert!(line.ends_with("-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=0"), "{line}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn secure_boot_firmware_gets_smm_secure_flash_and_the_microsoft_keys() {
        let d = dir("secure-boot");
        let link = Net::Udp(Link { appliance_port: 1, client_port: 2 }, Side::Client);
        for (firmware, parts) in [
            (
                Firmware::OvmfSecureBoot,
                [
                    "-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on".to_string(),
                    "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
                        .to_string(),
                    format!("-drive if=pflash,format=raw,unit=1,file={}/OVMF_VARS.ms.fd", d.display()),
                ],
            ),
            (
                Firmware::ArmVirtSecureBoot,
                [
                    "qemu-system-aarch64 -accel tcg".to_string(),
                    "-machine virt -cpu cortex-a57 -drive if=pflash,format=raw,unit=0,readonly=on,\
                     file=/usr/share/AAVMF/AAVMF_CODE.ms.fd"
                        .to_string(),
                    format!("-drive if=pflash,format=raw,unit=1,file={}/AAVMF_VARS.ms.fd", d.display()),
                ],
            ),
        ] {
            // Without the firmware package the copy would fail: stand in for the store.
            std::fs::create_dir_all(&d).unwrap();
            for name in ["OVMF_VARS.ms.fd", "AAVMF_VARS.ms.fd"] {
                std::fs::write(d.join(name), b"vars").unwrap();
            }
            let m = Machine::new(firmware, nic("virtio-net-pci", false, false), link.clone(), d.clone());
            let line = render_cmdline(&m.command(None).unwrap());
            for part in &parts {
                assert!(line.contains(part.as_str()), "{line}\nlacks {part}");
            }
            assert!(line.ends_with("-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,romfile="), "{line}");
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn uboot_nics_sit_on_mmio_without_rom_or_boot_index() {
        let d = dir("uboot");
        let mut m = Machine::new(
            Firmware::UBootArm64,
            nic("virtio-net-device", false, true),
            Net::Udp(Link { appliance_port: 1, client_port: 2 }, Side::Client),
            d.clone(),
        );
        m.fw_cfg.push("name=opt/x,string=no".into());
        let line = render_cmdline(&m.command(None).unwrap());
        assert!(line.starts_with("qemu-system-aarch64 -accel tcg"), "{line}");
        assert!(line.contains("-machine virt -cpu cortex-a57 -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin"), "{line}");
        assert!(line.contains("-fw_cfg name=opt/x,string=no"), "{line}");
        assert!(line.ends_with("-device virtio-net-device,netdev=net0,mac=52:54:00:00:00:01"), "{line}");
        let _ = std::fs::remove_dir_all(d);
    }
}
