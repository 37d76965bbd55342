//! One machine from bare metal to its own disk and back, on real firmware: the provisioning
//! lifecycle cells (`tests/lifecycle.rs`).
//!
//! One VM with an empty virtual disk (virtio-blk), booting network first, then disk, and the
//! daemon in server mode with the machine in its MAC database on the deploy profile with
//! `after_install: local`:
//!
//! 1. power-on → netboot → the deploy initrd writes the demo disk → posts `installed` (daemon
//!    log and install log);
//! 2. the moment the daemon logs it, the VM is paused (QEMU monitor `stop`), the daemon is
//!    killed with SIGKILL and started again on the same state directory, and the VM goes on
//!    (`cont`): the guest reboots, netboots, is told to boot locally by the restarted daemon,
//!    and the firmware boots the disk, whose kernel prints `DEMO-DISK-OK`;
//! 3. `appliance rearm` (the command, against the running daemon's state directory), then a
//!    power-cycle (`system_reset`): the machine netboots the deploy profile again (the daemon
//!    serves it its script and kernel).
//!
//! Everything is kept in `target/qemu-tests/<cell>/` (the restarted daemon's log in
//! `restarted/`), and the times (power-on → disk marker) go to `summary.tsv` like the matrix's.

use crate::client::Client;
use crate::config::{ConfigSpec, TestConfig};
use crate::daemon::{Daemon, DaemonSpec};
use crate::host;
use anyhow::{anyhow, bail, Context, Result};
use appliance_core::arch::Arch;
use appliance_core::catalog::DhcpMode;
use std::io::Write as _;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};
use testkit::lab::{Lab, NS_PREFIX};
use testkit::procs::{self, tail};
use testkit::qemu::{Disk, Firmware, Vm};

/// What the demo disk's `/init` prints (xtask's `demo_disk`).
pub const DISK_MARKER: &str = "DEMO-DISK-OK";
/// The profile the cells install with.
pub const PROFILE: &str = "deploy";
/// The empty virtual disk (the demo disk is 44 MiB).
const DISK_BYTES: u64 = 64 << 20;

/// One lifecycle cell.
pub struct Lifecycle {
    pub name: String,
    pub client: Client,
    pub mac: String,
    /// Limit of each phase (install, boot the disk, netboot again after the re-arm).
    pub phase_timeout: Duration,
    /// More fields of the machine's entry (e.g. `uefi_chain: shim`).
    pub entry_extra: String,
}

/// What a passing cell measured, from QEMU's start.
#[derive(Debug, Clone)]
pub struct Times {
    pub installed: Duration,
    pub disk_marker: Duration,
    /// From the power-cycle after the re-arm to the deploy profile's kernel being served.
    pub netboot_again: Duration,
}

/// The processes of one cell, stopped in field order on drop.
#[derive(Default)]
struct Running {
    vm: Option<Vm>,
    daemon: Option<Daemon>,
    first: Option<Daemon>,
    lab: Option<Lab>,
}

