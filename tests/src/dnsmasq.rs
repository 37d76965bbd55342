//! The foreign ("site") DHCP server for the proxy and off columns: dnsmasq as its own host (its
//! own namespace, joined to the bridge by a veth pair), DHCP only (`--port=0`: no DNS), no
//! config file, everything logged to `dnsmasq.log`.

use crate::netns::{Netns, SERVER_IP};
use crate::procs::{render_cmdline, Proc};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The site's address pool, apart from ours (10.77.0.100–199) so leases show who gave them.
pub const SITE_POOL: (&str, &str) = ("10.77.0.200", "10.77.0.250");

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteDhcp {
    /// Addresses only: our daemon (proxyDHCP) adds the boot information.
    AddressesOnly,
    /// "Off" mode: the site names us as next-server with one fixed boot file for everyone.
    NextServer { boot_file: String },
}

pub struct Dnsmasq {
    proc: Proc,
    log: PathBuf,
}

impl Dnsmasq {
    pub fn start(ns: &Netns, kind: &SiteDhcp, out: &Path, scratch: &Path, lifetime: Duration) -> Result<Dnsmasq> {
        let mut cmd = ns.command("dnsmasq", lifetime);
        cmd.args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0", "--bind-interfaces"])
            .arg(format!("--dhcp-range={},{},255.255.255.0,1h", SITE_POOL.0, SITE_POOL.1))
            .args(["--log-dhcp", "--log-facility=-", "--no-ping", "--user=root", "--group=root"])
            .arg(format!("--dhcp-leasefile={}", scratch.join("dnsmasq.leases").display()))
            .arg(format!("--pid-file={}", scratch.join("dnsmasq.pid").display()));
        if let SiteDhcp::NextServer { boot_file } = kind {
            // One file name for every client, x86 BIOS, UEFI and ARM alike: that is off mode.
            cmd.arg(format!("--dhcp-boot={boot_file},,{SERVER_IP}"));
        }
        std::fs::write(out.join("dnsmasq.cmdline"), render_cmdline(&cmd) + "\n")?;
        let log = out.join("dnsmasq.log");
        let proc = Proc::spawn("dnsmasq", &mut cmd, &log)?;
        let mut d = Dnsmasq { proc, log };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            let text = self.log_text();
            if text.contains("DHCP, IP range") {
                return Ok(());
            }
            if let Some(status) = self.proc.exited() {
                bail!("dnsmasq exited during start-up ({status}):\n{}", crate::serial::tail(&text, 20));
            }
            if started.elapsed() > Duration::from_secs(15) {
                bail!("dnsmasq did not start within 15 s:\n{}", crate::serial::tail(&text, 20));
            }
            sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.proc.exited() {
            bail!("dnsmasq exited ({status}):\n{}", crate::serial::tail(&self.log_text(), 20));
        }
        Ok(())
    }

    /// dnsmasq's lines about `mac` (it logs `DHCPACK(eth0) 10.77.0.2xx 52:54:00:…`).
    pub fn acked(&self, mac: &str) -> Option<String> {
        let mac = mac.to_ascii_lowercase();
        self.log_text().lines().find(|l| l.contains("DHCPACK") && l.to_ascii_lowercase().contains(&mac)).map(Into::into)
    }
}
