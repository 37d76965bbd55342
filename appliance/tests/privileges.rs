//! Least privilege, as the kernel sees it: the real daemon binary, started as root in a
//! network namespace of its own (`unshare --net`, only loopback, so it binds the real ports 67,
//! 69, 80 and 4011 without touching the host's), with `--user nobody`. Once it serves, every
//! thread's `/proc/<pid>/task/<tid>/status` must show nobody's user and group IDs, no
//! supplementary groups, only CAP_NET_RAW (it advertises on `--interface lo`) in the permitted,
//! effective and bounding sets, nothing inheritable or ambient, and NoNewPrivs; the state dir
//! must be nobody's. Needs root; without it the test says so and passes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// CAP_NET_RAW is capability 13.
const NET_RAW_ONLY: &str = "0000000000002000";

fn copy_readable(from: &Path, to: &Path) {
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_readable(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Stops the daemon (by its PID) when the test ends, however it ends.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if self.0.wait().is_err() {
            let _ = self.0.kill();
        }
    }
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

#[test]
fn the_daemon_drops_to_its_user_with_only_the_capabilities_it_needs() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (a network namespace, ports below 1024, a user to become): run it as root, as `cargo xtask test` does");
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a user named nobody");
    let config = tempfile::tempdir().unwrap();
    copy_readable(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/config"), config.path());
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("stale-but-ours"), b"x").unwrap();
    let script = r#"ip link set lo up && exec "$0" serve --config "$1" --state "$2" --user nobody \
        --listen 127.0.0.1 --interface lo --dhcp off --cpu-latency off --no-watch"#;
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script, env!("CARGO_BIN_EXE_appliance")])
        .arg(config.path())
        .arg(state.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let daemon = Stop(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("serving") && line.contains("tftp") => break,
            Ok(line) => log.push(line),
            Err(_) => panic!("the daemon did not start serving:\n{}", log.join("\n")),
        }
    }
    assert!(log.iter().any(|l| l.contains("dropped privileges")), "{}", log.join("\n"));

    let pid = daemon.0.id();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|t| t.unwrap().path()).collect();
    assert!(tasks.len() > 1, "the runtime's threads are there");
    let ids = |n: u32| [n.to_string(), n.to_string(), n.to_string(), n.to_string()].join("\t");
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let on = |name| (name, field(&status, name).to_string());
        assert_eq!(on("Uid"), ("Uid", ids(nobody.uid.as_raw())), "{}", task.display());
        assert_eq!(on("Gid"), ("Gid", ids(nobody.gid.as_raw())), "{}", task.display());
        assert_eq!(on("Groups"), ("Groups", nobody.gid.to_string()), "{}", task.display());
        for (name, want) in [
            ("CapPrm", NET_RAW_ONLY),
            ("CapEff", NET_RAW_ONLY),
            ("CapBnd", NET_RAW_ONLY),
            ("CapInh", "0000000000000000"),
            ("CapAmb", "0000000000000000"),
            ("NoNewPrivs", "1"),
        ] {
            assert_eq!(on(name), (name, want.to_string()), "{}", task.display());
        }
    }
    for entry in [state.path().to_path_buf(), state.path().join("stale-but-ours"), state.path().join("artifacts")] {
        assert_eq!(std::fs::metadata(&entry).unwrap().uid(), nobody.uid.as_raw(), "{}", entry.display());
    }
    drop(daemon);
}
