//! End-to-end tests of the appliance image, through the real command (`xtask image`):
//!
//! - two builds from the same inputs are byte-identical (raw and qcow2);
//! - the image boots under SeaBIOS and under OVMF into the daemon, and a client VM on the
//!   image's private network (a point-to-point UDP link between the two QEMUs) network-boots
//!   its payload from it: SeaBIOS with QEMU's iPXE ROM, checked by the payload's
//!   `APPLIANCE-BOOT-OK appliance.profile=.. appliance.arch=.. appliance.version=..` line;
//! - after a clean reboot (Ctrl-Alt-Del) the appliance still has the client's lease.
//!
//! CI runs these as root on Debian; a missing prerequisite fails with the package to install
//! (never a skip). One scenario runs at a time: the machines have two cores. The image bundles
//! the debug build of the daemon unless APPLIANCE_IMAGE_TEST_DAEMON=release.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use testkit::procs::find_program;
use testkit::qemu::console::{find_marker, MARKER};
use testkit::qemu::firmware::{self, E1000_ROM};
use testkit::qemu::{Disk, Firmware, Link, Machine, Net, Nic, Side, Vm};

/// The test clients, all in the image's on-site overlay, booting the tiny-live profile.
const PROFILE: &str = "tiny-live";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// SeaBIOS with QEMU's e1000 iPXE ROM: DHCP, then the iPXE script and artifacts by HTTP.
    SeaBios,
    /// OVMF with the e1000's iPXE EFI ROM.
    Ovmf,
    /// U-Boot arm64: DHCP, boot.scr.uimg, pxelinux.cfg and artifacts by TFTP.
    UBootArm64,
}

impl Client {
    fn mac(self) -> &'static str {
        match self {
            Client::SeaBios => "52:54:00:77:e2:01",
            Client::Ovmf => "52:54:00:77:e2:02",
            Client::UBootArm64 => "52:54:00:77:e2:03",
        }
    }

    fn arch(self) -> &'static str {
        match self {
            Client::UBootArm64 => "arm64",
            _ => "x86_64",
        }
    }

    fn firmware(self) -> Firmware {
        match self {
            Client::SeaBios => Firmware::SeaBios,
            Client::Ovmf => Firmware::Ovmf,
            Client::UBootArm64 => Firmware::UBootArm64,
        }
    }
}

const CLIENTS: [Client; 3] = [Client::SeaBios, Client::Ovmf, Client::UBootArm64];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serialises the tests of this file: image builds and VMs each want the whole machine.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn require_prerequisites() {
    // qemu-img is installed by `xtask image` itself when we are root.
    let firmwares = [Firmware::SeaBios, Firmware::Ovmf, Firmware::UBootArm64];
    let mut missing: Vec<String> =
        firmware::missing(&firmwares, &[(E1000_ROM, "ipxe-qemu")]).iter().map(ToString::to_string).collect();
    if find_program("timeout").is_none() {
        missing.push("timeout (Debian package coreutils)".into());
    }
    assert!(
        missing.is_empty(),
        "the image boot test needs: {} (`cargo xtask test` as root installs them)",
        missing.join(", ")
    );
}

/// The test recipe: the repository's profiles, an overlay naming the test client, serial console
/// only, no boot menu delay.
fn recipe() -> PathBuf {
    let dir = work_dir();
    let mut overlay = String::from("machines:\n");
    for (i, c) in CLIENTS.iter().enumerate() {
        overlay.push_str(&format!(
            "  \"{}\": {{ hostname: e2e-client{i}, arch: {}, profile: {PROFILE} }}\n",
            c.mac(),
            c.arch()
        ));
    }
    std::fs::write(dir.join("onsite.yaml"), overlay).unwrap();
    let path = dir.join("e2e.yaml");
    std::fs::write(
        &path,
        format!(
            "description: end-to-end test image\n\
             config: {}\n\
             overlay: onsite.yaml\n\
             network: {{ interface: auto, address: 10.77.0.1/24 }}\n\
             console: {{ serial: ttyS0, vga: false }}\n\
             boot_menu_timeout: 0\n\
             log: info\n",
            root().join("profiles").display()
        ),
    )
    .unwrap();
    path
}