impl Lifecycle {
    pub fn new(name: &str, client: Client, mac: &str) -> Lifecycle {
        let secs = std::env::var("BOOT_TESTS_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(240);
        Lifecycle {
            name: name.into(),
            client,
            mac: mac.into(),
            phase_timeout: Duration::from_secs(secs),
            entry_extra: String::new(),
        }
    }

    /// Runs the cell; panics with the evidence when it fails.
    pub fn run(self) -> Times {
        let out = host::fresh_out_dir(&self.name).unwrap_or_else(|e| panic!("{}: {e:#}", self.name));
        let started = Instant::now();
        let mut run = Running::default();
        let result = self.run_in(&out, &mut run);
        let total = started.elapsed().as_secs_f64();
        if let Some(vm) = run.vm.as_mut() {
            vm.stop();
        }
        for d in [run.daemon.as_mut(), run.first.as_mut()].into_iter().flatten() {
            d.stop();
        }
        let (status, shown, detail) = match &result {
            Ok(t) => (
                "pass",
                format!("{:.1}", t.disk_marker.as_secs_f64()),
                format!(
                    "installed after {:.1} s, disk marker after {:.1} s, netboot again {:.1} s after the re-arm",
                    t.installed.as_secs_f64(),
                    t.disk_marker.as_secs_f64(),
                    t.netboot_again.as_secs_f64()
                ),
            ),
            Err(e) => ("FAIL", "-".into(), format!("{e:#}").lines().next().unwrap_or("").to_string()),
        };
        let when = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let line = format!("{when}\t{}\t{status}\t{shown}\t{total:.1}\t{detail}\n", self.name);
        let _ = std::fs::write(out.join("result.txt"), &line);
        if let Ok(mut f) = std::fs::File::options().create(true).append(true).open(host::summary_file()) {
            let _ = f.write_all(line.as_bytes());
        }
        match result {
            Ok(t) => {
                println!("{}: pass: {detail} (cell total {total:.1} s)", self.name);
                t
            }
            Err(e) => panic!(
                "{}: FAILED after {total:.1} s: {e:#}\n{}(all logs in {})",
                self.name,
                evidence(&run),
                out.display()
            ),
        }
    }

    fn run_in(&self, out: &Path, run: &mut Running) -> Result<Times> {
        testkit::netns::remove_stale_once(NS_PREFIX);
        let (bootloaders, blobs) = (host::bootloaders_dir(), host::blobs_dir());
        let mut missing = host::missing(&host::Needs {
            client: self.client,
            site_dhcp: false,
            bootloaders: &bootloaders,
            blobs: &blobs,
        });
        let scratch = tempfile::Builder::new().prefix(&format!("boot-test-{}-", self.name)).tempdir()?;
        let config_dir = scratch.path().join("config");
        let entry = format!(
            "{{ hostname: {}, arch: x86_64, profile: {PROFILE}, after_install: local{} }}",
            self.name.replace('_', "-"),
            if self.entry_extra.is_empty() { String::new() } else { format!(", {}", self.entry_extra) }
        );
        let spec =
            ConfigSpec { mode: DhcpMode::Server, machines: vec![(self.mac.clone(), entry)], ..ConfigSpec::default() };
        let config = TestConfig::build(&host::profiles_dir(), &config_dir, &spec)?;
        missing.extend(config.missing_blobs(&blobs).into_iter().map(|m| format!("{m}: run `cargo xtask fetch`")));
        if !missing.is_empty() {
            bail!(host::report(&missing));
        }
        crate::config::copy_tree(&config_dir, &out.join("config"))?;
        let version = config.version(PROFILE, Arch::X86_64)?;
        let bin = host::appliance_bin()?;
        let state = scratch.path().join("state");
        std::fs::create_dir_all(&state)?;
        let disk = scratch.path().join("disk.img");
        std::fs::File::create(&disk)?.set_len(DISK_BYTES)?;

        let _slot = procs::acquire_vm_slot();
        let lifetime = self.phase_timeout * 3 + Duration::from_secs(180);
        let lab = run.lab.insert(Lab::new(&self.name, false)?);
        let tap = lab.add_tap()?;
        let daemon_spec = DaemonSpec {
            bin: &bin,
            config: &config_dir,
            state: &state,
            bootloaders: &bootloaders,
            blobs: &blobs,
            mode: DhcpMode::Server,
            dhcp_port: 67,
            lifetime,
        };
        let lab = run.lab.as_ref().ok_or_else(|| anyhow!("no lab"))?;
        run.daemon = Some(Daemon::start(lab, &daemon_spec, out)?);
        let mut machine = self.client.machine(&self.mac, &tap, out, lifetime);
        machine.no_reboot = false;
        machine.monitor = true;
        machine.nic.boot_first = true;
        machine.disk = Some(Disk { path: disk, format: "raw", ide: false });
        if self.client.firmware() == Firmware::Ovmf {
            // OVMF's NIC brings four boot options before the disk: PXE and HTTP Boot, each over
            // IPv4 and IPv6. Each one told to boot locally fails over to the next, and PXE over
            // IPv6 waits tens of seconds for a DHCPv6 answer that never comes
            // (docs/firmware.md#ovmf-boot-order-after-a-local-boot); without IPv6 the cell
            // still walks PXE and HTTP Boot over IPv4 to the disk.
            machine.fw_cfg.push("name=opt/org.tianocore/IPv6Support,string=no".into());
        }
        let vm = run.vm.insert(Vm::start("qemu", &machine, Some(lab.server()))?);
        let power_on = vm.started;

        // 1. The deploy profile boots, writes the disk and reports `installed`.
        let installed_line = |log: &str| {
            log.lines().any(|l| l.contains("installer event") && l.contains(&self.mac) && l.contains("event=installed"))
        };
        self.wait(run, "the daemon to log `installed` for the machine", |run| {
            let log = run.daemon.as_ref().map(|d| d.log_text()).unwrap_or_default();
            if let Some(l) = log.lines().find(|l| l.contains("installer event") && l.contains("event=failed")) {
                bail!("the deploy reported a failure: {l}");
            }
            Ok(installed_line(&log))
        })?;
        let installed = power_on.elapsed();
        let vm = run.vm.as_ref().ok_or_else(|| anyhow!("no vm"))?;
        // 2. Between `installed` and the reboot: pause the machine, kill -9 the daemon, restart it.
        vm.monitor("stop")?;
        let mut first = run.daemon.take().ok_or_else(|| anyhow!("no daemon"))?;
        first.kill()?;
        run.first = Some(first);
        let mac = appliance_core::mac::MacAddr::parse(&self.mac).context("the cell's MAC")?;
        if appliance::install_store::InstallStore::new(&state).installed(mac).is_none() {
            bail!("the install log in {} has no `installed` record for {mac} after the kill", state.display());
        }
        let restarted = out.join("restarted");
        std::fs::create_dir_all(&restarted)?;
        let lab = run.lab.as_ref().ok_or_else(|| anyhow!("no lab"))?;
        run.daemon = Some(Daemon::start(lab, &daemon_spec, &restarted)?);
        run.vm.as_ref().ok_or_else(|| anyhow!("no vm"))?.monitor("cont")?;
        let console_at_kill = run.vm.as_ref().map_or(0, |v| v.text().len());
        self.wait(run, &format!("the disk's {DISK_MARKER} on the console"), |run| {
            Ok(run
                .vm
                .as_ref()
                .is_some_and(|v| v.text().get(console_at_kill..).is_some_and(|t| t.contains(DISK_MARKER))))
        })?;
        let disk_marker = power_on.elapsed();
        let daemon = run.daemon.as_ref().ok_or_else(|| anyhow!("no daemon"))?;
        // An iPXE script (HTTP log: `decision="local"`) or a GRUB config (TFTP log: `outcome=Local`).
        let told_local = daemon.lines_about(&self.mac).iter().any(|l| {
            (l.contains("decision=\"local\"") || l.contains("outcome=Local"))
                && l.contains("booting local until re-armed")
        });
        if !told_local {
            bail!("the disk booted, but the restarted daemon never told the machine to boot locally");
        }

        // 3. Re-armed by the command while the daemon runs; the next power-on netboots the deploy profile.
        let rearm = std::process::Command::new(&bin).arg("rearm").arg("--state").arg(&state).arg(&self.mac).output()?;
        if !rearm.status.success() {
            bail!("appliance rearm failed: {}", String::from_utf8_lossy(&rearm.stderr));
        }
        let kernel = format!("artifacts/{PROFILE}/{version}/vmlinuz");
        let served = |d: &Daemon| d.log_text().lines().filter(|l| l.contains("path=") && l.contains(&kernel)).count();
        let before = served(daemon);
        let reset = Instant::now();
        run.vm.as_ref().ok_or_else(|| anyhow!("no vm"))?.monitor("system_reset")?;
        self.wait(run, "the deploy profile's kernel served again after the re-arm", |run| {
            Ok(run.daemon.as_ref().is_some_and(|d| served(d) > before))
        })?;
        let netboot_again = reset.elapsed();
        // The iPXE script (HTTP log) or the GRUB config (TFTP log) that sent it there.
        let boot_again = [
            format!("decision=\"boot {PROFILE}/{version}\""),
            format!("outcome=Boot {{ profile: \"{PROFILE}\", version: \"{version}\" }}"),
        ];
        let daemon = run.daemon.as_ref().ok_or_else(|| anyhow!("no daemon"))?;
        if !daemon.lines_about(&self.mac).iter().any(|l| boot_again.iter().any(|b| l.contains(b.as_str()))) {
            bail!("the kernel was served, but no boot config for {} said `{}`", self.mac, boot_again[0]);
        }
        Ok(Times { installed, disk_marker, netboot_again })
    }

    /// Polls `done` until it holds; fails on a dead VM or daemon, or after the phase timeout.
    fn wait(&self, run: &mut Running, what: &str, mut done: impl FnMut(&Running) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + self.phase_timeout;
        loop {
            if done(run)? {
                return Ok(());
            }
            if let Some(vm) = run.vm.as_mut() {
                if let Some(status) = vm.exited() {
                    bail!("QEMU exited ({status}) while waiting for {what}");
                }
            }
            if let Some(d) = run.daemon.as_mut() {
                d.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!("no {what} within {:?}", self.phase_timeout);
            }
            sleep(Duration::from_millis(100));
        }
    }
}

/// Log tails for a failure message.
fn evidence(run: &Running) -> String {
    let mut s = String::new();
    if let Some(vm) = &run.vm {
        s.push_str(&format!("--- serial console (last 40 lines):\n{}", tail(&vm.serial_text(), 40)));
    }
    for (what, d) in [("first daemon", &run.first), ("daemon", &run.daemon)] {
        if let Some(d) = d {
            s.push_str(&format!(
                "--- {what} (last 30 lines of {}):\n{}",
                d.log_path().display(),
                tail(&d.log_text(), 30)
            ));
        }
    }
    s
}
