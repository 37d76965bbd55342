//! A running VM: QEMU started from a `Machine` as a `Proc` (stopped by PID on drop), its
//! serial console watched for texts, its monitor socket for commands. Every VM leaves
//! `qemu.cmdline` (the command line) and `qemu.log` (QEMU's own messages) in its directory.

use super::console::{clean, kvm_error};
use super::machine::{Machine, Serial};
use crate::netns::Netns;
use crate::procs::{read_lossy, render_cmdline, Proc};
use anyhow::{bail, Context, Result};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Console lines quoted in errors.
const TAIL_LINES: usize = 25;

pub struct Vm {
    proc: Proc,
    pub name: String,
    /// The serial console's log file (none when it is on this terminal).
    pub serial: Option<PathBuf>,
    /// QEMU's own messages (`qemu.log`).
    pub stderr: PathBuf,
    monitor: Option<PathBuf>,
    pub started: Instant,
}

impl Vm {
    /// Starts `machine`, inside `netns` if given.
    pub fn start(name: &str, machine: &Machine, netns: Option<&Netns>) -> Result<Vm> {
        let mut cmd = machine.command(netns)?;
        std::fs::write(machine.dir.join("qemu.cmdline"), render_cmdline(&cmd) + "\n")?;
        let stderr = machine.dir.join("qemu.log");
        // A fresh log: an old run's KVM error must not fail this one.
        std::fs::write(&stderr, "").with_context(|| format!("failed to create {}", stderr.display()))?;
        let serial = match &machine.serial {
            Serial::File(path) => {
                let _ = std::fs::remove_file(path);
                Some(path.clone())
            }
            Serial::Stdio => None,
        };
        let started = Instant::now();
        let mut proc = match serial {
            Some(_) => Proc::spawn(name, &mut cmd, &stderr)?,
            None => Proc::spawn_attached(name, &mut cmd, &stderr)?,
        };
        // QEMU ends at once on SIGTERM; the grace only matters for a hung one.
        proc.grace = Duration::from_secs(2);
        let monitor = machine.monitor.then(|| machine.monitor_socket());
        Ok(Vm { proc, name: name.to_owned(), serial, stderr, monitor, started })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The serial console so far, as QEMU wrote it (invalid UTF-8 replaced).
    pub fn serial_text(&self) -> String {
        self.serial.as_deref().map(read_lossy).unwrap_or_default()
    }

    /// The serial console so far, cleaned (`console::clean`).
    pub fn text(&self) -> String {
        clean(&self.serial_text())
    }

    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// KVM's emulation failure, if QEMU or the console reports it.
    pub fn kvm_failure(&self) -> Option<&'static str> {
        kvm_error(&self.stderr_text()).or_else(|| kvm_error(&self.serial_text()))
    }

    /// The exit status once QEMU has ended (never blocks).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exited()
    }

    /// Waits until the cleaned console shows `needle` after byte `from` of it. Returns the
    /// time since the VM started and the position just after the match.
    pub fn wait_for(&mut self, needle: &str, from: usize, timeout: Duration) -> Result<(Duration, usize)> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the exit status first: a console read after it holds everything QEMU wrote.
            let exited = self.exited();
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return Ok((self.started.elapsed(), from + i + needle.len()));
            }
            if let Some(status) = exited {
                bail!("{} exited ({status}) before printing {needle:?}; {}", self.name, self.tail());
            }
            if let Some(e) = self.kvm_failure() {
                bail!("{}: QEMU hit the broken KVM ({e}); x86 guests must run with -accel tcg", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} did not print {needle:?} within {}s; {}", self.name, timeout.as_secs(), self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {}s; {}", self.name, timeout.as_secs(), self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for QEMU in the foreground (interactive use).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.proc.wait()
    }

    /// Stops QEMU by its PID (SIGTERM, which `timeout` passes on) and reaps it.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// The last lines of the console and QEMU's own messages, for error reports.
    pub fn tail(&self) -> String {
        let err = self.stderr_text();
        format!(
            "last console lines:\n{}{}",
            crate::procs::tail(&self.serial_text(), TAIL_LINES),
            if err.trim().is_empty() { String::new() } else { format!("QEMU said: {}", err.trim()) }
        )
    }

    /// Sends a human monitor command (e.g. `system_powerdown`).
    pub fn monitor(&self, command: &str) -> Result<()> {
        let Some(socket) = &self.monitor else { bail!("{} was started without a monitor", self.name) };
        let mut s = std::os::unix::net::UnixStream::connect(socket)
            .with_context(|| format!("cannot reach {}'s monitor at {}", self.name, socket.display()))?;
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
}
