//! End-to-end tests of the appliance image, through the real command (`xtask image`):
//!
//! - two builds from the same inputs are byte-identical (raw and qcow2);
//! - the image boots under SeaBIOS and under OVMF into the daemon, and a client VM on the
//!   image's private network (a point-to-point UDP link between the two QEMUs) network-boots
//!   its payload from it: SeaBIOS with QEMU's iPXE ROM, checked by the payload's
//!   `APPLIANCE-BOOT-OK appliance.profile=.. appliance.arch=.. appliance.version=..` line;
//! - after a clean reboot (Ctrl-Alt-Del) the appliance still has the client's lease;
//! - the image's data partition grows to fill a VM disk larger than the image, once;
//! - the appliance follows a git repository served from the test host (the recipe's `git:`):
//!   a commit made while it runs changes what an HTTP request to it gets, and, after the
//!   reboot, what the client boots (the BIOS scenario: its VMs are on a bridge in a network
//!   namespace, where `git-daemon` and curl run; the UEFI scenario's point-to-point link has
//!   no host side, so its appliance keeps serving the image's baked-in config).
//!
//! CI runs these as root on Debian; a missing prerequisite fails with the package to install
//! (never a skip). One scenario runs at a time: the machines have two cores. The image bundles
//! the debug build of the daemon unless APPLIANCE_IMAGE_TEST_DAEMON=release.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use testkit::lab::Lab;
use testkit::netns::Netns;
use testkit::procs::find_program;
use testkit::qemu::console::{find_marker, MARKER};
use testkit::qemu::firmware::{self, E1000_ROM};
use testkit::qemu::{Disk, Firmware, Link, Machine, Net, Nic, Side, Vm};

mod followed_repo;
mod grown_disk;
use followed_repo::FollowedRepo;
use grown_disk::{check_backup_gpt, check_growth};

