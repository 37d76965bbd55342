//! One cell of the boot matrix, end to end: check the host, build the config, set up the
//! namespaces, start the site DHCP (proxy/off), the daemon and the VM, watch the serial console,
//! judge, clean up. Everything a cell starts is owned by a guard that stops it by PID and
//! removes its namespaces on every exit path, panics included.

use crate::client::Client;
use crate::config::{ConfigSpec, TestConfig};
use crate::daemon::{Daemon, DaemonSpec};
use crate::dnsmasq::{Dnsmasq, SiteDhcp};
use crate::host;
use crate::reference::{self, ReferenceStack};
use anyhow::{anyhow, bail, Result};
use appliance_core::arch::Arch;
use appliance_core::catalog::DhcpMode;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};
use testkit::lab::{Lab, NS_PREFIX};
use testkit::procs;
use testkit::qemu::console::{find_marker, Marker, MARKER};
use testkit::qemu::Vm;

mod running;
use running::{Progress, Running};

/// The file name the site DHCP hands every client in off mode.
pub const OFF_MODE_BOOT_FILE: &str = "undionly.kpxe";

/// A boot that shows no progress for this long (no new console output, no new daemon log line)
/// has stalled: fail it now instead of at the timeout. The quiet stretches of a good boot are
/// the kernel booting with `quiet` (2 s alone, 34 s seen with the machine's two cores under a
/// load of 7) and GRUB or U-Boot fetching the 33 MB arm64 kernel by TFTP (the daemon logs a
/// transfer when it ends; 16 s seen).
pub const DEFAULT_STALL: Duration = Duration::from_secs(90);

/// Default limit from QEMU start to the marker: the slowest reference boot (SeaBIOS →
/// undionly.kpxe, untuned) took 46 s alone; two TCG VMs share two cores.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Clone, Debug)]
pub enum Expect {
    /// The payload's marker naming this profile, the architecture and the catalog's version.
    Boot { profile: String, arch: Arch },
    /// Nothing we serve boots within the time; the daemon must have seen the client's DHCP.
    NoBoot { within: Duration },
    /// The installer of this profile (`installer`) at its mirror step, preseeded by us.
    Installer { profile: String, arch: Arch },
}

/// Who serves the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// `appliance serve`.
    Ours,
    /// The reference stack (`reference`: dnsmasq + Python HTTP) serving the files our daemon would,
    /// for a comparison; server mode only.
    Reference,
}

#[derive(Clone, Debug)]
pub struct Cell {
    pub name: String,
    pub client: Client,
    pub mode: DhcpMode,
    pub mac: String,
    pub config: ConfigSpec,
    pub expect: Expect,
    pub timeout: Duration,
    pub stall: Duration,
    /// Port the daemon's DHCP listens on (67; see `DaemonSpec::dhcp_port`).
    pub daemon_dhcp_port: u16,
    /// Texts the serial console must show besides the marker: proof the boot took the path the
    /// cell is about (e.g. OVMF's ">>Start HTTP Boot over IPv4"), not some fallback.
    pub serial_shows: Vec<String>,
    /// Texts the daemon's log must show (e.g. which rule decided).
    pub daemon_log_shows: Vec<String>,
    /// Texts the daemon's log must not show (a request that must never reach us).
    pub daemon_log_lacks: Vec<String>,
    pub stack: Stack,
    /// The VM's memory, when it needs more than `Machine::new`'s default.
    pub memory_mb: Option<u32>,
    /// For a no-boot cell: once the console shows this, the outcome is settled (the firmware
    /// refused what it got, say) and the cell ends without waiting out `within`.
    pub settled_by: Option<String>,
    /// After the boot, headless Chromium checks the daemon's status pages (`crate::browser`).
    pub status_pages: bool,
}

/// What a passing boot cell measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// From QEMU start to the payload's marker (or the installer's mirror step).
    pub time_to_marker: Option<Duration>,
    pub marker: Option<Marker>,
    pub out_dir: PathBuf,
}

