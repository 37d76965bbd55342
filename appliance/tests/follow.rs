//! `serve --config-git`: the daemon follows a repository served by `git daemon` (Debian
//! package `git`) on loopback, whose commits the test makes with the `git` program. A commit
//! that moves machines to other profiles is served within the poll interval plus 5 s; a broken
//! commit is refused with every error (file, line, column, commit id) and the old bytes keep
//! being served; `POST /hooks/git` fetches the fix at once.

mod common;

use common::file_server::serve_file;
use common::followed::{admin, follow, following, http_text, tftp_text, within, BOARD, POLL, UEFI1};
use common::{curl, tftp_get};
use std::time::Duration;

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
