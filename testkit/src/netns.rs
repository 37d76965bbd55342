//! Network namespaces: a private network per test or benchmark, so DHCP broadcasts, port 67
//! and taps never touch the host's own network. Created with `ip`, deleted by the guards'
//! `Drop` after the processes inside have been stopped.
//!
//! Every name is `<prefix><owner PID>-<what>`: a run killed with SIGKILL cannot clean up, and
//! the next run removes what such a run left (`remove_stale`), never a namespace whose owner
//! still lives or that still holds a process.
//!
//! - `Netns`: one namespace, and commands that run inside it;
//! - `Pair`: two namespaces joined by a veth pair (the benchmarks' server and clients);
//! - `lab::Lab`: a bridge for VMs with an optional second host on it (the boot tests).

use crate::procs::{command_after, lifetime_prefix, run};
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `ip args…`; fails with ip's message.
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `<prefix><our PID>-<what>`: the name `remove_stale` recognises.
pub fn owned_name(prefix: &str, what: &str) -> String {
    format!("{prefix}{}-{what}", std::process::id())
}

/// A command that runs `program` inside the namespace `name`, for at most `lifetime` if given:
/// `ip netns exec NS [timeout -k 5 SECS] program`. `ip netns exec` execs in place, so the
/// child's PID is the program's (or `timeout`'s, which passes our SIGTERM on). The lifetime is
/// a safety net for a parent that is killed outright (no `Drop` runs then): its VMs and
/// daemons still end, and the next run removes the namespaces they leave.
pub fn command_in(name: &str, program: impl AsRef<OsStr>, lifetime: Option<Duration>) -> Command {
    let mut prefix: Vec<String> = ["ip", "netns", "exec", name].map(String::from).into();
    prefix.extend(lifetime_prefix(lifetime));
    command_after(&prefix, program)
}

/// A named network namespace (`ip netns add`) with its loopback up, deleted on drop.
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

    /// `program` inside this namespace (see `command_in`).
    pub fn command(&self, program: impl AsRef<OsStr>, lifetime: Option<Duration>) -> Command {
        command_in(&self.name, program, lifetime)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete network namespace {}: {e:#}", self.name);
        }
    }
}

/// One end of a `Pair`: its namespace's name suffix, interface and address.
#[derive(Clone, Copy, Debug)]
pub struct End<'a> {
    pub what: &'a str,
    pub interface: &'a str,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

/// Two namespaces joined by a veth pair, both ends addressed and up. DHCP is broadcast on an
/// interface, which loopback cannot give a peer like dnsmasq; a veth pair between two private
/// namespaces can.
pub struct Pair {
    pub server: Netns,
    pub client: Netns,
}

impl Pair {
    /// Namespaces `<prefix><PID>-<end.what>`, joined by `server.interface` ↔ `client.interface`.
    pub fn create(prefix: &str, server: End<'_>, client: End<'_>) -> Result<Pair> {
        let pair = Pair {
            server: Netns::create(&owned_name(prefix, server.what))?,
            client: Netns::create(&owned_name(prefix, client.what))?,
        };
        let (s, c) = (pair.server.name(), pair.client.name());
        ip(&[
            "link",
            "add",
            server.interface,
            "netns",
            s,
            "type",
            "veth",
            "peer",
            "name",
            client.interface,
            "netns",
            c,
        ])?;
        for (ns, end) in [(&pair.server, server), (&pair.client, client)] {
            ns.ip(&["addr", "add", &format!("{}/{}", end.address, end.prefix_len), "dev", end.interface])?;
            ns.ip(&["link", "set", end.interface, "up"])?;
        }
        Ok(pair)
    }
}

/// The owner PID in a name made by `owned_name` with this prefix.
fn owner(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Deletes the namespaces named `<prefix><PID>-…` whose PID is gone and that hold no process
/// (left by a run that was killed).
pub fn remove_stale(prefix: &str) {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = owner(name, prefix) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let holds_processes = ip(&["netns", "pids", name]).map(|p| !p.trim().is_empty()).unwrap_or(true);
        if !holds_processes {
            eprintln!("removing stale network namespace {name} (its run {pid} is gone)");
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// `remove_stale(prefix)`, once per process (the first test to ask does it).
pub fn remove_stale_once(prefix: &'static str) {
    static DONE: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !done.contains(&prefix) {
        done.push(prefix);
        remove_stale(prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner() {
        let name = owned_name("bt-", "ovmf_pxe_server-site");
        assert_eq!(owner(&name, "bt-"), Some(std::process::id()));
        assert_eq!(owner("nbbench-4242-srv", "nbbench-"), Some(4242));
        assert_eq!(owner("nbbench-4242-srv", "bt-"), None);
        assert_eq!(owner("bt-seabios-server", "bt-"), None);
    }

    #[test]
    fn commands_run_inside_the_namespace_with_a_lifetime() {
        let cmd = command_in("bt-1-x", "dnsmasq", Some(Duration::from_secs(90)));
        assert_eq!(crate::procs::render_cmdline(&cmd), "ip netns exec bt-1-x timeout -k 5 90 dnsmasq");
        let cmd = command_in("nbbench-1-srv", "/x/appliance", None);
        assert_eq!(crate::procs::render_cmdline(&cmd), "ip netns exec nbbench-1-srv /x/appliance");
    }
}