impl Cell {
    pub fn new(name: &str, client: Client, mode: DhcpMode) -> Cell {
        let secs = |var: &str| std::env::var(var).ok().and_then(|s| s.parse().ok()).map(Duration::from_secs);
        let timeout = secs("BOOT_TESTS_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT);
        let stall = secs("BOOT_TESTS_STALL").unwrap_or(DEFAULT_STALL);
        Cell {
            name: name.to_string(),
            client,
            mode,
            mac: String::new(),
            config: ConfigSpec { mode, ..ConfigSpec::default() },
            expect: Expect::Boot { profile: "tiny-live".into(), arch: client.arch() },
            timeout,
            stall,
            daemon_dhcp_port: 67,
            serial_shows: client.path_texts().iter().map(|t| t.to_string()).collect(),
            daemon_log_shows: Vec::new(),
            daemon_log_lacks: Vec::new(),
            stack: Stack::Ours,
            memory_mb: None,
            settled_by: None,
            status_pages: false,
        }
    }

    /// After the boot, check the status pages in headless Chromium (`crate::browser`).
    pub fn status_pages(mut self) -> Cell {
        self.status_pages = true;
        self
    }

    /// The same cell served by the reference stack instead of our daemon, named `<name>-reference`.
    pub fn reference(mut self) -> Cell {
        self.name = format!("{}-reference", self.name);
        self.stack = Stack::Reference;
        self.daemon_log_shows.clear();
        self
    }

    /// The VM's MAC, not in the MAC database.
    pub fn mac(mut self, mac: &str) -> Cell {
        self.mac = mac.to_string();
        self
    }

    /// The VM's MAC, with this `machines.yaml` entry.
    pub fn machine(mut self, mac: &str, entry: &str) -> Cell {
        self.mac = mac.to_string();
        self.config.machines.push((mac.to_string(), entry.to_string()));
        self
    }

    /// Sets keys of the `vars` of `mac`'s entry in the example `machines.yaml` (a YAML mapping).
    pub fn machine_vars(mut self, mac: &str, vars: &str) -> Cell {
        self.config.machine_vars.push((mac.to_string(), vars.to_string()));
        self
    }

    pub fn vendor_rule(mut self, rule: &str) -> Cell {
        self.config.vendors.push(rule.to_string());
        self
    }

    pub fn menu_timeout(mut self, secs: u32) -> Cell {
        self.config.menu_timeout_secs = Some(secs);
        self
    }

    pub fn expect_boot(mut self, profile: &str) -> Cell {
        self.expect = Expect::Boot { profile: profile.to_string(), arch: self.client.arch() };
        self
    }

    /// The Debian installer (`installer::PROFILE`) must reach its mirror step, preseeded by us
    /// (`installer`); with the memory it needs and a limit that allows for its ~70 s.
    /// The machine (`mac` first) names the test network's mirror (`installer::test_mirror`).
    pub fn expect_installer(mut self) -> Cell {
        assert!(!self.mac.is_empty(), "{}: set the MAC before expect_installer", self.name);
        self.config.machine_vars.push((self.mac.clone(), crate::installer::test_mirror()));
        self.expect = Expect::Installer { profile: crate::installer::PROFILE.into(), arch: self.client.arch() };
        self.memory_mb = Some(crate::installer::MEMORY_MB);
        self.timeout = self.timeout.max(crate::installer::TIMEOUT);
        self.stall = self.stall.max(crate::installer::TIMEOUT / 2);
        self
    }

    pub fn expect_no_boot(mut self, within: Duration) -> Cell {
        self.expect = Expect::NoBoot { within };
        self.serial_shows.clear();
        self
    }

    /// A no-boot cell ends as soon as the console shows `text` (it must, within the time).
    pub fn settled_by(mut self, text: &str) -> Cell {
        self.settled_by = Some(text.to_string());
        self
    }

    pub fn daemon_dhcp_port(mut self, port: u16) -> Cell {
        self.daemon_dhcp_port = port;
        self
    }

    pub fn serial_shows(mut self, text: &str) -> Cell {
        self.serial_shows.push(text.to_string());
        self
    }

    pub fn daemon_log_shows(mut self, text: &str) -> Cell {
        self.daemon_log_shows.push(text.to_string());
        self
    }

    pub fn daemon_log_lacks(mut self, text: &str) -> Cell {
        self.daemon_log_lacks.push(text.to_string());
        self
    }

    /// After the run: the path checks (`serial_shows`, `daemon_log_shows`).
    fn check_path(&self, run: &Running) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(vm) = &run.vm {
            let console = vm.text();
            for want in &self.serial_shows {
                if !console.contains(want.as_str()) {
                    problems.push(format!("the serial console never shows {want:?}"));
                }
            }
        }
        if let Some(d) = &run.daemon {
            let log = d.log_text();
            for want in &self.daemon_log_shows {
                if !log.contains(want.as_str()) {
                    problems.push(format!("the daemon log never shows {want:?}"));
                }
            }
            for unwanted in &self.daemon_log_lacks {
                if log.contains(unwanted.as_str()) {
                    problems.push(format!("the daemon log shows {unwanted:?}"));
                }
            }
        }
        if let (Expect::Installer { .. }, Some(version)) = (&self.expect, &run.version) {
            let mac = appliance_core::mac::MacAddr::parse(&self.mac).map_err(|e| anyhow!("cell MAC: {e}"))?;
            let checked = match (&run.daemon, &run.reference) {
                (Some(d), _) => crate::installer::check_daemon_log(&d.log_text(), mac, version),
                (None, Some(r)) => crate::installer::check_reference_log(&r.http_log_text(), mac),
                (None, None) => Err(anyhow!("no server ran")),
            };
            if let Err(e) = checked {
                problems.push(format!("{e:#}"));
            }
        }
        // In the proxy and off columns the address must come from the site's DHCP server.
        if let (Some(site), Expect::Boot { .. } | Expect::Installer { .. }) = (&run.site, &self.expect) {
            if site.acked(&self.mac).is_none() {
                problems.push(format!("the site dnsmasq never acknowledged a lease for {}", self.mac));
            }
        }
        if !problems.is_empty() {
            bail!("booted, but not along the expected path: {}", problems.join("; "));
        }
        Ok(())
    }

