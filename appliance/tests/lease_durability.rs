//! No ACK without a durable lease: the DHCP service in-process on loopback, its state dir made
//! read-only (a read-only bind mount) and then full (a small tmpfs), each inside a private
//! mount namespace so nothing is mounted on the host's paths. While the lease file cannot be
//! written a REQUEST gets no ACK (and is counted); once the disk takes writes again the
//! client's retransmission is acknowledged, and after a restart every acknowledged lease is
//! still there.
//!
//! A mount namespace can only be entered by a single-threaded process, so this test has no
//! harness (`harness = false` in Cargo.toml): `main` re-runs the binary under `unshare
//! --mount --propagation private` and does the work there. It needs root; without it, it
//! says so and passes nothing.

use anyhow::{bail, ensure, Context, Result};
use appliance::dhcp::{bind, run, DhcpOptions, DhcpSockets};
use appliance::state::Shared;
use appliance_core::dhcp::fixtures::firmware::os_client;
use appliance_core::dhcp::fixtures::{catalog, kind, mac, Req, DISCOVER, HTTP_BASE, REQUEST, SERVER};
use appliance_core::render::ServerInfo;
use dhcproto::v4::Message;
use dhcproto::Decodable;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const INNER: &str = "LEASE_DURABILITY_IN_NAMESPACE";
const ACK: u8 = 5;

fn main() -> ExitCode {
    let result = if std::env::var_os(INNER).is_some() { inside() } else { outside() };
    match result {
        Ok(summary) => {
            if !summary.is_empty() {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lease_durability: FAILED: {e:#}");
            println!("lease_durability: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs this binary again in a private mount namespace.
fn outside() -> Result<String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok("lease_durability: skipped (needs root for a private mount namespace)".into());
    }
    let exe = std::env::current_exe()?;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .env(INNER, "1")
        .status()
        .context("running unshare")?;
    ensure!(status.success(), "the test in its mount namespace failed ({status})");
    Ok("lease_durability: 2 passed, 0 failed".into())
}

fn inside() -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        read_only_state_dir().await.context("read-only state dir")?;
        println!("test read_only_state_dir ... ok");
        full_state_dir().await.context("full state dir")?;
        println!("test full_state_dir ... ok");
        Ok(String::new())
    })
}

fn mount(args: &[&str]) -> Result<()> {
    let status = Command::new("mount").args(args).status().context("running mount")?;
    ensure!(status.success(), "mount {args:?} failed");
    Ok(())
}

async fn read_only_state_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_str().context("temp dir path")?;
    mount(&["--bind", path, path])?;
    let server = Server::start(dir.path()).await?;
    let first = server.bind_address(0x61).await?;
    mount(&["-o", "remount,bind,ro", path])?;
    let (second, retry) = server.withheld_ack(0x62).await?;
    mount(&["-o", "remount,bind,rw", path])?;
    ensure!(server.retry(&retry).await? == second, "the retransmitted REQUEST gets its address");
    server.stop().await;
    assert_kept(dir.path(), &[first, second]).await?;
    Command::new("umount").arg(path).status()?;
    Ok(())
}

async fn full_state_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_str().context("temp dir path")?;
    mount(&["-t", "tmpfs", "-o", "size=256k", "tmpfs", path])?;
    let server = Server::start(dir.path()).await?;
    let first = server.bind_address(0x71).await?;
    let filler = dir.path().join("filler");
    fill(&filler)?;
    let (second, retry) = server.withheld_ack(0x72).await?;
    std::fs::remove_file(&filler)?;
    ensure!(server.retry(&retry).await? == second, "the retransmitted REQUEST gets its address");
    server.stop().await;
    assert_kept(dir.path(), &[first, second]).await?;
    Command::new("umount").arg(path).status()?;
    Ok(())
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0xa5u8; 4096];
    loop {
        match f.write_all(&block).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
            Err(e) => bail!("filling {}: {e}", path.display()),
        }
    }
}

