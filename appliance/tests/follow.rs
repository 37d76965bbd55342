//! `serve --config-git`: the daemon follows a repository served by `git daemon` (Debian
//! package `git`) on loopback, whose commits the test makes with the `git` program. A commit
//! that moves machines to other profiles is served within the poll interval plus 5 s; a broken
//! commit is refused with every error (file, line, column, commit id) and the old bytes keep
//! being served; `POST /hooks/git` fetches the fix at once.

mod common;

use appliance::follow::git::{Auth, Remote};
use appliance::follow::GitSource;
use common::{copy_dir, curl, run, test_config, tftp_get, Daemon, Spawned};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(2);
const BOARD: &str = "pxelinux.cfg/01-52-54-00-00-00-05";
/// Machine uefi1's iPXE script.
const UEFI1: &str = "/ipxe/script?mac=52-54-00-00-00-03&buildarch=x86_64&platform=efi";

/// A working repository with `profiles/`, served read-only by `git daemon` on loopback.
struct Served {
    root: tempfile::TempDir,
    /// Only the git daemon this test started, killed by its own handle.
    _daemon: Spawned,
    url: String,
}

impl Served {
    fn repo(&self) -> PathBuf {
        self.root.path().join("cfg")
    }

    fn profiles(&self) -> PathBuf {
        self.repo().join("profiles")
    }

    /// `git` in the repository, isolated from the host's and the user's configuration.
    fn git(&self, args: &[&str]) -> String {
        common::git(&self.repo(), args)
    }

    /// Commits everything under `profiles/` and returns the commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn edit(&self, file: &str, f: impl FnOnce(String) -> String) {
        let p = self.profiles().join(file);
        std::fs::write(&p, f(std::fs::read_to_string(&p).unwrap())).unwrap();
    }
}

