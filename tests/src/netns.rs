//! Network namespaces, one private boot network per test:
//!
//! ```text
//!  netns bt-<test>-<pid>                          netns bt-<test>-<pid>-site (proxy/off only)
//!  ┌───────────────────────────────────────┐      ┌──────────────────────────────┐
//!  │ appliance serve ── br0 10.77.0.1/24   │      │ dnsmasq ── eth0 10.77.0.2/24 │
//!  │                   ├─ tap0 ── QEMU VM  │      └────────────┬─────────────────┘
//!  │                   ├─ site ────────────┼── veth pair ──────┘
//!  │                   └─ carrier0 (veth)  │
//!  └───────────────────────────────────────┘
//! ```
//!
//! Everything is created with `ip` and removed again by the guards' `Drop`, after the
//! processes inside have been stopped.

use crate::procs::run;
use anyhow::{Context, Result};
use std::process::Command;

/// Our address on the boot network (as in the shipped `appliance.yaml`).
pub const SERVER_IP: &str = "10.77.0.1";
/// The foreign ("site") DHCP server's address.
pub const SITE_IP: &str = "10.77.0.2";
pub const PREFIX: u8 = 24;
pub const BRIDGE: &str = "br0";
/// The bridge port that keeps the bridge up (its peer is `carrier1`).
const CARRIER: &str = "carrier0";

/// Every namespace name starts with this, then the test name and our PID.
pub const NS_PREFIX: &str = "bt-";

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name]).with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace, for at most `lifetime`:
    /// `ip netns exec NS timeout -k 5 SECS program …`. `ip netns exec` execs in place, so the
    /// child's PID is `timeout`'s, which passes our SIGTERM on to the program. The lifetime is a
    /// safety net for a test process that is killed outright (no `Drop` runs then): its VMs and
    /// daemons still end, and the next run removes the namespaces they leave.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, lifetime: std::time::Duration) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .args(["timeout", "-k", "5", &lifetime.as_secs().max(1).to_string()])
            .arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete network namespace {}: {e:#}", self.name);
        }
    }
}

/// One test's boot network: the server namespace with the bridge, optionally a second namespace
/// for the site DHCP server, and the taps for the VMs.
pub struct Lab {
    taps: Vec<String>,
    has_site: bool,
    // Dropped after the links are deleted (field order): the site first, then the server side.
    site: Option<Netns>,
    server: Netns,
}

impl Lab {
    /// `test` must be unique per test; the PID makes the names unique per run.
    pub fn new(test: &str, with_site: bool) -> Result<Lab> {
        let base = format!("{NS_PREFIX}{test}-{}", std::process::id());
        let server = Netns::create(&base)?;
        // The bridge: no STP, so ports forward at once. A veth pair with one end on it gives it
        // carrier before any VM runs, so its addresses (and the IPv6 link-local address the
        // daemon's router advertisements need) are usable from the start. (`dummy` would do,
        // but not every kernel has it.)
        server.ip(&["link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
        server.ip(&["link", "add", CARRIER, "type", "veth", "peer", "name", "carrier1"])?;
        server.ip(&["link", "set", CARRIER, "master", BRIDGE, "up"])?;
        server.ip(&["link", "set", "carrier1", "up"])?;
        server.ip(&["addr", "add", &format!("{SERVER_IP}/{PREFIX}"), "dev", BRIDGE])?;
        server.ip(&["link", "set", BRIDGE, "up"])?;
        let mut lab = Lab { taps: Vec::new(), has_site: false, site: None, server };
        if with_site {
            let site = Netns::create(&format!("{base}-site"))?;
            lab.server.ip(&["link", "add", "site", "type", "veth", "peer", "name", "eth0", "netns", site.name()])?;
            lab.has_site = true;
            lab.site = Some(site);
            lab.server.ip(&["link", "set", "site", "master", BRIDGE, "up"])?;
            let site = lab.site.as_ref().expect("just set");
            site.ip(&["addr", "add", &format!("{SITE_IP}/{PREFIX}"), "dev", "eth0"])?;
            site.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    pub fn server(&self) -> &Netns {
        &self.server
    }

    pub fn site(&self) -> Option<&Netns> {
        self.site.as_ref()
    }

    /// A persistent tap on the bridge for one VM (QEMU opens it with `script=no`).
    pub fn add_tap(&mut self) -> Result<String> {
        let name = format!("tap{}", self.taps.len());
        self.server.ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
        self.taps.push(name.clone());
        self.server.ip(&["link", "set", &name, "master", BRIDGE, "up"])?;
        Ok(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces' deletion would take the virtual links with them; deleting them first
        // keeps a namespace that some stray process still holds from keeping them alive too.
        let mut links: Vec<&str> = self.taps.iter().map(String::as_str).collect();
        if self.has_site {
            links.push("site");
        }
        links.extend([CARRIER, BRIDGE]);
        for link in links {
            let _ = self.server.ip(&["link", "del", link]);
        }
    }
}

/// `remove_stale_namespaces`, once per test process.
pub fn remove_stale_namespaces_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(remove_stale_namespaces);
}

/// Names of namespaces left behind by earlier runs of this harness whose process is gone and
/// that hold no process (a run killed with SIGKILL cannot clean up); deletes them.
pub fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let rest = rest.strip_suffix("-site").unwrap_or(rest);
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let holds_processes = ip(&["netns", "pids", name]).map(|p| !p.trim().is_empty()).unwrap_or(true);
        if !holds_processes {
            eprintln!("removing stale network namespace {name} (its test run {pid} is gone)");
            let _ = ip(&["netns", "del", name]);
        }
    }
}