    fn site(&self) -> Option<SiteDhcp> {
        match self.mode {
            DhcpMode::Server => None,
            DhcpMode::Proxy => Some(SiteDhcp::AddressesOnly),
            DhcpMode::Off => Some(SiteDhcp::NextServer { boot_file: OFF_MODE_BOOT_FILE.into() }),
        }
    }

    /// Runs the cell; panics with the evidence (log tails, file paths) when it fails.
    pub fn run(self) -> Outcome {
        let out = match host::fresh_out_dir(&self.name) {
            Ok(o) => o,
            Err(e) => panic!("{}: {e:#}", self.name),
        };
        let started = Instant::now();
        let result = self.run_in(&out);
        let elapsed = started.elapsed();
        let (status, detail) = match &result {
            Ok(o) => match (o.time_to_marker, &o.marker) {
                (Some(t), Some(m)) => ("pass", format!("marker after {:.1} s: {}", t.as_secs_f64(), m.cmdline)),
                (Some(t), None) => ("pass", format!("installer at the mirror step after {:.1} s", t.as_secs_f64())),
                _ => ("pass", "no boot, as expected".to_string()),
            },
            Err(e) => ("FAIL", format!("{e:#}").lines().next().unwrap_or("").to_string()),
        };
        let when = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let line = format!(
            "{when}\t{}\t{status}\t{}\t{:.1}\t{detail}\n",
            self.name,
            result
                .as_ref()
                .ok()
                .and_then(|o| o.time_to_marker)
                .map_or("-".into(), |t| format!("{:.1}", t.as_secs_f64())),
            elapsed.as_secs_f64()
        );
        let _ = std::fs::write(out.join("result.txt"), &line);
        if let Ok(mut f) = std::fs::File::options().create(true).append(true).open(host::summary_file()) {
            let _ = f.write_all(line.as_bytes());
        }
        match result {
            Ok(o) => {
                println!("{}: {status}: {detail} (cell total {:.1} s)", self.name, elapsed.as_secs_f64());
                o
            }
            Err(e) => panic!(
                "{}: FAILED after {:.1} s: {e:#}\n(all logs in {})",
                self.name,
                elapsed.as_secs_f64(),
                out.display()
            ),
        }
    }

