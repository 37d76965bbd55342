//! The daemon in-process for the integration tests: a private copy of the core's test config,
//! loopback ephemeral ports (TFTP, HTTP and the admin API), and the clients the tests use.
#![allow(dead_code)]

use appliance::serve::{Listeners, ServeOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use testkit::tftp_client::{self as client, ClientOptions};
use tokio::sync::{oneshot, Notify};

pub mod file_server;
pub mod followed;

/// What a daemon serves from and keeps its state in.
struct Dirs {
    config: tempfile::TempDir,
    state: tempfile::TempDir,
    root: tempfile::TempDir,
    bootloaders: tempfile::TempDir,
}

/// A running daemon over a private copy of the test config.
pub struct Daemon {
    pub config: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub root: tempfile::TempDir,
    pub bootloaders: tempfile::TempDir,
    pub http: SocketAddr,
    pub tftp: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    /// With DHCP (`start_with_dhcp`): the server's port-67 socket and the client socket its
    /// replies go to.
    pub dhcp: Option<(SocketAddr, Arc<tokio::net::UdpSocket>)>,
    pub reload: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The core's test config (profiles, machines, menus and their files).
pub fn test_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/config")
}

/// 20 MB of a deterministic pattern, so ranges can be checked.
pub fn big_bytes() -> Vec<u8> {
    (0..20_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

impl Daemon {
    pub async fn start(tweak: impl FnOnce(&mut ServeOptions)) -> Daemon {
        Daemon::start_with(|_| {}, tweak, false).await
    }

    /// A daemon that also serves DHCP on loopback; `edit` changes the config copy first.
    pub async fn start_with_dhcp(edit: impl FnOnce(&Path), tweak: impl FnOnce(&mut ServeOptions)) -> Daemon {
        Daemon::start_with(edit, tweak, true).await
    }

    async fn start_with(edit: impl FnOnce(&Path), tweak: impl FnOnce(&mut ServeOptions), dhcp: bool) -> Daemon {
        let config = tempfile::tempdir().unwrap();
        copy_dir(&test_config(), config.path());
        std::fs::write(config.path().join("files/big.img"), big_bytes()).unwrap();
        std::fs::write(
            config.path().join("big.yaml"),
            "name: big\ncmdline: \"v={{ version }}\"\narch:\n  x86_64:\n    kernel: { path: files/vmlinuz-x86_64, name: vmlinuz }\n    initrd: [ { path: files/big.img, name: big.img } ]\n",
        )
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("hello.txt"), b"hello from the fallback root\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("escape")).unwrap();
        let bootloaders = tempfile::tempdir().unwrap();
        for (name, bytes) in
            [("undionly.kpxe", vec![0x55u8; 70_000]), ("ipxe.efi", (0..=255u8).cycle().take(900_000).collect())]
        {
            std::fs::write(bootloaders.path().join(name), bytes).unwrap();
        }
        edit(config.path());
        let dirs = Dirs { config, state, root, bootloaders };
        Daemon::launch(dirs, tweak, dhcp).await
    }

    /// Starts the daemon on `dirs` (a new one, or those of a daemon that was killed).
    async fn launch(dirs: Dirs, tweak: impl FnOnce(&mut ServeOptions), with_dhcp: bool) -> Daemon {
        let Dirs { config, state, root, bootloaders } = dirs;
        let mut opts = ServeOptions::new(config.path().to_path_buf(), state.path().to_path_buf());
        opts.bootloaders = Some(bootloaders.path().to_path_buf());
        opts.tftp_root = Some(root.path().to_path_buf());
        opts.advertise = Some("127.0.0.1".parse().unwrap());
        opts.tftp.timeout = Duration::from_millis(300);
        tweak(&mut opts);
        let tftp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tftp_addr, http_addr, admin_addr) =
            (tftp.local_addr().unwrap(), http.local_addr().unwrap(), admin.local_addr().unwrap());
        let (dhcp, dhcp_info) = if with_dhcp {
            let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let server = appliance::dhcp::bind(loopback, None).unwrap();
            let client = Arc::new(tokio::net::UdpSocket::bind(loopback).await.unwrap());
            opts.dhcp_reply_to = Some(client.local_addr().unwrap());
            let addr = SocketAddr::from(server.local_addr());
            (Some(appliance::dhcp::DhcpSockets { dhcp: server, pxe: None }), Some((addr, client)))
        } else {
            (None, None)
        };
        let reload = Arc::new(Notify::new());
        let (tx, rx) = oneshot::channel();
        let r = reload.clone();
        let task = tokio::spawn(async move {
            appliance::serve::run(opts, Listeners { dhcp, tftp, http, admin: Some(admin) }, r, async {
                let _ = rx.await;
            })
            .await
        });
        // Ready when HTTP and the admin API answer.
        for addr in [http_addr, admin_addr] {
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Daemon {
            config,
            state,
            root,
            bootloaders,
            http: http_addr,
            tftp: tftp_addr,
            admin: admin_addr,
            dhcp: dhcp_info,
            reload,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Ends the daemon without a shutdown (its tasks are dropped where they stand, as by
    /// `kill -9`: nothing more is written) and starts a new one on the same directories.
    pub async fn kill_and_restart(self) -> Daemon {
        self.kill_and_restart_with(|_| {}).await
    }

    /// [`Daemon::kill_and_restart`], with `tweak` applied to the new daemon's options.
    pub async fn kill_and_restart_with(mut self, tweak: impl FnOnce(&mut ServeOptions)) -> Daemon {
        let task = self.task.take().unwrap();
        task.abort();
        let _ = task.await;
        let dirs = Dirs { config: self.config, state: self.state, root: self.root, bootloaders: self.bootloaders };
        Daemon::launch(dirs, tweak, false).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn store(&self) -> PathBuf {
        self.state.path().join("artifacts")
    }

    pub fn catalog(&self) -> appliance_core::catalog::Catalog {
        appliance::config_dir::load(self.config.path(), None).unwrap()
    }
}

/// Runs a command, returning (success, stdout bytes, stderr text).
pub fn run(cmd: &mut Command, what: &str) -> (bool, Vec<u8>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}): install it (Debian package named in the test)"));
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    run(Command::new("curl").args(["-s", "-S"]).args(args), "curl (Debian package curl)")
}

pub async fn tftp_get(d: &Daemon, path: &str) -> Result<Vec<u8>, String> {
    client::get(d.tftp, path, &ClientOptions::default()).await.map(|dl| dl.data).map_err(|e| e.to_string())
}

/// `git` in `dir`, isolated from the host's and the user's configuration; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t"),
        "git (Debian package git)",
    );
    assert!(ok, "git {args:?}: {err}");
    String::from_utf8(out).unwrap().trim().to_string()
}

/// A server process a test started (git daemon, sshd, the daemon binary): killed by its own
/// PID and reaped when the test ends, however it ends.
pub struct Spawned(pub std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
