//! A followed commit whose `url:` downloads do not fit on the state file system is refused,
//! naming the space, and changes nothing that is served: a server claiming a petabyte; and, on
//! a real 8 MiB tmpfs mounted over `<state>/downloads` (where the daemon checks the free space
//! and downloads to), a file larger than what is left with a true Content-Length (refused
//! before a byte is fetched) and one whose length is not announced (the download stops and its
//! part file is removed, giving the space back). The tmpfs tests need root (`mount`).

mod common;

use common::file_server::{serve_file_with, FileServer, Length};
use common::followed::{admin, following, http_text, within, Served, BOARD, POLL};
use common::{run, tftp_get, Daemon};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Machine bios1's iPXE script; the commits below move bios1 to the downloaded profile.
const BIOS1: &str = "/ipxe/script?mac=52-54-00-00-00-01&buildarch=x86_64&platform=pcbios";
const MIB: u64 = 1 << 20;

/// A tmpfs mounted over a directory for the test; unmounted when dropped, also on a panic.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it mounts a tmpfs): run it as root, as `cargo xtask test` does"
        );
        let (ok, _, err) = run(
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(dir),
            "mount (Debian package mount)",
        );
        assert!(ok, "mount -t tmpfs on {}: {err}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }

    fn files(&self) -> Vec<String> {
        std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let (ok, _, err) = run(Command::new("umount").arg(&self.0), "umount (Debian package mount)");
        if !ok {
            // Busy (a file still open): detach it now, the kernel frees it once closed.
            eprintln!("umount {}: {err}; detaching it", self.0.display());
            let _ = run(Command::new("umount").arg("-l").arg(&self.0), "umount (Debian package mount)");
        }
    }
}

/// Commits a profile `big` whose initrd comes from `server` (pinned to `body`'s sha256), with
/// bios1 moved to it, asks the daemon to fetch it, and returns the commit's refusal from
/// `GET /admin/git`.
async fn refused_commit(repo: &Served, d: &Daemon, server: &FileServer, body: &[u8]) -> serde_json::Value {
    use sha2::Digest as _;
    std::fs::write(
        repo.profiles().join("big.yaml"),
        format!(
            "name: big\ncmdline: x\narch:\n  x86_64:\n    kernel: {{ path: files/vmlinuz-x86_64, name: vmlinuz }}\n    \
             initrd: [ {{ name: big.img, url: \"http://{}/big.img\", sha256: {} }} ]\n",
            server.addr,
            hex::encode(sha2::Sha256::digest(body))
        ),
    )
    .unwrap();
    repo.edit("machines.yaml", |t| {
        t.replace("hostname: bios1, arch: x86_64, profile: live", "hostname: bios1, arch: x86_64, profile: big")
    });
    let commit = repo.commit("bios1 on a downloaded initrd");
    let commit = commit.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL + Duration::from_secs(10), "the refusal reported", move || async move {
        admin(d, "GET", "/admin/git").1.contains(commit)
    })
    .await;
    let status: serde_json::Value = serde_json::from_str(&admin(d, "GET", "/admin/git").1).unwrap();
    assert_eq!(status["refused"]["commit"], commit, "{status}");
    assert_eq!(status["refused"]["transient"], true, "{status}");
    assert_ne!(status["serving"], commit, "{status}");
    status
}

/// What bios1 and board1 are served now.
async fn served(d: &Daemon) -> (String, Vec<u8>) {
    (http_text(d, BIOS1), tftp_get(d, BOARD).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_downloads_would_not_fit_is_refused_with_the_reason() {
    let (repo, _, daemon) = following().await;
    let d = &daemon;
    let before = served(d).await;
    // The server says the file is a petabyte: more than any test machine has free.
    let body = b"small".to_vec();
    let server = serve_file_with(body.clone(), Length::Claimed(1 << 50));
    let status = refused_commit(&repo, d, &server, &body).await;
    assert!(status["refused"]["problems"].to_string().contains("MiB free after garbage collection"), "{status}");
    // Nothing was downloaded, and the old bytes are served.
    assert!(server.ranges.lock().unwrap().is_empty());
    assert_eq!(served(d).await, before);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_larger_than_the_free_space_is_refused_before_a_byte_is_fetched() {
    let (repo, first, daemon) = following().await;
    let d = &daemon;
    let fs = Tmpfs::mount(&d.state.path().join("downloads"), "8m");
    let before = served(d).await;
    assert!(before.0.contains(&first));
    let body: Vec<u8> = (0..10 * MIB).map(|i| (i % 253) as u8).collect();
    let server = serve_file_with(body.clone(), Length::True);
    let status = refused_commit(&repo, d, &server, &body).await;
    let problems = status["refused"]["problems"].to_string();
    assert!(
        problems.contains("the downloads need about 20 MiB (twice 10 MiB")
            && problems.contains(&format!("{} has 8 MiB free", fs.0.display())),
        "{status}"
    );
    assert!(server.ranges.lock().unwrap().is_empty(), "a GET was sent");
    assert!(fs.files().is_empty() && fs.used() == 0, "{:?}", fs.files());
    // Byte for byte, also after the next poll tried again.
    tokio::time::sleep(POLL + Duration::from_millis(500)).await;
    assert_eq!(served(d).await, before);
    drop(fs);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_of_unknown_length_stops_when_the_space_runs_out_and_leaves_nothing() {
    let (repo, first, daemon) = following().await;
    let d = &daemon;
    let fs = Tmpfs::mount(&d.state.path().join("downloads"), "8m");
    let before = served(d).await;
    assert!(before.0.contains(&first));
    // No Content-Length, so nothing to check before: the download has to stop by itself.
    let body: Vec<u8> = (0..64 * MIB).map(|i| (i % 251) as u8).collect();
    let server = serve_file_with(body.clone(), Length::Unknown);
    let status = refused_commit(&repo, d, &server, &body).await;
    let problems = status["refused"]["problems"].to_string();
    assert!(
        problems.contains(&format!("not enough space on the state file system {}", fs.0.display()))
            && problems.contains("the partial download was removed"),
        "{status}"
    );
    // It stopped at about half the tmpfs (the published copy needs as much again), long before
    // the 64 MiB were taken.
    let stopped: u64 = problems.split("stopped after ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap();
    assert!((3 * MIB..=5 * MIB).contains(&stopped), "stopped after {stopped} bytes: {status}");
    assert!(server.sent.load(std::sync::atomic::Ordering::SeqCst) < 32 * MIB);
    assert!(!server.ranges.lock().unwrap().is_empty(), "no GET was sent");
    // No part file is left taking the space, also after the next poll tried again.
    assert!(fs.files().is_empty() && fs.used() == 0, "{:?}, {} bytes used", fs.files(), fs.used());
    tokio::time::sleep(POLL + Duration::from_millis(500)).await;
    let fsr = &fs;
    within(Duration::from_secs(5), "the retry's part file removed", move || async move { fsr.used() == 0 }).await;
    assert_eq!(served(d).await, before);
    drop(fs);
    daemon.stop().await;
}
