//! The reference stack, to time a cell against under the same conditions: dnsmasq as
//! DHCP server and TFTP server, with router advertisements and iPXE's option 175.176
//! ("no-pxedhcp") — the "tuned" column — and Python's `http.server` for HTTP, on the same bridge
//! address and ports as our daemon.
//!
//! It serves the very bytes our daemon would serve the cell's machine: the files are first
//! fetched, by TFTP and HTTP, from the daemon running with DHCP off (`mirror`), which then
//! stops. So a comparison measures the servers, not different files.

use crate::client::Client;
use anyhow::{bail, Context, Result};
use appliance_core::arch::Arch;
use appliance_core::catalog::Catalog;
use appliance_core::mac::MacAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::lab::{BRIDGE, SERVER_IP};
use testkit::netns::Netns;
use testkit::procs::{render_cmdline, run, Logged};

/// The domain the reference's DHCP hands out, as `dhcp.domain` in `profiles/appliance.yaml`.
const REFERENCE_DOMAIN: &str = "lab.internal";

/// The reference's HTTP server: `http.server` with one addition, `<path>.first`, served instead
/// of `<path>` on a client's first request for it (dnsmasq cannot tell iPXE's ROM from the
/// `undionly.kpxe` it chains, docs/firmware.md#ipxe-rom-and-undionly; the first `boot.ipxe` chains undionly, the second
/// is the entry script). HTTP/1.0 and a thread per connection, as `python3 -m http.server`.
const HTTP_SERVER_PY: &str = r#"
import http.server, os, sys, threading, time
seen, lock = set(), threading.Lock()
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        # Millisecond timestamps, to line the log up with QEMU's start and the daemon's log.
        t = time.time()
        stamp = time.strftime("%H:%M:%S", time.gmtime(t)) + ".%03d" % (t % 1 * 1000)
        sys.stderr.write("%s %s %s\n" % (stamp, self.client_address[0], fmt % args))
    def translate_path(self, path):
        real = super().translate_path(path)
        with lock:
            key = (self.client_address[0], real)
            first = key not in seen
            seen.add(key)
        return real + ".first" if first and os.path.exists(real + ".first") else real
os.chdir(sys.argv[1])
http.server.ThreadingHTTPServer((sys.argv[2], 80), Handler).serve_forever()
"#;

/// What a firmware's boot of `profile` on `arch` fetches, as (where it goes under the reference
/// root, the URL our daemon serves it at): the boot program and config, the artifact set's
/// kernel, initrds and device tree, and the machine's answer files.
pub fn files(
    client: Client,
    mac: MacAddr,
    catalog: &Catalog,
    profile: &str,
    arch: Arch,
) -> Result<Vec<(String, String)>> {
    let p = catalog.profile(profile).with_context(|| format!("no profile {profile}"))?;
    let set = p.arches.get(&arch).with_context(|| format!("profile {profile} has no {arch} artifacts"))?;
    let dashed = mac.dashed();
    let http = |p: &str| format!("http://{SERVER_IP}/{p}");
    let tftp = |p: &str| format!("tftp://{SERVER_IP}/{p}");
    let ipxe = |buildarch: &str, platform: &str| {
        let script = format!("ipxe/script?mac={dashed}&buildarch={buildarch}&platform={platform}");
        vec![("boot.ipxe".to_string(), http("boot.ipxe")), ("ipxe/script".to_string(), http(&script))]
    };
    let mut list = match client {
        Client::SeaBiosIpxeRom => {
            let mut l = ipxe("i386", "pcbios");
            l.push(("undionly.kpxe".into(), tftp("undionly.kpxe")));
            l
        }
        Client::OvmfPxe => {
            let mut l = ipxe("x86_64", "efi");
            l.push(("ipxe.efi".into(), tftp("ipxe.efi")));
            l
        }
        Client::ArmVirtEdk2 => {
            let cfg = format!("grub/grub.cfg-01-{dashed}");
            vec![("grubnetaa64.efi".into(), tftp("grubnetaa64.efi")), (cfg.clone(), tftp(&cfg))]
        }
        Client::UBootArm64 => {
            let cfg = format!("pxelinux.cfg/01-{dashed}");
            vec![("boot.scr.uimg".into(), tftp("boot.scr.uimg")), (cfg.clone(), tftp(&cfg))]
        }
        other => bail!("no reference setup for {other:?}"),
    };
    let boot_files = std::iter::once(&set.kernel).chain(&set.initrds).chain(&set.fdt);
    list.extend(boot_files.map(|a| {
        let p = format!("artifacts/{profile}/{}/{}", set.version, a.name);
        let url = http(&p);
        (p, url)
    }));
    list.extend(p.answers.keys().map(|name| {
        let p = format!("answers/{dashed}/{name}");
        let url = http(&p);
        (p, url)
    }));
    Ok(list)
}

