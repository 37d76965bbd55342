//! A boot network for VMs: a bridge in a namespace, a tap per VM, and optionally a second
//! namespace on the bridge for another host (the boot tests' "site" DHCP server):
//!
//! ```text
//!  netns bt-<pid>-<test>                          netns bt-<pid>-<test>-site (optional)
//!  ┌───────────────────────────────────────┐      ┌──────────────────────────────┐
//!  │ server ─────────── br0 10.77.0.1/24   │      │ site ───── eth0 10.77.0.2/24 │
//!  │                   ├─ tap0 ── QEMU VM  │      └────────────┬─────────────────┘
//!  │                   ├─ site ────────────┼── veth pair ──────┘
//!  │                   └─ carrier0 (veth)  │
//!  └───────────────────────────────────────┘
//! ```
//!
//! The addresses are those of the shipped `appliance.yaml` (the daemon serves 10.77.0.1).

use crate::netns::{owned_name, Netns};
use anyhow::Result;

/// The server's address on the boot network.
pub const SERVER_IP: &str = "10.77.0.1";
/// The second host's ("site") address.
pub const SITE_IP: &str = "10.77.0.2";
pub const PREFIX: u8 = 24;
pub const BRIDGE: &str = "br0";
/// The bridge port that keeps the bridge up (its peer is `carrier1`).
const CARRIER: &str = "carrier0";

/// Every lab namespace name starts with this, then our PID (see `netns::remove_stale`).
pub const NS_PREFIX: &str = "bt-";

/// One test's boot network: the server namespace with the bridge, optionally a second
/// namespace for the site host, and the taps for the VMs.
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
        let base = owned_name(NS_PREFIX, test);
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
            let site = lab.site.insert(site);
            lab.server.ip(&["link", "set", "site", "master", BRIDGE, "up"])?;
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