/// The room the VM disks have beyond the image: the data partition must grow into it.
const EXTRA_DISK_MIB: u64 = 512;

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
    for (program, package) in [("timeout", "coreutils"), ("git", "git"), ("curl", "curl"), ("ip", "iproute2")] {
        if find_program(program).is_none() {
            missing.push(format!("{program} (Debian package {package})"));
        }
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
             log: info\n\
             git: {{ url: \"{}\", poll: 2s }}\n",
            root().join("profiles").display(),
            followed_repo::URL
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

/// The tiny-live version the appliance must hand out for `arch` from the config in `config`
/// (the version covers the command line too).
fn expected_version(config: &Path, arch: &str) -> String {
    let catalog = appliance::config_dir::load(config, Some(&work_dir().join("onsite.yaml"))).expect("profiles load");
    let arch = appliance_core::arch::Arch::parse(arch).expect("known architecture");
    catalog.profile_set(PROFILE, arch).expect("tiny-live has the architecture").1.version.clone()
}

/// How the VMs are wired: a point-to-point UDP link, or taps on a lab bridge whose namespace
/// is also the test host's side of the boot network.
enum Wiring {
    Udp(Link),
    Lab { lab: Lab, appliance_tap: String, client_tap: String },
}

impl Wiring {
    fn lab(test: &str) -> Wiring {
        assert!(nix_is_root(), "the BIOS image scenario needs root: its VMs and git-daemon run in a network namespace");
        testkit::netns::remove_stale_once(testkit::lab::NS_PREFIX);
        let mut lab = ok(Lab::new(test, false));
        let appliance_tap = ok(lab.add_tap());
        let client_tap = ok(lab.add_tap());
        Wiring::Lab { lab, appliance_tap, client_tap }
    }

    fn appliance(&self) -> (Net, Option<&Netns>) {
        match self {
            Wiring::Udp(link) => (Net::Udp(*link, Side::Appliance), None),
            Wiring::Lab { lab, appliance_tap, .. } => (Net::Tap(appliance_tap.clone()), Some(lab.server())),
        }
    }

    fn client(&self) -> (Net, Option<&Netns>) {
        match self {
            Wiring::Udp(link) => (Net::Udp(*link, Side::Client), None),
            Wiring::Lab { lab, client_tap, .. } => (Net::Tap(client_tap.clone()), Some(lab.server())),
        }
    }
}

fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn appliance_vm(firmware: Firmware, disk: &Path, wiring: &Wiring, dir: &Path) -> Vm {
    // SeaBIOS: virtio disk and NIC; OVMF: AHCI disk and an e1000e, so both driver sets are used.
    let bios = firmware == Firmware::SeaBios;
    let nic = Nic {
        model: if bios { "virtio-net-pci" } else { "e1000e" },
        mac: "52:54:00:77:e2:fe".into(),
        rom: false,
        boot_first: false,
    };
    let (net, netns) = wiring.appliance();
    let mut machine = Machine::new(firmware, nic, net, dir.to_path_buf());
    machine.disk = Some(Disk { path: disk.to_path_buf(), format: "qcow2", ide: !bios });
    machine.monitor = true;
    machine.lifetime = Some(Duration::from_secs(600));
    Vm::start(&format!("appliance VM ({})", firmware.name()), &machine, netns).expect("appliance VM starts")
}

fn client_vm(client: Client, wiring: &Wiring, dir: &Path) -> Vm {
    let arm = client == Client::UBootArm64;
    // U-Boot reports a wrong MAC for virtio-net-pci (docs/firmware.md#u-boot-nic-and-mac); the MMIO
    // device is right.
    let nic = Nic {
        model: if arm { "virtio-net-device" } else { "e1000" },
        mac: client.mac().into(),
        rom: true,
        boot_first: true,
    };
    let (net, netns) = wiring.client();
    let mut machine = Machine::new(client.firmware(), nic, net, dir.to_path_buf());
    // arm64: U-Boot loads the 33 MB uncompressed kernel and the initrd at fixed addresses.
    machine.memory_mb = if arm { 1024 } else { 512 };
    machine.no_reboot = true; // the payload powers off; never loop
    machine.lifetime = Some(Duration::from_secs(300));
    Vm::start(&format!("client VM ({client:?})"), &machine, netns).expect("client VM starts")
}

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Boots a client and checks its payload's marker; returns the address the appliance leased
/// it and the kernel command line it booted with.
fn netboot_client(
    appliance: &mut Vm,
    from: usize,
    wiring: &Wiring,
    dir: &Path,
    (client, config): (Client, &Path),
) -> (String, String) {
    let version = expected_version(config, client.arch());
    let mut vm = client_vm(client, wiring, dir);
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
    let address = log[from..]
        .lines()
        .filter(|l| l.contains("dhcp exchange") && l.contains(&format!("mac={}", client.mac())))
        .find_map(|l| l.split("address=Some(").nth(1).and_then(|a| a.split(')').next()))
        .unwrap_or_else(|| panic!("the appliance logged no DHCP exchange with {client:?}; {}", appliance.tail()))
        .to_owned();
    (address, marker.cmdline.clone())
}

/// A qcow2 disk over the image, EXTRA_DISK_MIB larger than it.
fn overlay_disk(image: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let disk = dir.join("disk.qcow2");
    let _ = std::fs::remove_file(&disk);
    let size = std::fs::metadata(image).unwrap().len() + EXTRA_DISK_MIB * 1024 * 1024;
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(image)
        .arg(&disk)
        .arg(size.to_string())
        .status()
        .expect("qemu-img runs");
    assert!(status.success(), "qemu-img create failed");
    disk
}

/// The tiny-live x86_64 command line as the test's second commit changes it.
const CHANGED_ARG: &str = "appliance.e2e=second-commit";

fn boot_scenario(firmware: Firmware, clients: &[Client], reboot: bool) {
    require_prerequisites();
    let _one = exclusive();
    let image = image();
    let dir = work_dir().join(firmware.name());
    let disk = overlay_disk(&image, &dir);
    // The BIOS scenario follows the repository from the host; it needs the lab's bridge.
    let follows = firmware == Firmware::SeaBios;
    let wiring =
        if follows { Wiring::lab(&format!("image-{}", firmware.name())) } else { Wiring::Udp(ok(Link::free())) };
    let repo = match &wiring {
        Wiring::Lab { lab, .. } => Some(FollowedRepo::serve(lab, &root().join("profiles"), &dir.join("repo"))),
        Wiring::Udp(_) => None,
    };

    let mut appliance = appliance_vm(firmware, &disk, &wiring, &dir.join("appliance"));
    let pos = check_growth(&mut appliance, 0, true);
    let (serving, mut pos) = ok(appliance.wait_for("dhcp: serving", pos, Duration::from_secs(150)));
    eprintln!("{}: appliance serving DHCP {:.1}s after QEMU started", firmware.name(), serving.as_secs_f64());

    // What the appliance serves: the repository's profiles, or the followed commit's.
    let mut config = root().join("profiles");
    let mut changed = None;
    if let (Some((repo, first)), Wiring::Lab { lab, .. }) = (&repo, &wiring) {
        // The daemon (unprivileged) fetched into <state>/git and checked out into <state>/commits.
        let (took, p) =
            ok(appliance.wait_for(&format!("serving commit commit={first}"), pos, Duration::from_secs(120)));
        eprintln!("  serving the repository's first commit {:.1}s after QEMU started", took.as_secs_f64());
        let script =
            format!("http://10.77.0.1/ipxe/script?mac={}&buildarch=x86_64&platform=pcbios", Client::SeaBios.mac());
        let before = followed_repo::http_get(lab, &script);
        assert!(before.contains(&format!("commit {first}")) && !before.contains(CHANGED_ARG), "{before}");
        let committed = std::time::Instant::now();
        let second = repo.change(
            "tiny-live.yaml",
            |t| t.replacen("console=ttyS0 quiet", &format!("console=ttyS0 {CHANGED_ARG} quiet"), 1),
            "tiny-live: a marker argument",
        );
        let (_, p) = ok(appliance.wait_for(&format!("serving commit commit={second}"), p, Duration::from_secs(120)));
        let after = followed_repo::http_get(lab, &script);
        eprintln!("  the second commit served {:.1}s after it was made", committed.elapsed().as_secs_f64());
        assert!(after.contains(&format!("commit {second}")) && after.contains(CHANGED_ARG), "{after}");
        pos = p;
        changed = Some(second);
        config = repo.profiles();
    }

    let mut addresses = Vec::new();
    for &client in clients {
        let (address, _) =
            netboot_client(&mut appliance, pos, &wiring, &dir.join(format!("client-{client:?}")), (client, &config));
        eprintln!("  {client:?} client got {address}");
        addresses.push((client, address));
        pos = appliance.text().len();
    }

    if reboot {
        // Ctrl-Alt-Del: busybox init runs the shutdown script (daemon stopped, data partition
        // unmounted), then the machine reboots into the same disk.
        ok(appliance.monitor("sendkey ctrl-alt-delete"));
        let (_, p) = ok(appliance.wait_for("appliance: stopped cleanly", pos, Duration::from_secs(60)));
        let p = check_growth(&mut appliance, p, false);
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
        let (again, cmdline) = netboot_client(
            &mut appliance,
            p,
            &wiring,
            &dir.join(format!("client-{client:?}-again")),
            (client, &config),
        );
        assert_eq!(again, address, "after the reboot {client:?} got another address");
        if let Some(commit) = &changed {
            // The last good commit, recorded in the state directory, serves after the reboot.
            assert!(cmdline.contains(CHANGED_ARG), "after the reboot (commit {commit}) {client:?} booted {cmdline:?}");
        }
        pos = appliance.text().len();
    }

    // The power button shuts the appliance down cleanly.
    ok(appliance.powerdown());
    ok(appliance.wait_for("appliance: stopped cleanly", pos, Duration::from_secs(60)));
    ok(appliance.wait_exit(Duration::from_secs(30)));
    let log = appliance.text();
    assert!(log[pos..].contains("data partition unmounted"), "{}", appliance.tail());
    check_backup_gpt(&disk);
}

#[test]
fn bios_appliance_netboots_a_client_and_keeps_leases_across_reboot() {
    boot_scenario(Firmware::SeaBios, &[Client::SeaBios], true);
}

#[test]
fn uefi_appliance_netboots_bios_uefi_and_uboot_arm64_clients() {
    boot_scenario(Firmware::Ovmf, &CLIENTS, false);
}