/// Runs `xtask image`; its output goes to `<out>/build.log`.
fn build(out: &Path, qcow2: bool) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    let log = out.join("build.log");
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("image").arg("--recipe").arg(recipe()).arg("--out").arg(out);
    if !qcow2 {
        cmd.arg("--no-qcow2");
    }
    // The stripped debug daemon by default: `cargo test --workspace` has already built it,
    // where a release build of every dependency would add minutes on a cold CI cache.
    // APPLIANCE_IMAGE_TEST_DAEMON=release tests the release build.
    let profile = std::env::var("APPLIANCE_IMAGE_TEST_DAEMON").unwrap_or_else(|_| "dev".into());
    cmd.args(["--daemon-profile", &profile]);
    let output = cmd.current_dir(root()).output().expect("failed to run xtask");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::write(&log, &text).unwrap();
    assert!(output.status.success(), "`xtask image` failed ({}); its output:\n{text}", output.status);
    eprintln!("built {} in {:.1}s", out.display(), started.elapsed().as_secs_f64());
    out.join("e2e.img")
}

/// The image both tests use, built once.
fn image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| build(&work_dir().join("a"), true)).clone()
}

#[test]
fn two_builds_are_byte_identical() {
    require_prerequisites();
    let _one = exclusive();
    let a = image();
    let b = build(&work_dir().join("b"), true);
    for ext in ["img", "qcow2"] {
        let (fa, fb) = (a.with_extension(ext), b.with_extension(ext));
        let (da, db) = (std::fs::read(&fa).unwrap(), std::fs::read(&fb).unwrap());
        if da != db {
            let log = std::fs::read_to_string(b.with_file_name("build.log")).unwrap_or_default();
            let hint = if log.contains("Compiling appliance") {
                " (the daemon was recompiled between the two builds: did its sources change while the test ran?)"
            } else {
                ""
            };
            panic!("{} and {} differ{hint}", fa.display(), fb.display());
        }
    }
    let toc = std::fs::read_to_string(a.with_extension("toc")).unwrap();
    assert!(toc.contains("tiny-live") && toc.contains("x86_64") && toc.contains("undionly.kpxe"), "{toc}");
}

/// The tiny-live version the appliance must hand out for `arch`.
fn expected_version(arch: &str) -> String {
    let catalog = appliance::config_dir::load(&root().join("profiles"), Some(&work_dir().join("onsite.yaml")))
        .expect("profiles load");
    let arch = appliance_core::arch::Arch::parse(arch).expect("known architecture");
    catalog.profile_set(PROFILE, arch).expect("tiny-live has the architecture").1.version.clone()
}

fn appliance_vm(firmware: Firmware, disk: &Path, link: Link, dir: &Path) -> Vm {
    // SeaBIOS: virtio disk and NIC; OVMF: AHCI disk and an e1000e, so both driver sets are used.
    let bios = firmware == Firmware::SeaBios;
    let nic = Nic {
        model: if bios { "virtio-net-pci" } else { "e1000e" },
        mac: "52:54:00:77:e2:fe".into(),
        rom: false,
        boot_first: false,
    };
    let mut machine = Machine::new(firmware, nic, Net::Udp(link, Side::Appliance), dir.to_path_buf());
    machine.disk = Some(Disk { path: disk.to_path_buf(), format: "qcow2", ide: !bios });
    machine.monitor = true;
    machine.lifetime = Some(Duration::from_secs(600));
    Vm::start(&format!("appliance VM ({})", firmware.name()), &machine, None).expect("appliance VM starts")
}

