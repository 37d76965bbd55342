//! The foreign ("site") DHCP server for the proxy and off columns: dnsmasq as its own host (its
//! own namespace, joined to the bridge by a veth pair), DHCP only (`--port=0`: no DNS), no
//! config file, everything logged to `dnsmasq.log`. Its offers name a name server and a domain
//! as a site's do (the site host's address, though nothing answers DNS there): the Debian
//! installer stops to ask for a name server when its DHCP names none.

use anyhow::Result;
use std::path::Path;
use std::time::Duration;
use testkit::lab::{SERVER_IP, SITE_IP};
use testkit::netns::Netns;
use testkit::procs::{render_cmdline, Logged};

/// The site's address pool, apart from ours (10.77.0.100–199) so leases show who gave them.
pub const SITE_POOL: (&str, &str) = ("10.77.0.200", "10.77.0.250");

/// The domain the site's DHCP hands out.
pub const SITE_DOMAIN: &str = "site.internal";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteDhcp {
    /// Addresses only: our daemon (proxyDHCP) adds the boot information.
    AddressesOnly,
    /// "Off" mode: the site names us as next-server with one fixed boot file for everyone.
    NextServer { boot_file: String },
}

pub struct Dnsmasq {
    server: Logged,
}

impl Dnsmasq {
    pub fn start(ns: &Netns, kind: &SiteDhcp, out: &Path, scratch: &Path, lifetime: Duration) -> Result<Dnsmasq> {
        let mut cmd = ns.command("dnsmasq", Some(lifetime));
        cmd.args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0", "--bind-interfaces"])
            .arg(format!("--dhcp-range={},{},255.255.255.0,1h", SITE_POOL.0, SITE_POOL.1))
            .args(["--log-dhcp", "--log-facility=-", "--no-ping", "--user=root", "--group=root"])
            .arg(format!("--dhcp-leasefile={}", scratch.join("dnsmasq.leases").display()))
            .arg(format!("--pid-file={}", scratch.join("dnsmasq.pid").display()))
            .arg(format!("--dhcp-option=option:dns-server,{SITE_IP}"))
            .arg(format!("--dhcp-option=option:domain-name,{SITE_DOMAIN}"));
        if let SiteDhcp::NextServer { boot_file } = kind {
            // One file name for every client, x86 BIOS, UEFI and ARM alike: that is off mode.
            cmd.arg(format!("--dhcp-boot={boot_file},,{SERVER_IP}"));
        }
        std::fs::write(out.join("dnsmasq.cmdline"), render_cmdline(&cmd) + "\n")?;
        let mut server = Logged::spawn("dnsmasq", &mut cmd, out.join("dnsmasq.log"), 20)?;
        let ready = |log: &str| log.contains("DHCP, IP range");
        server.wait_for(ready, "start", Duration::from_secs(15), Duration::from_millis(50))?;
        Ok(Dnsmasq { server })
    }

    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()
    }

    /// dnsmasq's lines about `mac` (it logs `DHCPACK(eth0) 10.77.0.2xx 52:54:00:…`).
    pub fn acked(&self, mac: &str) -> Option<String> {
        let mac = mac.to_ascii_lowercase();
        self.log_text().lines().find(|l| l.contains("DHCPACK") && l.to_ascii_lowercase().contains(&mac)).map(Into::into)
    }
}
