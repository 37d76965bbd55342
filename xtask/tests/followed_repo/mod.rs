//! The git repository the image's appliance follows (the recipe's `git:`): a copy of the
//! repository's `profiles/`, committed with the `git` program and served by `git-daemon` on the
//! host side of the VMs' bridge, inside the test's network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::lab::Lab;
use testkit::procs::{find_program, Proc};

/// The host's address on the boot network (outside the appliance's DHCP pool); the bridge
/// has it instead of the lab's usual 10.77.0.1, which is the appliance VM's own.
pub const HOST_IP: &str = "10.77.0.9";
/// What the test recipe follows.
pub const URL: &str = "git://10.77.0.9/cfg";

pub struct FollowedRepo {
    work: PathBuf,
    _daemon: Proc,
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "image test")
        .env("GIT_AUTHOR_EMAIL", "image-test@lab.internal")
        .env("GIT_COMMITTER_NAME", "image test")
        .env("GIT_COMMITTER_EMAIL", "image-test@lab.internal")
        .output()
        .expect("cannot run git: install git (Debian package git)");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

impl FollowedRepo {
    /// `profiles` as the first commit of `<dir>/cfg`, served on the lab's bridge at
    /// `HOST_IP`; returns the repository and that commit's id.
    pub fn serve(lab: &Lab, profiles: &Path, dir: &Path) -> (FollowedRepo, String) {
        assert!(find_program("git").is_some(), "the image test needs git (Debian package git)");
        let br = testkit::lab::BRIDGE;
        let ours = format!("{}/{}", testkit::lab::SERVER_IP, testkit::lab::PREFIX);
        lab.server().ip(&["addr", "del", &ours, "dev", br]).expect("removing the lab's address");
        let host = format!("{HOST_IP}/{}", testkit::lab::PREFIX);
        lab.server().ip(&["addr", "add", &host, "dev", br]).expect("adding the host's address");

        let _ = std::fs::remove_dir_all(dir);
        let work = dir.join("cfg");
        copy_dir(profiles, &work.join("profiles"));
        git_in(&work, &["init", "-q", "-b", "main"]);
        let repo = FollowedRepo { work, _daemon: daemon(lab, dir) };
        let first = repo.commit("the repository's profiles");
        (repo, first)
    }

    /// The working tree's `profiles/`, as last committed.
    pub fn profiles(&self) -> PathBuf {
        self.work.join("profiles")
    }

    /// Rewrites `profiles/<file>` with `edit` and commits it; returns the commit id.
    pub fn change(&self, file: &str, edit: impl FnOnce(String) -> String, message: &str) -> String {
        let path = self.profiles().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = edit(text.clone());
        assert_ne!(changed, text, "the edit of {file} changed nothing");
        std::fs::write(&path, changed).unwrap();
        self.commit(message)
    }

    fn commit(&self, message: &str) -> String {
        git_in(&self.work, &["add", "-A"]);
        git_in(&self.work, &["commit", "-q", "-m", message]);
        git_in(&self.work, &["rev-parse", "HEAD"])
    }
}

/// `git-daemon` itself (the `git daemon` wrapper would leave it running as an orphan when
/// killed) in the lab's namespace, serving every repository under `dir`.
fn daemon(lab: &Lab, dir: &Path) -> Proc {
    let exec_path = PathBuf::from(git_in(dir, &["--exec-path"]));
    let mut cmd = lab.server().command(exec_path.join("git-daemon"), Some(Duration::from_secs(1200)));
    cmd.args(["--reuseaddr", "--export-all", "--verbose", &format!("--listen={HOST_IP}")])
        .arg(format!("--base-path={}", dir.display()))
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    Proc::spawn("git-daemon", &mut cmd, &dir.join("git-daemon.log")).expect("git-daemon starts")
}

/// `GET url` from inside the lab's namespace (the boot network), with curl.
pub fn http_get(lab: &Lab, url: &str) -> String {
    let out = lab
        .server()
        .command("curl", Some(Duration::from_secs(60)))
        .args(["-sS", "--fail", "--max-time", "30", url])
        .output()
        .expect("cannot run curl: install curl (Debian package curl)");
    assert!(out.status.success(), "GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