    fn run_in(&self, out: &Path) -> Result<Outcome> {
        testkit::netns::remove_stale_once(NS_PREFIX);
        let bootloaders = host::bootloaders_dir();
        let blobs = host::blobs_dir();
        let site = self.site();
        let needs =
            host::Needs { client: self.client, site_dhcp: site.is_some(), bootloaders: &bootloaders, blobs: &blobs };
        let mut missing = host::missing(&needs);
        let scratch = tempfile::Builder::new().prefix(&format!("boot-test-{}-", self.name)).tempdir()?;
        let config_dir = scratch.path().join("config");
        let config = TestConfig::build(&host::profiles_dir(), &config_dir, &self.config)?;
        if self.status_pages {
            missing.extend(crate::browser::missing());
        }
        missing.extend(config.missing_blobs(&blobs).into_iter().map(|m| format!("{m}: run `cargo xtask fetch`")));
        if !missing.is_empty() {
            bail!(host::report(&missing));
        }
        crate::config::copy_tree(&config_dir, &out.join("config"))?;
        let expected = match &self.expect {
            Expect::Boot { profile, arch } | Expect::Installer { profile, arch } => {
                Some((profile.clone(), *arch, config.version(profile, *arch)?))
            }
            Expect::NoBoot { .. } => None,
        };
        let bin = host::appliance_bin()?;

        let _slot = procs::acquire_vm_slot();
        // Safety net only: the guards stop everything long before (see `Netns::command`).
        let lifetime = self.timeout.max(self.stall) + Duration::from_secs(120);
        let mut run = Running { version: expected.as_ref().map(|e| e.2.clone()), ..Running::default() };
        let lab = run.lab.insert(Lab::new(&self.name, site.is_some())?);
        let tap = lab.add_tap()?;
        if let Some(kind) = &site {
            let ns = lab.site().ok_or_else(|| anyhow!("no site namespace"))?;
            run.site = Some(Dnsmasq::start(ns, kind, out, scratch.path(), lifetime)?);
        }
        let state = scratch.path().join("state");
        std::fs::create_dir_all(&state)?;
        let t_daemon = Instant::now();
        let spec = DaemonSpec {
            bin: &bin,
            config: &config_dir,
            state: &state,
            bootloaders: &bootloaders,
            blobs: &blobs,
            mode: self.mode,
            dhcp_port: self.daemon_dhcp_port,
            lifetime,
        };
        let lab = run.lab.as_ref().ok_or_else(|| anyhow!("no lab"))?;
        if self.stack == Stack::Reference {
            let Some((profile, arch, _)) = &expected else { bail!("a reference cell must expect a boot") };
            if self.mode != DhcpMode::Server {
                bail!("the reference stack is a DHCP server: server mode only");
            }
            // Our daemon with DHCP off only lends its files; it stops before the VM starts.
            let lender = DaemonSpec { mode: DhcpMode::Off, dhcp_port: 1067, ..spec };
            let mut daemon = Daemon::start(lab, &lender, out)?;
            let mac =
                appliance_core::mac::MacAddr::parse(&self.mac).map_err(|e| anyhow!("cell MAC {}: {e}", self.mac))?;
            let root = reference::root_in(scratch.path());
            let files = reference::files(self.client, mac, &config.catalog, profile, *arch)?;
            reference::mirror(lab.server(), &root, &files)?;
            // A `chain_ipxe` machine gets undionly.kpxe from the ROM first, as our daemon does.
            if config.catalog.machine(mac).is_some_and(|m| m.chain_ipxe) {
                reference::chain_undionly_first(&root)?;
            }
            daemon.stop();
            run.reference = Some(ReferenceStack::start(lab.server(), &root, out, scratch.path(), lifetime)?);
            println!("{}: reference stack ready in {:.1} s", self.name, t_daemon.elapsed().as_secs_f64());
        } else {
            run.daemon = Some(Daemon::start(lab, &spec, out)?);
            println!("{}: daemon ready in {:.1} s", self.name, t_daemon.elapsed().as_secs_f64());
        }
        let mut machine = self.client.machine(&self.mac, &tap, out, lifetime);
        if let Some(mb) = self.memory_mb {
            machine.memory_mb = mb;
        }
        run.vm = Some(Vm::start("qemu", &machine, Some(lab.server()))?);

        let result = match &expected {
            Some((profile, arch, version)) => self.watch_boot(&mut run, profile, *arch, version),
            None => self.watch_no_boot(&mut run),
        };
        let result = match (result, &expected, run.lab.as_ref()) {
            (Ok(o), Some((profile, _, version)), Some(lab)) if self.status_pages && run.daemon.is_some() => {
                if let Some(vm) = run.vm.as_mut() {
                    vm.stop();
                }
                let want = crate::browser::Expected {
                    mac: &self.mac,
                    profile,
                    version,
                    steps: &["dhcp", "config", "artifact"],
                };
                crate::browser::check_status_pages(lab.server(), out, &want).map(|()| o)
            }
            (result, _, _) => result,
        };
        // Stop the VM and the daemon (so its last log lines are written) before showing the logs.
        run.stop_processes();
        let result = result.and_then(|o| self.check_path(&run).map(|()| o));
        let mut outcome = result.map_err(|e| anyhow!("{e:#}\n{}", run.evidence(out)))?;
        outcome.out_dir = out.to_path_buf();
        Ok(outcome)
    }

