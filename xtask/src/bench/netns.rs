//! Two network namespaces joined by a veth pair: the server side (`nbb0`, 10.213.0.1/16) and
//! the client side (`nbb1`, 10.213.255.254/16). DHCP is broadcast on an interface, which
//! loopback cannot give a peer like dnsmasq; a veth pair between two private namespaces can,
//! without touching the host's own network. Removed on drop; namespaces left behind by a run
//! that was killed are removed by the next run (their name carries the dead PID).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

const PREFIX: &str = "nbbench-";
pub const SERVER_IF: &str = "nbb0";
pub const CLIENT_IF: &str = "nbb1";
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 255, 254);

pub struct NsPair {
    pub server: String,
    pub client: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl NsPair {
    pub fn create() -> Result<NsPair> {
        let pid = std::process::id();
        let pair = NsPair { server: format!("{PREFIX}{pid}-srv"), client: format!("{PREFIX}{pid}-cli") };
        let (s, c) = (pair.server.as_str(), pair.client.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        ip(&["link", "add", SERVER_IF, "netns", s, "type", "veth", "peer", "name", CLIENT_IF, "netns", c])?;
        let srv = format!("{SERVER_IP}/16");
        let cli = format!("{CLIENT_IP}/16");
        ip(&["-n", s, "addr", "add", &srv, "dev", SERVER_IF])?;
        ip(&["-n", c, "addr", "add", &cli, "dev", CLIENT_IF])?;
        for (ns, dev) in [(s, SERVER_IF), (c, CLIENT_IF), (s, "lo"), (c, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// A command that runs `program` inside namespace `ns` (the PID is the program's:
    /// `ip netns exec` execs it).
    pub fn command(ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Removes namespaces of earlier bench runs whose process is gone.
pub fn cleanup_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("bench: removing stale namespace {name}");
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
}
