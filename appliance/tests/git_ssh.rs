//! The follower's fetch over SSH, for real: the daemon binary follows
//! `ssh://root@127.0.0.1:PORT/<bare repository>` served by an `sshd` (Debian package
//! `openssh-server`) that the test starts on loopback with its own host key, its own
//! `authorized_keys` and its own config, and reaches it through the system's `ssh` (Debian
//! package `openssh-client`) with `--git-ssh-key`. The first commit is served, a second one
//! within the poll interval plus 5 s, the host key lands in `<state>/git/known_hosts` (a host
//! seen first is accepted), and neither the key's path nor its contents ever reach the log. A
//! key the server does not know is refused at once (batch mode: no password prompt to hang on)
//! with the reason in the log and on `GET /admin/git`, and nothing of that repository is served.
//! Needs root (sshd refuses to run otherwise); fails, saying what to install, without sshd.

mod common;

use common::{copy_dir, curl, git, run, test_config, Spawned};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const POLL: Duration = Duration::from_secs(2);
/// Machine uefi1's iPXE script: its first line after `#!ipxe` names the config's commit.
const UEFI1: &str = "/ipxe/script?mac=52-54-00-00-00-03&buildarch=x86_64&platform=efi";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what} does not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keygen(path: &Path) {
    let (ok, _, err) = run(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "appliance-test", "-f"]).arg(path),
        "ssh-keygen (Debian package openssh-client)",
    );
    assert!(ok, "ssh-keygen: {err}");
}

