//! A repository the daemon follows in the tests: a working repository with `profiles/` (the
//! core's test config), served read-only by `git daemon` (Debian package `git`) on loopback, and
//! a daemon following it in-process; the clients and the waiting the follow tests share.

use super::{copy_dir, curl, tftp_get, Daemon, Spawned};
use appliance::follow::git::{Auth, Remote};
use appliance::follow::GitSource;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const POLL: Duration = Duration::from_secs(2);
pub const BOARD: &str = "pxelinux.cfg/01-52-54-00-00-00-05";
/// Machine uefi1's iPXE script.
pub const UEFI1: &str = "/ipxe/script?mac=52-54-00-00-00-03&buildarch=x86_64&platform=efi";

/// A working repository with `profiles/`, served read-only by `git daemon` on loopback.
pub struct Served {
    pub root: tempfile::TempDir,
    /// Only the git daemon this test started, killed by its own handle.
    _daemon: Spawned,
    pub url: String,
}

impl Served {
    pub fn repo(&self) -> PathBuf {
        self.root.path().join("cfg")
    }

    pub fn profiles(&self) -> PathBuf {
        self.repo().join("profiles")
    }

    /// `git` in the repository, isolated from the host's and the user's configuration.
    pub fn git(&self, args: &[&str]) -> String {
        super::git(&self.repo(), args)
    }

    /// Commits everything under `profiles/` and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn edit(&self, file: &str, f: impl FnOnce(String) -> String) {
        let p = self.profiles().join(file);
        std::fs::write(&p, f(std::fs::read_to_string(&p).unwrap())).unwrap();
    }
}

/// The core's test config plus a second arm64 profile, as the repository's first commit.
pub fn serve_repo() -> (Served, String) {
    let root = tempfile::tempdir().unwrap();
    let profiles = root.path().join("cfg/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    copy_dir(&super::test_config(), &profiles);
    std::fs::write(
        profiles.join("arm2.yaml"),
        "name: arm2\ncmdline: \"console=ttyAMA0 arm2 host={{ machine.hostname }}\"\narch:\n  arm64:\n    \
         kernel: { path: files/Image-arm64, name: Image }\n    initrd: [ { path: files/initrd-arm64.img, name: initrd.img } ]\n",
    )
    .unwrap();
    // A port no one listens on now; git daemon takes it (and says so if it cannot).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The `git-daemon` program itself, not `git daemon`: the `git` wrapper would run it as a
    // child that outlives a kill of the wrapper (and holds the test's output open).
    let (ok, exec_path, err) = super::run(Command::new("git").arg("--exec-path"), "git (Debian package git)");
    assert!(ok, "git --exec-path: {err}");
    let exec_path = PathBuf::from(String::from_utf8(exec_path).unwrap().trim());
    let daemon = Command::new(exec_path.join("git-daemon"))
        .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", root.path().display()))
        .arg(root.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot run git daemon: install git (Debian package git)");
    let served = Served { root, _daemon: Spawned(daemon), url: format!("git://127.0.0.1:{port}/cfg") };
    served.git(&["init", "-q", "-b", "main"]);
    let first = served.commit("first");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (served, first)
}

pub fn follow(url: &str) -> impl FnOnce(&mut appliance::serve::ServeOptions) + '_ {
    move |o| {
        let remote =
            Remote { url: url.to_string(), reference: "main".into(), auth: Auth::default(), tls: Default::default() };
        o.git = Some(GitSource { remote, poll: POLL, subdir: Path::new("profiles").to_path_buf() });
    }
}

/// The repository on loopback and a daemon following it, once it serves the first commit.
pub async fn following() -> (Served, String, Daemon) {
    let (repo, first) = serve_repo();
    let d = Daemon::start(follow(&repo.url)).await;
    let (dr, commit) = (&d, first.as_str());
    within(POLL + Duration::from_secs(5), "the first commit served", move || async move {
        tftp_text(dr, BOARD).await.contains(commit)
    })
    .await;
    (repo, first, d)
}

pub async fn tftp_text(d: &Daemon, path: &str) -> String {
    String::from_utf8(tftp_get(d, path).await.unwrap()).unwrap()
}

pub fn http_text(d: &Daemon, path: &str) -> String {
    let (ok, body, err) = curl(&["-f", &d.url(path)]);
    assert!(ok, "{path}: {err}");
    String::from_utf8(body).unwrap()
}

/// Waits up to `limit` for `done`, and returns how long it took.
pub async fn within<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {limit:?}");
}

pub fn admin(d: &Daemon, method: &str, path: &str) -> (u16, String) {
    let token = std::fs::read_to_string(d.state.path().join("admin.token")).unwrap();
    let (ok, out, err) = curl(&[
        "-X",
        method,
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        "-w",
        "\n%{http_code}",
        &format!("http://{}{path}", d.admin),
    ]);
    assert!(ok, "{err}");
    let out = String::from_utf8(out).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}