/// A fresh service on `dir` knows every address in `expected`: each is re-acknowledged to its
/// client, and refused to a stranger.
async fn assert_kept(dir: &Path, expected: &[(u8, Ipv4Addr)]) -> Result<()> {
    let server = Server::start(dir).await?;
    for &(last, ip) in expected {
        let stranger = Req::new(REQUEST, mac(last + 0x80), os_client(mac(last + 0x80))).requested(ip);
        let reply = server.ask(&stranger).await?;
        ensure!(kind(&reply) != ACK, "{ip} was given to a stranger after the restart");
    }
    server.stop().await;
    Ok(())
}

struct Server {
    shared: Arc<Shared>,
    client: UdpSocket,
    dhcp: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(state_dir: &Path) -> Result<Server> {
        let shared = Shared::new(Arc::new(catalog()), ServerInfo::new(SERVER, HTTP_BASE.into()));
        let loopback: SocketAddr = "127.0.0.1:0".parse()?;
        let socket = bind(loopback, None)?;
        let dhcp = socket.local_addr().into();
        let client = UdpSocket::bind(loopback).await?;
        let opts = DhcpOptions {
            state_dir: state_dir.to_path_buf(),
            client_port: client.local_addr()?.port(),
            reply_to: Some(client.local_addr()?),
            ..Default::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let sockets = DhcpSockets { dhcp: socket, pxe: None };
        let task = tokio::spawn(run(shared.clone(), sockets, opts, async {
            let _ = stopped.await;
        }));
        Ok(Server { shared, client, dhcp, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    async fn reply(&self, wait: Duration) -> Result<Option<Message>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.client.recv_from(&mut buf)).await {
            Err(_) => Ok(None),
            Ok(r) => {
                let (n, _) = r?;
                Ok(Some(Message::decode(&mut dhcproto::Decoder::new(&buf[..n]))?))
            }
        }
    }

    async fn ask(&self, req: &Req) -> Result<Message> {
        self.client.send_to(&req.bytes(), self.dhcp).await?;
        self.reply(Duration::from_secs(5)).await?.with_context(|| format!("no reply to {req:?}"))
    }

    /// DISCOVER and REQUEST for client `last`: the REQUEST to send, for the offered address.
    async fn offered(&self, last: u8) -> Result<(Ipv4Addr, Req)> {
        let m = mac(last);
        let offer = self.ask(&Req::new(DISCOVER, m, os_client(m))).await?;
        Ok((offer.yiaddr(), Req::new(REQUEST, m, os_client(m)).requested(offer.yiaddr()).server_id(SERVER)))
    }

    async fn bind_address(&self, last: u8) -> Result<(u8, Ipv4Addr)> {
        let (ip, request) = self.offered(last).await?;
        let ack = self.ask(&request).await?;
        ensure!(kind(&ack) == ACK && ack.yiaddr() == ip, "no ACK for {ip}: {ack:?}");
        Ok((last, ip))
    }

    /// Client `last` asks while the disk refuses the lease: no ACK comes, and it is counted.
    async fn withheld_ack(&self, last: u8) -> Result<((u8, Ipv4Addr), Req)> {
        let metrics = &self.shared.telemetry.metrics;
        let before = metrics.dhcp_acks_withheld.get();
        let (ip, request) = self.offered(last).await?;
        self.client.send_to(&request.bytes(), self.dhcp).await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.dhcp_acks_withheld.get() == before {
            if let Some(reply) = self.reply(Duration::from_millis(50)).await? {
                bail!("a reply while the lease file could not be written: {reply:?}");
            }
            ensure!(Instant::now() < deadline, "the ACK was neither sent nor counted as withheld");
        }
        ensure!(metrics.lease_write_failures.get() > 0, "the failed write is counted");
        if let Some(reply) = self.reply(Duration::from_millis(300)).await? {
            bail!("a reply while the lease file could not be written: {reply:?}");
        }
        Ok(((last, ip), request))
    }

    /// The client's retransmission once the disk is back: the ACK comes.
    async fn retry(&self, request: &Req) -> Result<(u8, Ipv4Addr)> {
        let ack = self.ask(request).await?;
        ensure!(kind(&ack) == ACK, "no ACK once the disk is writable again: {ack:?}");
        Ok((request.mac[5], ack.yiaddr()))
    }
}
