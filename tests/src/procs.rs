//! Child processes the tests start (QEMU, the daemon, dnsmasq), each stopped by its own PID when
//! its guard is dropped: on success, failure, panic or timeout. Nothing is ever killed by name.
//! Also the VM slots: at most N VMs at a time in this test process (default 2: TCG guests each
//! want a core, and the machine has two; `BOOT_TESTS_VMS=N` changes it). cargo runs test
//! binaries one after the other, so a per-process limit is a global one.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running child. `ip netns exec NS prog` execs `prog` in place (no fork without `-b`), so
/// the PID we hold is the program's own.
pub struct Proc {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    /// How long `Drop` waits after SIGTERM before SIGKILL.
    pub grace: Duration,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name: name.to_string(), child, exited: None, grace: Duration::from_secs(3) })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status once the process has ended (reaps it; never blocks).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit. Only ever signals our own child,
    /// and only while it is unreaped (so the PID cannot have been reused).
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server the tests start (the daemon, dnsmasq) with its output in a log file, which is how
/// the harness learns that it is ready and why it died.
pub struct Logged {
    pub proc: Proc,
    log: PathBuf,
    /// Log lines quoted in errors.
    tail_lines: usize,
}

impl Logged {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf, tail_lines: usize) -> Result<Logged> {
        let proc = Proc::spawn(name, cmd, &log)?;
        Ok(Logged { proc, log, tail_lines })
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Polls the log every `every` until `ready` accepts it; fails (quoting the log) if the
    /// process exits first or `timeout` passes, which names `what` was awaited.
    pub fn wait_for(
        &mut self,
        ready: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
        every: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let text = self.log_text();
            if ready(&text) {
                return Ok(());
            }
            if let Some(status) = self.proc.exited() {
                bail!(
                    "{} exited during start-up ({status}):\n{}",
                    self.proc.name(),
                    crate::serial::tail(&text, self.tail_lines)
                );
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} did not {what} within {timeout:?}:\n{}",
                    self.proc.name(),
                    crate::serial::tail(&text, self.tail_lines)
                );
            }
            sleep(every);
        }
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.proc.exited() {
            bail!(
                "{} exited ({status}):\n{}",
                self.proc.name(),
                crate::serial::tail(&self.log_text(), self.tail_lines)
            );
        }
        Ok(())
    }
}

/// Runs a short command to completion; its stderr is part of the error.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command line as one shell-readable string (for the `*.cmdline` files).
pub fn render_cmdline(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\;".contains(c)) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

// --- VM slots --------------------------------------------------------------------------------

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

pub fn vm_limit() -> usize {
    std::env::var("BOOT_TESTS_VMS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(2)
}

/// Held while a cell runs its VM; released on drop (also when the cell panics).
pub struct Slot(());

pub fn acquire_vm_slot() -> Slot {
    let limit = vm_limit();
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    while *running >= limit {
        running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
    }
    *running += 1;
    Slot(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running = running.saturating_sub(1);
        FREED.notify_one();
    }
}
