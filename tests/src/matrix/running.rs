//! What one cell has started, and how long since it last showed progress: the guard that stops
//! a cell's processes in order on every exit path, and the stall detector its watch loops use.

use crate::daemon::Daemon;
use crate::dnsmasq::Dnsmasq;
use crate::reference::ReferenceStack;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::lab::Lab;
use testkit::procs::tail;
use testkit::qemu::Vm;

/// When the console and the daemon log last grew.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) seen: (usize, usize),
    pub(super) since: Option<Instant>,
}

impl Progress {
    pub(super) fn stalled(&mut self, now: (usize, usize), limit: Duration) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        if now != self.seen {
            self.seen = now;
            self.since = Some(Instant::now());
            return false;
        }
        since.elapsed() > limit
    }
}

/// Everything one cell started, stopped in field order on drop: VM, daemon, site DHCP, then the
/// links and namespaces.
#[derive(Default)]
pub(super) struct Running {
    pub(super) vm: Option<Vm>,
    pub(super) daemon: Option<Daemon>,
    pub(super) reference: Option<ReferenceStack>,
    pub(super) site: Option<Dnsmasq>,
    pub(super) lab: Option<Lab>,
    /// The artifact version the cell expects, when it expects a boot.
    pub(super) version: Option<String>,
}

impl Running {
    pub(super) fn stop_processes(&mut self) {
        if let Some(vm) = self.vm.as_mut() {
            vm.stop();
        }
        if let Some(d) = self.daemon.as_mut() {
            d.stop();
        }
    }

    /// Log tails for a failure message.
    pub(super) fn evidence(&self, out: &Path) -> String {
        let mut s = String::new();
        if let Some(vm) = &self.vm {
            let _ = write!(
                s,
                "--- serial console (last 40 lines of {}):\n{}",
                vm.serial.as_deref().unwrap_or(Path::new("serial.log")).display(),
                tail(&vm.serial_text(), 40)
            );
            let stderr = vm.stderr_text();
            if !stderr.trim().is_empty() {
                let _ = write!(s, "--- qemu.log:\n{}", tail(&stderr, 10));
            }
        }
        if let Some(d) = &self.daemon {
            let _ = write!(s, "--- daemon (last 40 lines of {}):\n{}", d.log_path().display(), tail(&d.log_text(), 40));
        }
        if let Some(site) = &self.site {
            let _ = write!(
                s,
                "--- site dnsmasq (last 25 lines of {}):\n{}",
                out.join("dnsmasq.log").display(),
                tail(&site.log_text(), 25)
            );
        }
        s
    }
}
