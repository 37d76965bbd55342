//! Real third-party clients against our server on loopback. A missing tool
//! fails the test with the Debian package to install; it never skips.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use super::*;

/// Runs `cmd`, failing the test if the tool is missing or hangs.
async fn run(mut cmd: Command, tool: &str, package: &str) -> Output {
    cmd.kill_on_drop(true);
    let child = match cmd.output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{tool}` not found: install the Debian package `{package}` \
             (apt-get install -y --no-install-recommends {package})"
        ),
        Err(e) => panic!("running {tool}: {e}"),
    };
    child
}

async fn run_timed(cmd: Command, tool: &str, package: &str) -> Output {
    tokio::time::timeout(Duration::from_secs(20), run(cmd, tool, package))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not finish within 20 s"))
}

fn assert_file(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: no output file: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    assert!(got == want, "{what}: content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_client_fetches_byte_exact() {
    let data = pattern(300_000 + 13, 21);
    let mut h = Files::new().file("boot/grubx64.efi", &data).serve(test_config()).await;
    let out = h.dir.path().join("hpa.out");
    let mut cmd = Command::new("tftp");
    cmd.arg("-m")
        .arg("octet")
        .arg("127.0.0.1")
        .arg(h.addr.port().to_string())
        .arg("-c")
        .arg("get")
        .arg("boot/grubx64.efi")
        .arg(&out);
    let res = run_timed(cmd, "tftp", "tftp-hpa").await;
    assert!(res.status.success(), "tftp failed: {res:?}");
    assert_file(&out, &data, "tftp-hpa");
    let r = h.report().await;
    assert_eq!(r.outcome, Outcome::Complete);
    assert_eq!((r.blksize, r.windowsize), (512, 1));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_byte_exact() {
    let data = pattern(500_000 + 1, 22);
    let mut h = Files::new().file("vmlinuz", &data).bytes("exact", pattern(8192 * 4, 23)).serve(test_config()).await;
    let cases: &[(&str, &[&str])] = &[
        ("vmlinuz", &[]),
        ("vmlinuz", &["--tftp-blksize", "1468"]),
        ("vmlinuz", &["--tftp-no-options"]),
        ("exact", &["--tftp-blksize", "8192"]),
    ];
    for (i, (name, extra)) in cases.iter().enumerate() {
        let out = h.dir.path().join(format!("curl{i}.out"));
        let mut cmd = Command::new("curl");
        cmd.arg("-sS").args(*extra).arg("-o").arg(&out).arg(format!("tftp://127.0.0.1:{}/{name}", h.addr.port()));
        let res = run_timed(cmd, "curl", "curl").await;
        assert!(res.status.success(), "curl {extra:?} failed: {res:?}");
        let want = if *name == "exact" { pattern(8192 * 4, 23) } else { data.clone() };
        assert_file(&out, &want, &format!("curl {extra:?}"));
        let r = h.report().await;
        assert_eq!(r.outcome, Outcome::Complete, "curl {extra:?}: {r:?}");
    }
    h.shutdown().await;
}
