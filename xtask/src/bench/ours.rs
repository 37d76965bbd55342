//! Our daemon as the bench runs it: a generated config directory (one profile whose kernel
//! and initrd are bench files), and `target/release/appliance serve` started as its own
//! process, on loopback (TFTP/HTTP benches) or inside the server namespace (DHCP, storm).

use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::netns::{self, SERVER_IP};
use super::peers::{self, Proc};
use super::Ctx;

/// A deterministic pseudo-random file of `size` bytes in `target/bench/data`, made once.
pub fn data_file(ctx: &Ctx, name: &str, size: u64) -> Result<PathBuf> {
    let path = ctx.data.join(format!("{name}-{size}.bin"));
    if path.metadata().map(|m| m.len() == size).unwrap_or(false) {
        return Ok(path);
    }
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size ^ name.len() as u64;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Hard-links `from` to `to` (same file system under target/bench), copying if that fails.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_file(to)?;
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Writes a config directory: server address 10.213.0.1 (the server namespace's), DHCP
/// server mode on 10.213.0.0/16 with a pool of ~64,000 addresses, every machine unknown and
/// booted into profile `bench` (x86_64: `vmlinuz` + `initrd.img`).
pub fn write_config(dir: &Path, kernel: &Path, initrd: &Path) -> Result<()> {
    write_config_with(dir, kernel, initrd, false)
}

/// [`write_config`] with an answer file `user-data` in the profile (the HTTP section's
/// answers case). Only that section has it: the other sections also run a baseline build of
/// the daemon (`--baseline-appliance`), which may predate answer files and refuse the field.
pub fn write_config_with_answers(dir: &Path, kernel: &Path, initrd: &Path) -> Result<()> {
    write_config_with(dir, kernel, initrd, true)
}

fn write_config_with(dir: &Path, kernel: &Path, initrd: &Path, answers: bool) -> Result<()> {
    std::fs::create_dir_all(dir.join("files"))?;
    let settings = format!(
        "server: {{ address: {SERVER_IP}, http_port: 8080 }}\n\
         dhcp:\n  mode: server\n  subnet: 10.213.0.0/16\n  pool: {{ start: 10.213.1.1, end: 10.213.250.254 }}\n  \
         lease_time: 3600\n  router: {SERVER_IP}\n  dns: [{SERVER_IP}]\n  domain: bench.test\n"
    );
    std::fs::write(dir.join("appliance.yaml"), settings)?;
    std::fs::write(dir.join("machines.yaml"), "machines: {}\nunknown: { action: profile, profile: bench }\n")?;
    let answers_field = if answers { "answers: { user-data: user-data.j2 }\n" } else { "" };
    std::fs::write(
        dir.join("bench.yaml"),
        format!(
            "name: bench\ndescription: Bench profile\ncmdline: \"console=ttyS0 quiet host={{{{ machine.hostname }}}}\"\n\
             {answers_field}\
             arch:\n  x86_64:\n    kernel: {{ path: files/vmlinuz, name: vmlinuz }}\n    \
             initrd: [ {{ path: files/initrd.img, name: initrd.img }} ]\n"
        ),
    )?;
    // A cloud-config of the usual kind: hostname, the machine's token, where to report.
    std::fs::write(
        dir.join("user-data.j2"),
        "#cloud-config\nhostname: {{ machine.hostname }}\nruncmd:\n  - [ wget, -q, -O-, \
         \"--header=Authorization: Bearer {{ machine.token }}\", \"--post-data=event=installed\", \
         \"{{ server.http_base }}/events/{{ machine.mac }}\" ]\n",
    )?;
    link_or_copy(kernel, &dir.join("files/vmlinuz"))?;
    link_or_copy(initrd, &dir.join("files/initrd.img"))?;
    Ok(())
}

/// A bootloader directory with an undionly.kpxe: the real one from `cargo xtask fetch` when
/// present, else ~70 KB of bench data.
pub fn bootloaders(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.work.join("bootloaders");
    std::fs::create_dir_all(&dir)?;
    let real = crate::fetch::default_out_dir().join("undionly.kpxe");
    let src = if real.is_file() { real } else { data_file(ctx, "undionly", 70_000)? };
    link_or_copy(&src, &dir.join("undionly.kpxe"))?;
    Ok(dir)
}

pub struct Ours {
    pub proc: Proc,
    pub tftp: SocketAddr,
    pub http: SocketAddr,
    pub state: PathBuf,
}

/// `binary serve` on `config` with `state` (and its blobs under it), in `ns` if given.
fn serve_command(ctx: &Ctx, binary: &Path, ns: Option<&str>, config: &Path, state: &Path) -> Command {
    let mut c = match ns {
        Some(ns) => netns::command(ns, binary),
        None => Command::new(binary),
    };
    c.env("RUST_LOG", "info");
    c.arg("serve").arg("--config").arg(config).arg("--state").arg(state).arg("--blobs").arg(state.join("blobs"));
    // Two daemons may share a loopback (ours and a baseline, or another bench's): no admin API,
    // which would take 127.0.0.1:9090 (a baseline build may predate the option).
    if binary == ctx.appliance {
        c.arg("--admin-listen").arg("off");
        // Every bench client comes from one address standing for many machines: the fair share
        // per source (32 TFTP transfers, 64 HTTP connections by default; a baseline build may
        // predate the options) would refuse most of a 500-client run as one greedy host.
        c.args(["--tftp-max-per-source", "1024", "--http-max-per-source", "1024"]);
        // `--journal-compare`: the journal is this build's (the baseline may predate it).
        c.args(&ctx.journal_args);
    }
    c.args(&ctx.daemon_args);
    c
}

/// Starts the daemon on 127.0.0.1 (DHCP off, its sockets on ephemeral ports), with `extra`
/// arguments after the bench's own.
pub fn start_loopback(
    ctx: &Ctx,
    name: &str,
    config: &Path,
    tftp_root: Option<&Path>,
    bootloaders: Option<&Path>,
    extra: &[&str],
) -> Result<Ours> {
    start_loopback_binary(ctx, &ctx.appliance, name, config, tftp_root, bootloaders, extra)
}

/// [`start_loopback`] with another build of the daemon (`--baseline-appliance`).
pub fn start_loopback_binary(
    ctx: &Ctx,
    binary: &Path,
    name: &str,
    config: &Path,
    tftp_root: Option<&Path>,
    bootloaders: Option<&Path>,
    extra: &[&str],
) -> Result<Ours> {
    let state = ctx.work.join(format!("{name}-state"));
    std::fs::create_dir_all(&state)?;
    let (tftp_port, http_port) = (peers::free_port()?, peers::free_port()?);
    let mut cmd = serve_command(ctx, binary, None, config, &state);
    cmd.args(["--dhcp", "off", "--listen", "127.0.0.1", "--advertise", "127.0.0.1"])
        .args(["--http-port", &http_port.to_string(), "--tftp-port", &tftp_port.to_string()])
        .args(["--dhcp-port", "0", "--proxy-port", "0", "--no-watch"]);
    if let Some(r) = tftp_root {
        cmd.arg("--tftp-root").arg(r);
    }
    if let Some(b) = bootloaders {
        cmd.arg("--bootloaders").arg(b);
    }
    cmd.args(extra);
    let mut proc = Proc::start(&format!("appliance ({name})"), cmd, &ctx.work.join(format!("{name}.log")))?;
    let http: SocketAddr = (Ipv4Addr::LOCALHOST, http_port).into();
    // The sockets are bound before the config is loaded and published: ready means answering.
    peers::wait_ready(&mut proc, Duration::from_secs(60), || http_ok(http, "/boot.ipxe"))?;
    Ok(Ours { proc, tftp: (Ipv4Addr::LOCALHOST, tftp_port).into(), http, state })
}

/// Starts the daemon inside the server namespace on the real ports (67, 4011, 69, 8080).
pub fn start_in_ns(
    ctx: &Ctx,
    name: &str,
    ns: &str,
    config: &Path,
    mode: &str,
    bootloaders: Option<&Path>,
) -> Result<Ours> {
    let state = ctx.work.join(format!("{name}-state"));
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    std::fs::create_dir_all(&state)?;
    let mut cmd = serve_command(ctx, &ctx.appliance, Some(ns), config, &state);
    cmd.args(["--dhcp", mode, "--listen", "0.0.0.0", "--advertise", &SERVER_IP.to_string()]).args([
        "--http-port",
        "8080",
        "--tftp-port",
        "69",
        "--dhcp-port",
        "67",
        "--proxy-port",
        "4011",
        "--no-watch",
    ]);
    if let Some(b) = bootloaders {
        cmd.arg("--bootloaders").arg(b);
    }
    let log = ctx.work.join(format!("{name}.log"));
    let mut proc = Proc::start(&format!("appliance ({name})"), cmd, &log)?;
    peers::wait_ready(&mut proc, Duration::from_secs(60), || {
        std::fs::read_to_string(&log).map(|t| t.contains("dhcp: serving")).unwrap_or(false)
    })?;
    Ok(Ours { proc, tftp: (SERVER_IP, 69).into(), http: (SERVER_IP, 8080).into(), state })
}

impl Ours {
    /// `/artifacts/bench/<version>/<file>` of the one published version.
    pub fn artifact_path(&self, file: &str) -> Result<String> {
        let dir = self.state.join("artifacts/bench");
        let mut versions = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                versions.push(name);
            }
        }
        match &versions[..] {
            [v] => Ok(format!("/artifacts/bench/{v}/{file}")),
            _ => bail!("expected one published version in {}, found {versions:?}", dir.display()),
        }
    }

    /// Bytes in the log so far (to read only what a measurement added).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.proc.log).map_or(0, |m| m.len())
    }

    /// From the TFTP transfer log lines written after `offset`: (transfers, not complete,
    /// server retransmissions).
    pub fn tftp_log_since(&self, offset: u64) -> (u64, u64, u64) {
        let text = std::fs::read(&self.proc.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned();
        let (mut n, mut bad, mut rexmit) = (0, 0, 0);
        for line in text.lines().filter(|l| l.contains("tftp transfer finished")) {
            n += 1;
            if !line.contains("outcome=complete") {
                bad += 1;
            }
            rexmit += field(line, "retransmits=").unwrap_or(0);
        }
        (n, bad, rexmit)
    }
}

/// Whether a blocking `GET path` answers 200.
pub fn http_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}
