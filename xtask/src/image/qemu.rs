//! QEMU machines for the appliance image and for the machines that network-boot from it:
//! the appliance VM (its disk image, SeaBIOS or OVMF) and client VMs (firmware PXE / iPXE
//! ROMs), joined by a private point-to-point Ethernet link (UDP datagrams on loopback, so no
//! root, bridge or tap is needed and either side may restart).
//!
//! Used by `cargo xtask vm` and by the image's end-to-end test (`xtask/tests/image.rs`
//! includes this file), so it depends on std and anyhow only. x86 guests run under TCG:
//! KVM is a broken nested hypervisor on the build machines (docs/firmware.md#kvm-and-tcg).

#![allow(dead_code)]

use std::io::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const QEMU: &str = "qemu-system-x86_64";
pub const QEMU_ARM64: &str = "qemu-system-aarch64";
/// U-Boot 2023.01 for QEMU's arm64 `virt` machine.
pub const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// The option ROM QEMU gives an e1000 NIC: iPXE (BIOS and EFI).
pub const E1000_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000.rom";

/// Files the VMs need, each with the Debian package that ships it.
pub const PREREQUISITES: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    (SEABIOS, "seabios"),
    (OVMF_CODE, "ovmf"),
    (OVMF_VARS, "ovmf"),
    (E1000_ROM, "ipxe-qemu"),
    ("/usr/bin/qemu-img", "qemu-utils"),
    ("/usr/bin/qemu-system-aarch64", "qemu-system-arm"),
    (UBOOT_ARM64, "u-boot-qemu"),
];

/// Missing prerequisites, as "path (Debian package p)".
pub fn missing_prerequisites() -> Vec<String> {
    PREREQUISITES
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, package)| format!("{path} (Debian package {package})"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on QEMU's `pc` machine.
    Bios,
    /// OVMF on `q35`, with a private copy of the variable store.
    Uefi,
    /// U-Boot on QEMU's arm64 `virt` machine (clients only).
    UBootArm64,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UBootArm64 => "uboot-arm64",
        }
    }
}

/// Both ends of the appliance's private link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub appliance_port: u16,
    pub client_port: u16,
}

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
        format!("socket,id=lan,udp=127.0.0.1:{peer},localaddr=127.0.0.1:{me}")
    }
}

/// Where the serial console goes.
#[derive(Clone, Debug)]
pub enum Serial {
    /// A log file (tests).
    File(PathBuf),
    /// The terminal, with QEMU's monitor multiplexed on Ctrl-A C (interactive `xtask vm`).
    Stdio,
}

/// One VM's configuration.
#[derive(Clone, Debug)]
pub struct Machine {
    pub firmware: Firmware,
    pub memory_mb: u32,
    /// A disk image and its format (raw or qcow2); `ide` attaches it to the chipset's IDE/AHCI
    /// controller instead of virtio.
    pub disk: Option<(PathBuf, &'static str)>,
    pub disk_ide: bool,
    /// `virtio-net-pci`, `e1000`, `e1000e`, ...
    pub nic: &'static str,
    /// Keep QEMU's iPXE option ROM on the NIC (clients booting by iPXE); the appliance boots
    /// from its disk and goes without.
    pub nic_rom: bool,
    pub mac: String,
    pub link: Link,
    pub side: Side,
    /// Boot from the network (clients) instead of the disk.
    pub boot_network: bool,
    /// Working directory: OVMF variables, the monitor socket, logs.
    pub dir: PathBuf,
    pub serial: Serial,
    /// Show the VGA screen in a window (interactive use).
    pub gui: bool,
    /// Exit instead of rebooting (clients whose payload powers off).
    pub no_reboot: bool,
    /// QEMU is killed after this long (`timeout`), so nothing outlives a crashed test.
    pub lifetime: Option<Duration>,
}

impl Machine {
    fn program(&self) -> &'static str {
        match self.firmware {
            Firmware::UBootArm64 => QEMU_ARM64,
            _ => QEMU,
        }
    }

    pub fn monitor_socket(&self) -> PathBuf {
        self.dir.join("monitor.sock")
    }