/// The core's test config plus a second arm64 profile, as the repository's first commit.
fn serve_repo() -> (Served, String) {
    let root = tempfile::tempdir().unwrap();
    let profiles = root.path().join("cfg/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    copy_dir(&test_config(), &profiles);
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
    let (ok, exec_path, err) = run(Command::new("git").arg("--exec-path"), "git (Debian package git)");
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

fn follow(url: &str) -> impl FnOnce(&mut appliance::serve::ServeOptions) + '_ {
    move |o| {
        let remote =
            Remote { url: url.to_string(), reference: "main".into(), auth: Auth::default(), tls: Default::default() };
        o.git = Some(GitSource { remote, poll: POLL, subdir: Path::new("profiles").to_path_buf() });
    }
}

/// The repository on loopback and a daemon following it, once it serves the first commit.
async fn following() -> (Served, String, Daemon) {
    let (repo, first) = serve_repo();
    let d = Daemon::start(follow(&repo.url)).await;
    let (dr, commit) = (&d, first.as_str());
    within(POLL + Duration::from_secs(5), "the first commit served", move || async move {
        tftp_text(dr, BOARD).await.contains(commit)
    })
    .await;
    (repo, first, d)
}

async fn tftp_text(d: &Daemon, path: &str) -> String {
    String::from_utf8(tftp_get(d, path).await.unwrap()).unwrap()
}

fn http_text(d: &Daemon, path: &str) -> String {
    let (ok, body, err) = curl(&["-f", &d.url(path)]);
    assert!(ok, "{path}: {err}");
    String::from_utf8(body).unwrap()
}

/// Waits up to `limit` for `done`, and returns how long it took.
async fn within<F: std::future::Future<Output = bool>>(
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

fn admin(d: &Daemon, method: &str, path: &str) -> (u16, String) {
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

#[tokio::test(flavor = "multi_thread")]
async fn each_commit_is_checked_then_served_and_a_broken_one_changes_nothing() {
    // The first commit replaces the local directory as soon as it is fetched, and every
    // rendered config names it.
    let (repo, first, daemon) = following().await;
    let url = repo.url.clone();
    let header = move |commit: &str| format!("# config: git {url} commit {commit}");
    let (d, header, first) = (&daemon, &header, first.as_str());
    assert!(tftp_text(d, BOARD).await.contains(&header(first)));
    assert!(http_text(d, UEFI1).starts_with(&format!("#!ipxe\n{}\n", header(first))));

    // A commit that moves uefi1 to x86only and board1 to arm2.
    repo.edit("machines.yaml", |t| {
        t.replace("hostname: uefi1, profile: live", "hostname: uefi1, profile: x86only")
            .replace("hostname: board1, arch: arm64, profile: live", "hostname: board1, arch: arm64, profile: arm2")
    });
    let moved = repo.commit("move uefi1 and board1");
    let moved = moved.as_str();
    let took = within(POLL + Duration::from_secs(5), "the move served", move || async move {
        let board = tftp_text(d, BOARD).await;
        board.contains(&header(moved)) && board.contains("arm2 host=board1") && http_text(d, UEFI1).contains("only")
    })
    .await;
    assert!(!http_text(d, UEFI1).contains("role="), "uefi1 still gets the live profile");
    eprintln!("the move was served {took:?} after the commit");

    // A broken commit: two errors in two files.
    let (board_before, uefi_before) = (tftp_get(d, BOARD).await.unwrap(), http_text(d, UEFI1));
    repo.edit("machines.yaml", |t| t.replace("profile: arm2", "profile: nope"));
    repo.edit("x86only.yaml", |t| t.replace("cmdline:", "cmdlin:"));
    let broken = repo.commit("broken");
    let broken = broken.as_str();
    let (code, _) = admin(d, "POST", "/hooks/git");
    assert_eq!(code, 202);
    within(POLL + Duration::from_secs(5), "the refusal reported", move || async move {
        admin(d, "GET", "/admin/git").1.contains(broken)
    })
    .await;
    let (_, status) = admin(d, "GET", "/admin/git");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["serving"], moved, "{status}");
    assert_eq!(status["refused"]["commit"], broken, "{status}");
    let problems: Vec<String> =
        status["refused"]["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    // Every error, each as FILE:LINE:COL with the file's path in the repository (the unknown
    // field in x86only.yaml also leaves every use of that profile unresolved).
    for p in &problems {
        let parts: Vec<&str> = p.splitn(4, ':').collect();
        assert!(
            parts.len() == 4
                && parts[0].starts_with("profiles/")
                && parts[1..3].iter().all(|n| n.parse::<u32>().is_ok()),
            "{p}"
        );
    }
    assert!(problems.iter().any(|p| p.starts_with("profiles/machines.yaml:5:") && p.contains("nope")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("profiles/x86only.yaml:3:1:")), "{problems:?}");
    // The status page and /metrics count it, naming the commit.
    let (_, metrics, _) = curl(&[&format!("http://{}/metrics", d.admin)]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains(r#"appliance_reloads_total{result="refused"} 1"#), "{metrics}");
    assert!(metrics.contains(&format!("commit {moved}")), "{metrics}");
    let (_, page, _) = curl(&[&format!("http://{}/status", d.admin)]);
    let page = String::from_utf8(page).unwrap();
    // (The page escapes `/` as `&#x2f;`.)
    assert!(page.contains(&format!("commit {broken}: profiles&#x2f;machines.yaml:5:")), "{page}");
    // Byte for byte what was served before, even after another poll.
    tokio::time::sleep(POLL).await;
    assert_eq!(tftp_get(d, BOARD).await.unwrap(), board_before);
    assert_eq!(http_text(d, UEFI1), uefi_before);

    // The fix, fetched at once by the hook.
    repo.edit("machines.yaml", |t| t.replace("profile: nope", "profile: live"));
    repo.edit("x86only.yaml", |t| t.replace("cmdlin:", "cmdline:"));
    let fixed = repo.commit("fix");
    let fixed = fixed.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL, "the fix served after the hook", move || async move {
        let board = tftp_text(d, BOARD).await;
        board.contains(&header(fixed)) && board.contains("host=board1") && !board.contains("arm2")
    })
    .await;
    // The follower records the commit just after the swap.
    within(Duration::from_secs(2), "the fix recorded", move || async move {
        admin(d, "GET", "/admin/git").1.contains(&format!("\"serving\":\"{fixed}\""))
    })
    .await;
    let (_, status) = admin(d, "GET", "/admin/git");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["serving"], fixed);
    assert!(status["refused"].is_null(), "{status}");
    // Only the serving and the previous commit's checkouts are kept.
    let mut kept: Vec<String> = std::fs::read_dir(d.state.path().join("commits"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let mut want = vec![moved.to_string(), fixed.to_string()];
    want.sort();
    assert_eq!(kept, want);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_serves_the_last_good_commit_before_any_fetch() {
    let (repo, first, d) = following().await;
    // `explain --serving` reads the recorded commit's checkout and names it.
    let (dir, source) = appliance::follow::record::serving_config(d.state.path()).unwrap();
    let catalog = appliance::config_dir::load(&dir, None).unwrap().with_config_source(source);
    let q = appliance_core::explain::Query {
        mac: Some(appliance_core::mac::MacAddr::parse("52:54:00:00:00:05").unwrap()),
        ..Default::default()
    };
    let text = appliance_core::explain::explain(&catalog, &q).unwrap();
    assert!(text.starts_with(&format!("config: git {} commit {first}\n", repo.url)), "{text}");
    // The repository goes away; the restarted daemon still serves its last good commit.
    let url = repo.url.clone();
    drop(repo);
    let d = d.kill_and_restart_with(follow(&url)).await;
    assert!(tftp_text(&d, BOARD).await.contains(&first));
    d.stop().await;
}

/// A loopback HTTP server for one file: HEAD, GET and `Range: bytes=N-`; with `cut` set, the
/// next GET sends the headers of the whole file but only its first half, then closes.
struct FileServer {
    addr: std::net::SocketAddr,
    /// The `Range` header of every GET, empty when there was none.
    ranges: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn serve_file(body: Vec<u8>) -> FileServer {
    serve_file_claiming(body, None)
}

/// [`serve_file`], with HEAD claiming `claimed` bytes instead of the file's size.
fn serve_file_claiming(body: Vec<u8>, claimed: Option<u64>) -> FileServer {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = FileServer { addr, ranges: Default::default(), cut: Default::default() };
    let (ranges, cut) = (server.ranges.clone(), server.cut.clone());
    // Ends with the test process; it only ever answers on loopback.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let (mut range, mut line) = (String::new(), String::new());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                    range = v.trim().to_string();
                }
                line.clear();
            }
            let start: usize =
                range.strip_prefix("bytes=").and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            };
            let head = match claimed.filter(|_| request.starts_with("HEAD ")) {
                Some(n) => head.replace(&format!("Content-Length: {}", body.len()), &format!("Content-Length: {n}")),
                None => head,
            };
            let _ = stream.write_all(head.as_bytes());
            if request.starts_with("GET ") {
                ranges.lock().unwrap().push(range);
                let end = if cut.swap(false, Ordering::SeqCst) { body.len() / 2 } else { body.len() };
                let _ = stream.write_all(&body[start..end.max(start)]);
            }
        }
    });
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_artifact_with_a_wrong_sha256_is_refused_and_a_cut_download_resumes() {
    use sha2::Digest as _;
    let (repo, first, daemon) = following().await;
    let d = &daemon;
    const BIOS1: &str = "/ipxe/script?mac=52-54-00-00-00-01&buildarch=x86_64&platform=pcbios";
    assert!(http_text(d, BIOS1).contains(&first));
    let before = http_text(d, BIOS1);

    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&blob));
    let server = serve_file(blob.clone());
    let profile = |sha: &str| {
        format!(
            "name: dl\ncmdline: \"console=ttyS0 dl\"\narch:\n  x86_64:\n    kernel: {{ path: files/vmlinuz-x86_64, name: vmlinuz }}\n    \
             initrd: [ {{ name: dl.img, url: \"http://{}/dl.img\", sha256: {sha} }} ]\n",
            server.addr
        )
    };
    // bios1 moves to a profile whose initrd is downloaded: first with a wrong sha256.
    let wrong = hex::encode(sha2::Sha256::digest(b"something else"));
    std::fs::write(repo.profiles().join("dl.yaml"), profile(&wrong)).unwrap();
    repo.edit("machines.yaml", |t| {
        t.replace("hostname: bios1, arch: x86_64, profile: live", "hostname: bios1, arch: x86_64, profile: dl")
    });
    let bad = repo.commit("dl with a wrong sha256");
    let bad = bad.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL + Duration::from_secs(5), "the wrong sha256 refused", move || async move {
        let status = admin(d, "GET", "/admin/git").1;
        status.contains(bad) && status.contains("sha256 mismatch")
    })
    .await;
    assert_eq!(http_text(d, BIOS1), before);

    // The right sha256; the first GET is cut half-way and the download resumes with Range.
    server.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::write(repo.profiles().join("dl.yaml"), profile(&sha)).unwrap();
    let good = repo.commit("dl with the right sha256");
    let good = good.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL + Duration::from_secs(10), "the download served", move || async move {
        let script = http_text(d, BIOS1);
        script.contains(good) && script.contains("dl.img")
    })
    .await;
    let ranges = server.ranges.lock().unwrap().clone();
    assert!(ranges.contains(&format!("bytes={}-", blob.len() / 2)), "{ranges:?}");
    // The published artifact is the file itself.
    let dl = d.store().join("dl");
    let version = std::fs::read_dir(&dl).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::read(version.join("dl.img")).unwrap() == blob);
    daemon.stop().await;
}