fn client_vm(client: Client, link: Link, dir: &Path) -> Vm {
    let arm = client == Client::UBootArm64;
    // U-Boot reports a wrong MAC for virtio-net-pci (docs/firmware.md#u-boot-nic-and-mac); the MMIO
    // device is right.
    let nic = Nic {
        model: if arm { "virtio-net-device" } else { "e1000" },
        mac: client.mac().into(),
        rom: true,
        boot_first: true,
    };
    let mut machine = Machine::new(client.firmware(), nic, Net::Udp(link, Side::Client), dir.to_path_buf());
    // arm64: U-Boot loads the 33 MB uncompressed kernel and the initrd at fixed addresses.
    machine.memory_mb = if arm { 1024 } else { 512 };
    machine.no_reboot = true; // the payload powers off; never loop
    machine.lifetime = Some(Duration::from_secs(300));
    Vm::start(&format!("client VM ({client:?})"), &machine, None).expect("client VM starts")
}

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Boots a client and checks its payload's marker; returns the address it was served from
/// (the `peer` of the appliance's first HTTP request after `from`).
fn netboot_client(appliance: &mut Vm, from: usize, link: Link, dir: &Path, client: Client) -> String {
    let version = expected_version(client.arch());
    let mut vm = client_vm(client, link, dir);
    let (took, end) = ok(vm.wait_for(MARKER, 0, Duration::from_secs(180)));
    // The command line after the marker is whole once its line ends.
    ok(vm.wait_for("\n", end, Duration::from_secs(10)));
    let marker = find_marker(&vm.text()).unwrap_or_else(|| panic!("{client:?}: no marker line; {}", vm.tail()));
    for (key, want) in
        [("appliance.profile", PROFILE), ("appliance.arch", client.arch()), ("appliance.version", &version)]
    {
        assert_eq!(marker.param(key), Some(want), "{client:?} booted something else: {:?}", marker.cmdline);
    }
    eprintln!("  {client:?} client: {MARKER} after {:.1}s: {}", took.as_secs_f64(), marker.cmdline);
    let _ = vm.wait_exit(Duration::from_secs(30));
    // The address the appliance leased it: from its DHCP exchanges with that MAC.
    let log = appliance.text();
    log[from..]
        .lines()
        .filter(|l| l.contains("dhcp exchange") && l.contains(&format!("mac={}", client.mac())))
        .find_map(|l| l.split("address=Some(").nth(1).and_then(|a| a.split(')').next()))
        .unwrap_or_else(|| panic!("the appliance logged no DHCP exchange with {client:?}; {}", appliance.tail()))
        .to_owned()
}

fn overlay_disk(image: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let disk = dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(image)
        .arg(&disk)
        .status()
        .expect("qemu-img runs");
    assert!(status.success(), "qemu-img create failed");
    disk
}

fn boot_scenario(firmware: Firmware, clients: &[Client], reboot: bool) {
    require_prerequisites();
    let _one = exclusive();
    let image = image();
    let dir = work_dir().join(firmware.name());
    let disk = overlay_disk(&image, &dir);
    let link = ok(Link::free());

    let mut appliance = appliance_vm(firmware, &disk, link, &dir.join("appliance"));
    let (serving, mut pos) = ok(appliance.wait_for("dhcp: serving", 0, Duration::from_secs(150)));
    eprintln!("{}: appliance serving DHCP {:.1}s after QEMU started", firmware.name(), serving.as_secs_f64());

    let mut addresses = Vec::new();
    for &client in clients {
        let address = netboot_client(&mut appliance, pos, link, &dir.join(format!("client-{client:?}")), client);
        eprintln!("  {client:?} client got {address}");
        addresses.push((client, address));
        pos = appliance.text().len();
    }

    if reboot {
        // Ctrl-Alt-Del: busybox init runs the shutdown script (daemon stopped, data partition
        // unmounted), then the machine reboots into the same disk.
        ok(appliance.monitor("sendkey ctrl-alt-delete"));
        let (_, p) = ok(appliance.wait_for("appliance: stopped cleanly", pos, Duration::from_secs(60)));
        let (_, p) = ok(appliance.wait_for("dhcp: leases loaded", p, Duration::from_secs(150)));
        let log = appliance.text();
        let count: usize = log[p..]
            .lines()
            .next()
            .and_then(|l| l.split("count=").nth(1))
            .and_then(|c| c.split_whitespace().next())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(count >= addresses.len(), "after the reboot the appliance loaded {count} leases; {}", appliance.tail());
        let (_, p) = ok(appliance.wait_for("dhcp: serving", p, Duration::from_secs(60)));
        eprintln!("  rebooted: {count} lease(s) kept");
        let (client, address) = addresses[0].clone();
        let again = netboot_client(&mut appliance, p, link, &dir.join(format!("client-{client:?}-again")), client);
        assert_eq!(again, address, "after the reboot {client:?} got another address");
        pos = appliance.text().len();
    }

    // The power button shuts the appliance down cleanly.
    ok(appliance.powerdown());
    ok(appliance.wait_for("appliance: stopped cleanly", pos, Duration::from_secs(60)));
    ok(appliance.wait_exit(Duration::from_secs(30)));
    let log = appliance.text();
    assert!(log[pos..].contains("data partition unmounted"), "{}", appliance.tail());
}

#[test]
fn bios_appliance_netboots_a_client_and_keeps_leases_across_reboot() {
    boot_scenario(Firmware::SeaBios, &[Client::SeaBios], true);
}

#[test]
fn uefi_appliance_netboots_bios_uefi_and_uboot_arm64_clients() {
    boot_scenario(Firmware::Ovmf, &CLIENTS, false);
}