    fn watch_boot(&self, run: &mut Running, profile: &str, arch: Arch, version: &str) -> Result<Outcome> {
        let started = run.vm.as_ref().ok_or_else(|| anyhow!("no vm"))?.started;
        let deadline = started + self.timeout;
        let mut progress = Progress::default();
        loop {
            self.check_fatal(run)?;
            let daemon_log_len = run.daemon.as_ref().map_or(0, |d| d.log_len());
            let vm = run.vm.as_mut().ok_or_else(|| anyhow!("no vm"))?;
            // Read the exit status first: a console read after it holds everything QEMU wrote.
            let exited = vm.exited();
            let console = vm.serial_text();
            if let Expect::Installer { .. } = self.expect {
                // Judged after the run (`check_path`): the server's logs are complete then.
                if let Some(text) = crate::installer::at_mirror_step(&testkit::qemu::console::clean(&console)) {
                    let t = started.elapsed();
                    vm.stop();
                    println!(
                        "{}: mirror step after {:.1} s ({text:?}; {profile} {arch} {version})",
                        self.name,
                        t.as_secs_f64()
                    );
                    return Ok(Outcome { time_to_marker: Some(t), marker: None, out_dir: PathBuf::new() });
                }
            } else if let Some(marker) = find_marker(&console) {
                let t = started.elapsed();
                vm.stop();
                let want =
                    [("appliance.profile", profile), ("appliance.arch", arch.as_str()), ("appliance.version", version)];
                let mut wrong = String::new();
                for (key, value) in want {
                    if marker.param(key) != Some(value) {
                        let _ = write!(wrong, " {key}: expected {value}, got {:?};", marker.param(key));
                    }
                }
                if !wrong.is_empty() {
                    bail!(
                        "booted the wrong thing after {:.1} s:{wrong}\n  marker: {}",
                        t.as_secs_f64(),
                        marker.cmdline
                    );
                }
                println!("{}: time-to-marker {:.1} s ({profile} {arch} {version})", self.name, t.as_secs_f64());
                return Ok(Outcome { time_to_marker: Some(t), marker: Some(marker), out_dir: PathBuf::new() });
            }
            if let Some(status) = exited {
                let what = match self.expect {
                    Expect::Installer { .. } => "the installer's mirror step",
                    _ => "the marker",
                };
                bail!("QEMU exited ({status}) after {:.1} s without {what}", started.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                match self.expect {
                    Expect::Installer { .. } => bail!("no installer mirror step within {:?} (timeout)", self.timeout),
                    _ => bail!("no {} marker within {:?} (timeout)", MARKER, self.timeout),
                }
            }
            if progress.stalled((console.len(), daemon_log_len), self.stall) {
                bail!(
                    "stalled: no new console output and no daemon activity for {:?} ({:.1} s after QEMU start)",
                    self.stall,
                    started.elapsed().as_secs_f64()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn watch_no_boot(&self, run: &mut Running) -> Result<Outcome> {
        let Expect::NoBoot { within } = self.expect else { bail!("not a no-boot cell") };
        let vm = run.vm.as_mut().ok_or_else(|| anyhow!("no vm"))?;
        let started = vm.started;
        let deadline = started + within;
        while Instant::now() < deadline {
            self.check_fatal(run)?;
            let vm = run.vm.as_mut().ok_or_else(|| anyhow!("no vm"))?;
            if let Some(marker) = find_marker(&vm.serial_text()) {
                bail!("expected no boot, but the payload came up: {}", marker.cmdline);
            }
            if vm.exited().is_some() {
                break;
            }
            if self.settled_by.as_ref().is_some_and(|t| vm.text().contains(t.as_str())) {
                break;
            }
            sleep(Duration::from_millis(200));
        }
        if let Some(text) = &self.settled_by {
            let console = run.vm.as_ref().map(|vm| vm.text()).unwrap_or_default();
            if !console.contains(text.as_str()) {
                bail!("the console never showed {text:?} within {within:?}");
            }
        }
        let daemon = run.daemon.as_ref().ok_or_else(|| anyhow!("no daemon"))?;
        let seen: Vec<String> = daemon.lines_about(&self.mac).into_iter().filter(|l| l.contains("dhcp")).collect();
        if seen.is_empty() {
            bail!("the daemon logged no DHCP exchange with {} within {within:?}", self.mac);
        }
        let how = match &self.settled_by {
            Some(text) => format!("settled by {text:?} after {:.1} s", started.elapsed().as_secs_f64()),
            None => format!("within {within:?}"),
        };
        println!("{}: no boot ({how}), as expected; the daemon saw:\n{}", self.name, seen.join("\n"));
        Ok(Outcome { time_to_marker: None, marker: None, out_dir: PathBuf::new() })
    }

    /// Errors that end a cell at once: KVM's emulation failure, a dead daemon or dnsmasq.
    fn check_fatal(&self, run: &mut Running) -> Result<()> {
        if let Some(vm) = run.vm.as_ref() {
            if let Some(e) = vm.kvm_failure() {
                bail!(
                    "QEMU reports \"{e}\": this machine's KVM cannot run the guest; use TCG (unset BOOT_TESTS_ACCEL, \
                     see docs/firmware.md#kvm-and-tcg)"
                );
            }
        }
        if let Some(d) = run.daemon.as_mut() {
            d.check_alive()?;
        }
        if let Some(s) = run.site.as_mut() {
            s.check_alive()?;
        }
        Ok(())
    }
}