    pub fn command(&self) -> Result<Command> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("failed to create {}", self.dir.display()))?;
        let mut c = match self.lifetime {
            Some(lifetime) => {
                let mut c = Command::new("timeout");
                c.args(["--kill-after=5", &format!("{}s", lifetime.as_secs().max(1)), self.program()]);
                c
            }
            None => Command::new(self.program()),
        };
        c.args(["-accel", "tcg", "-m", &self.memory_mb.to_string(), "-smp", "1", "-nodefaults", "-no-user-config"]);
        let pci = self.firmware != Firmware::UBootArm64;
        if self.no_reboot {
            c.arg("-no-reboot");
        }
        if self.gui {
            c.args(["-vga", "std"]);
        } else {
            c.args(["-display", "none"]);
        }
        let monitor = self.monitor_socket();
        let _ = std::fs::remove_file(&monitor);
        c.arg("-monitor").arg(format!("unix:{},server=on,wait=off", monitor.display()));
        match &self.serial {
            Serial::File(path) => c.arg("-serial").arg(format!("file:{}", path.display())),
            Serial::Stdio => c.args(["-serial", "mon:stdio"]),
        };
        match self.firmware {
            Firmware::Bios => {
                c.args(["-machine", "pc"]);
                // SeaBIOS copies what option ROMs (iPXE) print to the serial port.
                let sercon = self.dir.join("sercon-port");
                std::fs::write(&sercon, 0x3f8u16.to_le_bytes())?;
                c.arg("-fw_cfg").arg(format!("name=etc/sercon-port,file={}", sercon.display()));
            }
            Firmware::Uefi => {
                let vars = self.dir.join("OVMF_VARS.fd");
                if !vars.exists() {
                    std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("failed to copy {OVMF_VARS}"))?;
                }
                c.args(["-machine", "q35"]);
                c.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"));
                c.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
            }
            Firmware::UBootArm64 => {
                c.args(["-machine", "virt", "-cpu", "cortex-a57", "-bios", UBOOT_ARM64]);
            }
        }
        if let Some((disk, format)) = &self.disk {
            let boot = if self.boot_network { "" } else { ",bootindex=0" };
            c.arg("-drive").arg(format!("file={},format={format},if=none,id=disk0", disk.display()));
            // `ide.0` is the PIIX IDE controller on `pc` and the ICH9 AHCI controller on `q35`.
            let device = if self.disk_ide { "ide-hd,bus=ide.0" } else { "virtio-blk-pci" };
            c.arg("-device").arg(format!("{device},drive=disk0{boot}"));
        }
        c.arg("-netdev").arg(self.link.netdev(self.side));
        let rom = if self.nic_rom || !pci { "" } else { ",romfile=" };
        let boot = if self.boot_network && pci { ",bootindex=0" } else { "" };
        c.arg("-device").arg(format!("{},netdev=lan,mac={}{rom}{boot}", self.nic, self.mac));
        Ok(c)
    }

    /// The command line as a shell would take it (for logs and "attach a client" hints).
    pub fn command_line(&self) -> Result<String> {
        let c = self.command()?;
        let mut words = vec![c.get_program().to_string_lossy().into_owned()];
        words.extend(c.get_args().map(|a| a.to_string_lossy().into_owned()));
        Ok(words
            .iter()
            .map(|w| if w.contains([' ', '"', '\'', ';', '(', ')']) { format!("'{w}'") } else { w.clone() })
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// A running VM.
pub struct Vm {
    child: Child,
    pub name: String,
    pub serial: Option<PathBuf>,
    pub stderr: PathBuf,
    pub monitor: PathBuf,
    pub started: Instant,
}

impl Vm {
    pub fn spawn(name: &str, machine: &Machine) -> Result<Vm> {
        let mut c = machine.command()?;
        let stderr = machine.dir.join("qemu.log");
        std::fs::write(machine.dir.join("qemu.cmdline"), machine.command_line()? + "\n")?;
        if let Serial::File(path) = &machine.serial {
            let _ = std::fs::remove_file(path);
        }
        let err = std::fs::File::create(&stderr)?;
        c.stderr(err);
        if matches!(machine.serial, Serial::File(_)) {
            c.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let child = c.spawn().with_context(|| format!("failed to start {}", machine.program()))?;
        Ok(Vm {
            child,
            name: name.to_owned(),
            serial: match &machine.serial {
                Serial::File(p) => Some(p.clone()),
                Serial::Stdio => None,
            },
            stderr,
            monitor: machine.monitor_socket(),
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The serial console so far, with terminal escape sequences and carriage returns removed.
    pub fn text(&self) -> String {
        self.serial.as_ref().map(|p| clean(&std::fs::read(p).unwrap_or_default())).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `needle` after byte `from` of the cleaned text.
    /// Returns the time since the VM started and the position just after the match.
    pub fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<(Duration, usize)> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return Ok((self.started.elapsed(), from + i + needle.len()));
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before printing {needle:?}; {}", self.name, self.tail());
            }
            let err = self.stderr_text();
            if err.contains("KVM internal error") || err.contains("emulation failure") {
                bail!("{}: QEMU hit the broken KVM ({}); x86 guests must run with -accel tcg", self.name, err.trim());
            }
            if Instant::now() >= deadline {
                bail!("{} did not print {needle:?} within {}s; {}", self.name, timeout.as_secs(), self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the console and QEMU's own messages, for error reports.
    pub fn tail(&self) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n  | ");
        let err = self.stderr_text();
        format!(
            "last console lines:\n  | {tail}{}",
            if err.trim().is_empty() { String::new() } else { format!("\nQEMU said: {}", err.trim()) }
        )
    }

    /// Sends a human monitor command (e.g. `system_powerdown`).
    pub fn monitor(&self, command: &str) -> Result<()> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor)
            .with_context(|| format!("cannot reach {}'s monitor at {}", self.name, self.monitor.display()))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        s.flush()?;
        // Give QEMU a moment to read it before the connection closes.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Presses the ACPI power button.
    pub fn powerdown(&self) -> Result<()> {
        self.monitor("system_powerdown")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {}s; {}", self.name, timeout.as_secs(), self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for QEMU in the foreground (interactive use).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// Stops QEMU (TERM to `timeout`, which passes it on) and reaps it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Console bytes as text: ANSI escape sequences, other control characters and CRs removed.
pub fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // Parameters and intermediates, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\r' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