/// An sshd of the test's own on loopback, serving the bare repository `<dir>/cfg.git` (pushed
/// from the work tree `<dir>/work`) to the deploy key `<dir>/deploy` only.
struct Sshd {
    dir: tempfile::TempDir,
    /// Killed on drop; with -D it does not fork away from its PID.
    _child: Spawned,
    port: u16,
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (sshd runs only as root): run it as root, as `cargo xtask test` does"
        );
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install the Debian package openssh-server (`cargo xtask test` does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        keygen(&p("host_key"));
        keygen(&p("deploy"));
        keygen(&p("stranger"));
        std::fs::copy(p("deploy.pub"), p("authorized_keys")).unwrap();
        // sshd's privilege separation needs this directory; the package's unit makes it at boot.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        std::fs::write(
            p("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAcceptEnv GIT_PROTOCOL\n",
                p("host_key").display(),
                p("sshd.pid").display(),
                p("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(p("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run sshd: install the Debian package openssh-server");
        let sshd = Sshd { dir, _child: Spawned(child), port };
        wait_for_port(port, "sshd");
        let work = sshd.work();
        std::fs::create_dir_all(work.join("profiles")).unwrap();
        copy_dir(&test_config(), &work.join("profiles"));
        git(sshd.dir.path(), &["init", "-q", "--bare", "-b", "main", "cfg.git"]);
        git(&work, &["init", "-q", "-b", "main"]);
        sshd
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn url(&self) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, self.dir.path().join("cfg.git").display())
    }

    /// Commits the work tree, pushes it to the served repository and returns the commit id.
    fn commit(&self, message: &str) -> String {
        let work = self.work();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["push", "-q", "../cfg.git", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    }
}

/// The daemon binary following the repository with a deploy key, on loopback ports, its log
/// (stderr) collected line by line.
struct Appliance {
    _child: Spawned,
    state: tempfile::TempDir,
    http: u16,
    admin: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Appliance {
    /// `fallback`: a config directory served until the first good commit.
    fn start(url: &str, key: &Path, fallback: Option<&Path>) -> Appliance {
        let state = tempfile::tempdir().unwrap();
        let (http, tftp, admin) = (free_port(), free_port(), free_port());
        let config = fallback.map(Path::to_path_buf).unwrap_or_else(|| state.path().join("no-local-config"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_appliance"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--state")
            .arg(state.path())
            .args(["--listen", "127.0.0.1", "--advertise", "127.0.0.1", "--dhcp", "off", "--no-watch"])
            .args(["--cpu-latency", "off", "--dhcp-port", "0", "--proxy-port", "0"])
            .args(["--http-port", &http.to_string(), "--tftp-port", &tftp.to_string()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--config-git", url, "--poll", &format!("{}s", POLL.as_secs())])
            .arg("--git-ssh-key")
            .arg(key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let d = Appliance { _child: Spawned(child), state, http, admin, log };
        // The admin socket is bound before the daemon starts; its token is written once it runs.
        d.wait_for(Duration::from_secs(20), "the daemon's admin API", |d| {
            d.state.path().join("admin.token").is_file() && std::net::TcpStream::connect(("127.0.0.1", d.admin)).is_ok()
        });
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for `done`, and returns how long it took; on time out (or when the
    /// daemon exited) fails with the daemon's log.
    fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&Appliance) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not within {limit:?}; the daemon's log:\n{}", self.log());
    }

    fn script(&self) -> String {
        let (ok, body, _) = curl(&["-f", &format!("http://127.0.0.1:{}{UEFI1}", self.http)]);
        if ok {
            String::from_utf8(body).unwrap()
        } else {
            String::new()
        }
    }

    fn git_status(&self) -> serde_json::Value {
        let token = std::fs::read_to_string(self.state.path().join("admin.token")).unwrap();
        let (ok, body, err) = curl(&[
            "-f",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://127.0.0.1:{}/admin/git", self.admin),
        ]);
        assert!(ok, "GET /admin/git: {err}");
        serde_json::from_slice(&body).unwrap()
    }
}

#[test]
fn follows_a_repository_over_ssh_with_a_deploy_key() {
    let sshd = Sshd::start();
    let first = sshd.commit("first");
    let key = sshd.key("deploy");
    let d = Appliance::start(&sshd.url(), &key, None);
    // The URL is logged and rendered without its user name.
    let header = |commit: &str| format!("# config: git {} commit {commit}", sshd.url().replacen("root@", "", 1));
    d.wait_for(POLL + Duration::from_secs(5), "the first commit served", |d| d.script().contains(&header(&first)));

    std::fs::write(sshd.work().join("profiles/machines.yaml"), {
        let t = std::fs::read_to_string(sshd.work().join("profiles/machines.yaml")).unwrap();
        t.replace("hostname: uefi1, profile: live", "hostname: uefi1, profile: x86only")
    })
    .unwrap();
    let second = sshd.commit("uefi1 to x86only");
    let took = d.wait_for(POLL + Duration::from_secs(5), "the second commit served", |d| {
        let s = d.script();
        s.contains(&header(&second)) && s.contains("only")
    });
    eprintln!("the second commit was served {took:?} after its push");
    assert_eq!(d.git_status()["serving"], second.as_str());

    // The host key was recorded on first sight (accept-new), in the state directory.
    let host_key = std::fs::read_to_string(sshd.key("host_key.pub")).unwrap();
    let host_key = host_key.split_whitespace().nth(1).unwrap();
    // (Debian's ssh_config hashes the host names it records: ask ssh-keygen to find it.)
    let (found, known, err) = run(
        Command::new("ssh-keygen")
            .arg("-F")
            .arg(format!("[127.0.0.1]:{}", sshd.port))
            .arg("-f")
            .arg(d.state.path().join("git/known_hosts")),
        "ssh-keygen (Debian package openssh-client)",
    );
    let known = String::from_utf8_lossy(&known);
    assert!(found && known.contains(host_key), "the host key is not in known_hosts: {known} {err}");

    // Neither the key's path nor any line of it was logged.
    let log = d.log();
    assert!(log.contains(&second), "the log does not name the served commit:\n{log}");
    assert!(!log.contains(&key.display().to_string()) && !log.contains("deploy"), "{log}");
    let private = std::fs::read_to_string(&key).unwrap();
    for line in private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "a line of the private key was logged:\n{log}");
    }
}

#[test]
fn an_unknown_key_is_refused_at_once_and_nothing_of_the_repository_is_served() {
    let sshd = Sshd::start();
    let commit = sshd.commit("first");
    let fallback = tempfile::tempdir().unwrap();
    copy_dir(&test_config(), fallback.path());
    let started = Instant::now();
    let d = Appliance::start(&sshd.url(), &sshd.key("stranger"), Some(fallback.path()));
    // Batch mode: ssh gives up instead of asking for a password, well before the next poll.
    d.wait_for(Duration::from_secs(10), "the refusal on GET /admin/git", |d| !d.git_status()["refused"].is_null());
    eprintln!("the fetch was refused {:?} after the start", started.elapsed());
    let status = d.git_status();
    let problems = status["refused"]["problems"].to_string();
    assert!(status["serving"].is_null() && status["refused"]["commit"].is_null(), "{status}");
    assert!(problems.contains("the server refused the SSH key"), "{status}");
    assert!(problems.contains(&format!("fetching main from ssh://127.0.0.1:{}", sshd.port)), "{status}");
    d.wait_for(Duration::from_secs(5), "the refusal in the log", |d| {
        d.log().contains("git fetch failed") && d.log().contains("the server refused the SSH key")
    });
    // The local directory serves, nothing from the repository.
    let script = d.script();
    assert!(script.starts_with("#!ipxe\n# uefi1 ") && !script.contains("# config: git"), "{script}");
    assert!(!d.log().contains(&commit) && !script.contains(&commit), "{}", d.log());
    assert!(!d.log().contains("stranger"), "{}", d.log());
}
