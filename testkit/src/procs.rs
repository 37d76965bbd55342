//! Child processes the tests and xtask start (QEMU, the daemon, dnsmasq, load generators),
//! each stopped by its own PID when its guard is dropped: on success, failure, panic or
//! timeout. Nothing is ever killed by name. A hard lifetime (`timeout -k 5 SECS`) ends a child
//! even when the process that started it is killed outright and no `Drop` runs.
//!
//! Also the VM slots: at most N VMs at a time in this process (default 2: TCG guests each want
//! a core, and the machine has two; `BOOT_TESTS_VMS=N` changes it). cargo runs test binaries
//! one after the other, so a per-process limit is a global one.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long `timeout` waits after its TERM before it sends KILL.
const KILL_AFTER_SECS: &str = "5";

/// The words that run a program for at most `lifetime` (`timeout -k 5 SECS`), or nothing.
/// `timeout` passes our SIGTERM on to the program, so stopping it by PID still works.
pub fn lifetime_prefix(lifetime: Option<Duration>) -> Vec<String> {
    match lifetime {
        Some(l) => ["timeout", "-k", KILL_AFTER_SECS].map(String::from).into_iter().chain([secs(l)]).collect(),
        None => Vec::new(),
    }
}

fn secs(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}

/// `program`, run for at most `lifetime` when one is given.
pub fn limited(program: impl AsRef<OsStr>, lifetime: Option<Duration>) -> Command {
    command_after(&lifetime_prefix(lifetime), program)
}

/// A command running `program` behind the words of `prefix` (empty: the program itself).
pub(crate) fn command_after(prefix: &[String], program: impl AsRef<OsStr>) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running child. `ip netns exec NS prog` and `timeout` exec in place or pass signals on, so
/// the PID we hold stands for the program.
pub struct Proc {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub grace: Duration,
}

impl Proc {
    /// Starts `cmd` with stdin from /dev/null, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let out = append(log)?;
        let err = out.try_clone()?;
        Self::start(name, cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)))
    }

    /// Starts `cmd` on this terminal (stdin and stdout inherited), stderr appended to `log`:
    /// an interactive program, e.g. a VM with its serial console here.
    pub fn spawn_attached(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let err = append(log)?;
        Self::start(name, cmd.stderr(Stdio::from(err)))
    }

    fn start(name: &str, cmd: &mut Command) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
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

    /// Waits for the exit (a program in the foreground).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.name))?;
        self.exited = Some(status);
        Ok(status)
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
            sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }
}

impl Proc {
    /// SIGKILL to the program itself, as `kill -9` would (no shutdown, nothing more written):
    /// under a lifetime the program is the only child of `timeout` (our child), which cannot
    /// pass SIGKILL on; otherwise it is our child. Then reaps our child.
    pub fn kill_program(&mut self) -> Result<()> {
        if self.exited().is_some() {
            anyhow::bail!("{} has already exited", self.name);
        }
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let target = match children.split_whitespace().collect::<Vec<_>>()[..] {
            [] => pid,
            [only] => only.parse().with_context(|| format!("child pid {only:?} of {}", self.name))?,
            ref many => {
                anyhow::bail!("{} (pid {pid}) has {} children; which one to kill is unclear", self.name, many.len())
            }
        };
        kill(Pid::from_raw(target as i32), Signal::SIGKILL)
            .with_context(|| format!("kill -9 {target} ({})", self.name))?;
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.name))?;
        self.exited = Some(status);
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append(log: &Path) -> Result<File> {
    File::options().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))
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
        read_lossy(&self.log)
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
                bail!("{} exited during start-up ({status}):\n{}", self.proc.name(), tail(&text, self.tail_lines));
            }
            if started.elapsed() > timeout {
                bail!("{} did not {what} within {timeout:?}:\n{}", self.proc.name(), tail(&text, self.tail_lines));
            }
            sleep(every);
        }
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.proc.exited() {
            bail!("{} exited ({status}):\n{}", self.proc.name(), tail(&self.log_text(), self.tail_lines));
        }
        Ok(())
    }
}

/// A file's bytes as text (invalid UTF-8 replaced); empty when it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `n` non-blank lines of a log or console, cleaned (`qemu::console::clean`) and
/// indented with `    | ` for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let clean = crate::qemu::console::clean(text);
    let lines: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("    | {l}\n")).collect()
}

/// Runs a short command to completion; its stderr is part of the error.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command line as one shell-readable string (for the `*.cmdline` files and hints).
pub fn render_cmdline(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\;()".contains(c)) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Searches `$PATH` plus the sbin folders (root tools live there).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// --- VM slots --------------------------------------------------------------------------------

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// `BOOT_TESTS_VMS`, default 2.
pub fn vm_limit() -> usize {
    std::env::var("BOOT_TESTS_VMS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(2)
}

/// Held while a test runs its VMs; released on drop (also when the test panics).
pub struct Slot(());

/// Waits for a free VM slot.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `kill -9` reaches the program behind `timeout`, not only `timeout`.
    #[test]
    fn kill_program_kills_the_program_behind_timeout() {
        let dir = std::env::temp_dir().join(format!("testkit-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = limited("sleep", Some(Duration::from_secs(60)));
        let mut p = Proc::spawn("sleep", cmd.arg("60"), &dir.join("log")).unwrap();
        let pid = p.pid();
        let children = || std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while children().trim().is_empty() && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        let program: u32 = children().trim().parse().unwrap();
        p.kill_program().unwrap();
        assert!(p.exited().is_some());
        // The program is gone (not merely orphaned): no process, or a zombie about to be reaped.
        let state = std::fs::read_to_string(format!("/proc/{program}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "{state}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lifetimes_wrap_the_program_in_timeout() {
        let cmd = limited("qemu-system-x86_64", Some(Duration::from_millis(300)));
        assert_eq!(render_cmdline(&cmd), "timeout -k 5 1 qemu-system-x86_64");
        let cmd = limited("qemu-system-x86_64", Some(Duration::from_secs(600)));
        assert_eq!(render_cmdline(&cmd), "timeout -k 5 600 qemu-system-x86_64");
        assert_eq!(render_cmdline(&limited("dnsmasq", None)), "dnsmasq");
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let mut cmd = Command::new("qemu");
        cmd.args(["-fw_cfg", "name=opt/x,string=no", "", "a b", "it's", "f(x)"]);
        assert_eq!(render_cmdline(&cmd), r"qemu -fw_cfg name=opt/x,string=no '' 'a b' 'it'\''s' 'f(x)'");
    }

    #[test]
    fn a_dropped_guard_stops_its_child() {
        let dir = std::env::temp_dir().join(format!("testkit-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sleep.log");
        let mut proc = Proc::spawn("sleep", &mut limited("sleep", Some(Duration::from_secs(30))), &log).unwrap();
        assert!(proc.exited().is_none());
        let pid = proc.pid();
        drop(proc);
        // Reaped: the PID no longer names a process of ours.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slots_limit_concurrent_vms() {
        let limit = vm_limit();
        let held: Vec<Slot> = (0..limit).map(|_| acquire_vm_slot()).collect();
        assert_eq!(*RUNNING.lock().unwrap(), limit);
        drop(held);
        assert_eq!(*RUNNING.lock().unwrap(), 0);
    }
}
