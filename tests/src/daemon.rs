//! `appliance serve` inside the test's server namespace, bound to the bridge, logging to
//! `daemon.log`.

use anyhow::Result;
use appliance_core::catalog::DhcpMode;
use std::path::Path;
use std::time::Duration;
use testkit::lab::{Lab, BRIDGE, SERVER_IP};
use testkit::procs::{render_cmdline, Logged};

pub struct DaemonSpec<'a> {
    pub bin: &'a Path,
    pub config: &'a Path,
    pub state: &'a Path,
    pub bootloaders: &'a Path,
    pub blobs: &'a Path,
    pub mode: DhcpMode,
    /// 67 normally. A test that must keep the daemon from overhearing the site's DHCP (to show
    /// what it decides without option 93) moves it to a port no client sends to.
    pub dhcp_port: u16,
    /// Hard upper bound on the daemon's run time (see `testkit::netns::command_in`).
    pub lifetime: Duration,
}

pub struct Daemon {
    server: Logged,
}

/// How long publishing the artifacts (hashing, building the initrd cpios) may take at start.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

impl Daemon {
    pub fn start(lab: &Lab, spec: &DaemonSpec<'_>, out: &Path) -> Result<Daemon> {
        let mut cmd = lab.server().command(spec.bin, Some(spec.lifetime));
        cmd.arg("serve")
            .arg("--config")
            .arg(spec.config)
            .arg("--state")
            .arg(spec.state)
            .arg("--bootloaders")
            .arg(spec.bootloaders)
            .arg("--blobs")
            .arg(spec.blobs)
            .args(["--dhcp", &spec.mode.to_string()])
            .args(["--interface", BRIDGE, "--listen", SERVER_IP, "--advertise", SERVER_IP])
            .args(["--http-port", "80", "--tftp-port", "69"])
            .args(["--dhcp-port", &spec.dhcp_port.to_string()]);
        let filter = std::env::var("BOOT_TESTS_RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", filter).env("NO_COLOR", "1");
        std::fs::write(out.join("daemon.cmdline"), render_cmdline(&cmd) + "\n")?;
        let mut server = Logged::spawn("appliance serve", &mut cmd, out.join("daemon.log"), 30)?;
        server.proc.grace = Duration::from_secs(12);
        // `serve::run` logs "serving" once the catalog is loaded and published, then the DHCP,
        // TFTP and HTTP tasks start on already bound sockets.
        let ready = |log: &str| log.lines().any(|l| l.contains("appliance::serve") && l.contains(" serving"));
        server.wait_for(ready, "log `serving`", READY_TIMEOUT, Duration::from_millis(100))?;
        Ok(Daemon { server })
    }

    pub fn log_path(&self) -> &Path {
        self.server.log_path()
    }

    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    /// Bytes logged so far (progress, cheaply).
    pub fn log_len(&self) -> usize {
        std::fs::metadata(self.server.log_path()).map_or(0, |m| m.len() as usize)
    }

    /// An error if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()
    }

    /// Log lines that mention `mac` (any spelling: `52:54:00:…`, `52-54-00-…`, `525400…`).
    pub fn lines_about(&self, mac: &str) -> Vec<String> {
        let spellings = mac_spellings(mac);
        self.log_text()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                spellings.iter().any(|s| l.contains(s))
            })
            .map(str::to_string)
            .collect()
    }

    /// Stops the daemon (SIGTERM, so it logs its shutdown) before the namespaces go.
    pub fn stop(&mut self) {
        self.server.proc.stop();
    }

    /// `kill -9` the daemon: no shutdown, nothing more written.
    pub fn kill(&mut self) -> Result<()> {
        self.server.proc.kill_program()
    }
}

pub fn mac_spellings(mac: &str) -> Vec<String> {
    let mac = mac.to_ascii_lowercase();
    vec![mac.clone(), mac.replace(':', "-"), mac.replace(':', "")]
}