/// A `.deb` (ar: debian-binary, control.tar.gz, data.tar.gz) holding `./boot/initrd.img-1`.
fn deb_with(file: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(file.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "./boot/initrd.img-1", file).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let data = gz.finish().unwrap();
    let mut ar = ar::Builder::new(Vec::new());
    for (name, bytes) in [("debian-binary", &b"2.0\n"[..]), ("control.tar.gz", &[][..]), ("data.tar.gz", &data[..])] {
        ar.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).unwrap();
    }
    ar.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deb_source_with_a_url_is_downloaded_and_its_file_extracted() {
    use sha2::Digest as _;
    let (repo, _, daemon) = following().await;
    let d = &daemon;
    let initrd: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let pkg = deb_with(&initrd);
    let server = serve_file(pkg.clone());
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    std::fs::write(
        repo.profiles().join("debdl.yaml"),
        format!(
            "name: debdl\ncmdline: \"console=ttyS0 debdl\"\narch:\n  x86_64:\n    kernel: {{ path: files/vmlinuz-x86_64, name: vmlinuz }}\n    \
             initrd: [ {{ name: initrd.img, deb: linux-image-test, file: boot/initrd.img-*, url: \"http://{}/p.deb\", deb_sha256: {}, sha256: {} }} ]\n",
            server.addr,
            sha(&pkg),
            sha(&initrd)
        ),
    )
    .unwrap();
    let commit = repo.commit("a deb source with its url");
    let commit = commit.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL + Duration::from_secs(10), "the deb commit served", move || async move {
        admin(d, "GET", "/admin/git").1.contains(&format!("\"serving\":\"{commit}\""))
    })
    .await;
    let dir = d.store().join("debdl");
    let version = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    assert!(std::fs::read(version.join("initrd.img")).unwrap() == initrd);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_downloads_would_not_fit_is_refused_with_the_reason() {
    let (repo, _, daemon) = following().await;
    let d = &daemon;
    let before = tftp_get(d, BOARD).await.unwrap();
    // The server says the file is a petabyte: more than any test machine has free.
    let server = serve_file_claiming(b"small".to_vec(), Some(1 << 50));
    std::fs::write(
        repo.profiles().join("huge.yaml"),
        format!(
            "name: huge\ncmdline: x\narch:\n  x86_64:\n    kernel: {{ path: files/vmlinuz-x86_64, name: vmlinuz }}\n    \
             initrd: [ {{ name: huge.img, url: \"http://{}/huge.img\", sha256: {} }} ]\n",
            server.addr,
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let commit = repo.commit("a petabyte initrd");
    let commit = commit.as_str();
    assert_eq!(admin(d, "POST", "/hooks/git").0, 202);
    within(POLL + Duration::from_secs(5), "the refusal reported", move || async move {
        admin(d, "GET", "/admin/git").1.contains(commit)
    })
    .await;
    let status: serde_json::Value = serde_json::from_str(&admin(d, "GET", "/admin/git").1).unwrap();
    let problems = status["refused"]["problems"].to_string();
    assert!(problems.contains("MiB free after garbage collection"), "{status}");
    assert_eq!(status["refused"]["transient"], true, "{status}");
    // Nothing was downloaded, and the old bytes are served.
    assert!(server.ranges.lock().unwrap().is_empty());
    assert_eq!(tftp_get(d, BOARD).await.unwrap(), before);
    daemon.stop().await;
}