/// Fetches `files` from the daemon running in `ns` into `root` (curl, inside the namespace).
pub fn mirror(ns: &Netns, root: &Path, files: &[(String, String)]) -> Result<()> {
    for (rel, url) in files {
        let dest = root.join(rel);
        std::fs::create_dir_all(dest.parent().context("no parent")?)?;
        let mut cmd = ns.command("curl", Some(Duration::from_secs(60)));
        cmd.args(["-sS", "--fail", "-o"]).arg(&dest).arg(url);
        run(&mut cmd).with_context(|| format!("mirroring {url} from the daemon"))?;
    }
    Ok(())
}

/// For the undionly chain: the ROM's first `boot.ipxe` loads `undionly.kpxe`, which then asks
/// for `boot.ipxe` again and gets the entry script.
pub fn chain_undionly_first(root: &Path) -> Result<()> {
    let script = format!("#!ipxe\nchain tftp://{SERVER_IP}/undionly.kpxe\n");
    Ok(std::fs::write(root.join("boot.ipxe.first"), script)?)
}

pub struct ReferenceStack {
    // Stopped on drop, by PID (see `testkit::procs`).
    _dnsmasq: Logged,
    http: Logged,
}

impl ReferenceStack {
    /// Starts dnsmasq (DHCP server, TFTP from `root`, RAs) and the HTTP server (from `root`)
    /// in the server namespace. The bridge gets a ULA prefix so dnsmasq has one to advertise.
    pub fn start(ns: &Netns, root: &Path, out: &Path, scratch: &Path, lifetime: Duration) -> Result<ReferenceStack> {
        ns.ip(&["-6", "addr", "add", "fd77::1/64", "dev", BRIDGE, "nodad"])?;
        let mut cmd = ns.command("dnsmasq", Some(lifetime));
        cmd.args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
            .arg(format!("--interface={BRIDGE}"))
            .args(["--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h", "--dhcp-range=fd77::,ra-only"])
            .args(["--enable-ra", "--no-ping", "--log-dhcp", "--log-facility=-", "--user=root", "--group=root"])
            .args(["--enable-tftp", "--tftp-no-fail"])
            .arg(format!("--tftp-root={}", root.display()))
            .arg(format!("--dhcp-leasefile={}", scratch.join("reference.leases").display()))
            .arg(format!("--pid-file={}", scratch.join("reference.pid").display()))
            .args(["--dhcp-match=set:ipxe,175", "--dhcp-match=set:efi64,option:client-arch,7"])
            .arg("--dhcp-match=set:efiarm64,option:client-arch,11")
            .arg("--dhcp-match=set:uboot,option:client-arch,22")
            .arg(format!("--dhcp-boot=tag:uboot,boot.scr.uimg,,{SERVER_IP}"))
            .arg(format!("--dhcp-boot=tag:ipxe,http://{SERVER_IP}/boot.ipxe"))
            .arg(format!("--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{SERVER_IP}"))
            .arg(format!("--dhcp-boot=tag:!ipxe,tag:efiarm64,grubnetaa64.efi,,{SERVER_IP}"))
            .arg(format!("--dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efiarm64,tag:!uboot,undionly.kpxe,,{SERVER_IP}"))
            // A name server and domain, as our daemon's example settings hand out: the Debian
            // installer stops to ask for a name server without one.
            .arg(format!("--dhcp-option=option:dns-server,{SERVER_IP}"))
            .arg(format!("--dhcp-option=option:domain-name,{REFERENCE_DOMAIN}"))
            // iPXE option 175, sub-option 176 (no-pxedhcp) = 1: do not wait for ProxyDHCP offers.
            .arg("--dhcp-option=tag:ipxe,175,b0:01:01");
        std::fs::write(out.join("dnsmasq.cmdline"), render_cmdline(&cmd) + "\n")?;
        let mut dnsmasq = Logged::spawn("dnsmasq (reference)", &mut cmd, out.join("dnsmasq.log"), 25)?;
        dnsmasq.wait_for(
            |l| l.contains("DHCP, IP range"),
            "start",
            Duration::from_secs(15),
            Duration::from_millis(50),
        )?;

        let script = scratch.join("reference_http.py");
        std::fs::write(&script, HTTP_SERVER_PY)?;
        let mut cmd = ns.command("python3", Some(lifetime));
        cmd.arg("-u").arg(&script).arg(root).arg(SERVER_IP);
        std::fs::write(out.join("http.cmdline"), render_cmdline(&cmd) + "\n")?;
        let http = Logged::spawn("python3 http.server (reference)", &mut cmd, out.join("http.log"), 25)?;
        // Ready when it accepts a connection.
        let probe = || {
            let mut c = ns.command("curl", Some(Duration::from_secs(5)));
            c.args(["-s", "-o", "/dev/null", &format!("http://{SERVER_IP}/")]);
            run(&mut c).is_ok()
        };
        let t = std::time::Instant::now();
        while !probe() {
            if t.elapsed() > Duration::from_secs(15) {
                bail!("the reference HTTP server did not answer within 15 s (log: {})", out.join("http.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(ReferenceStack { _dnsmasq: dnsmasq, http })
    }

    /// The HTTP server's log: one line per request, with its status.
    pub fn http_log_text(&self) -> String {
        self.http.log_text()
    }
}

/// The reference root for a cell, under its scratch directory.
pub fn root_in(scratch: &Path) -> PathBuf {
    scratch.join("reference-root")
}
