//! The whole daemon in-process on loopback ephemeral ports, with real clients: curl and
//! tftp-hpa for TFTP, curl for HTTP. Republishing, GC and reload behaviour.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use testkit::tftp_client::{self as client, ClientOptions};

#[tokio::test(flavor = "multi_thread")]
async fn tftp_serves_rendered_configs_per_mac_with_curl_and_tftp_hpa() {
    let d = Daemon::start(|_| {}).await;
    let port = d.tftp.port().to_string();
    let (ok, body, err) = curl(&[&format!("tftp://127.0.0.1:{port}/pxelinux.cfg/01-52-54-00-00-00-05")]);
    assert!(ok, "{err}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("# board1 (52:54:00:00:00:05): profile live, arm64"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("grub.cfg");
    let (ok, _, err) = run(
        Command::new("tftp")
            .args(["-m", "binary", "127.0.0.1", &port, "-c", "get", "grub/grub.cfg-01-52-54-00-00-00-05"])
            .arg(&dest),
        "tftp (Debian package tftp-hpa)",
    );
    assert!(ok, "{err}");
    let grub = std::fs::read_to_string(&dest).unwrap();
    assert!(grub.contains("menuentry 'Live system' --id live"), "{grub}");
    // U-Boot's script image and GRUB's module lists.
    let img = tftp_get(&d, "boot.scr.uimg").await.unwrap();
    assert_eq!(&img[..4], &[0x27, 0x05, 0x19, 0x56]);
    assert!(tftp_get(&d, "grub/arm64-efi/command.lst").await.unwrap_err().contains("not found"));
    // A shortened hex address names no single machine.
    assert!(tftp_get(&d, "pxelinux.cfg/0A00").await.is_err());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_bootloaders_byte_exact_at_each_blksize() {
    let d = Daemon::start(|_| {}).await;
    let want = std::fs::read(d.bootloaders.path().join("ipxe.efi")).unwrap();
    for blksize in ["512", "1468", "8192"] {
        let (ok, body, err) =
            curl(&["--tftp-blksize", blksize, &format!("tftp://127.0.0.1:{}/ipxe.efi", d.tftp.port())]);
        assert!(ok, "blksize {blksize}: {err}");
        assert!(body == want, "blksize {blksize}: {} bytes differ from {}", body.len(), want.len());
    }
    for windowsize in [1, 4, 16] {
        let opts =
            ClientOptions { blksize: Some(1468), windowsize: Some(windowsize), tsize: true, ..Default::default() };
        let dl = client::get(d.tftp, "ipxe.efi", &opts).await.unwrap();
        assert_eq!(dl.stats.tsize, Some(want.len() as u64));
        assert!(dl.data == want, "windowsize {windowsize}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tftp_traversal_and_writes_are_refused() {
    let d = Daemon::start(|_| {}).await;
    assert_eq!(tftp_get(&d, "hello.txt").await.unwrap(), b"hello from the fallback root\n");
    for bad in [
        "../etc/passwd",
        "..\\..\\etc\\passwd",
        "/etc/passwd",
        "//etc/passwd",
        "%2e%2e/etc/passwd",
        "escape",
        "artifacts/../../etc/passwd",
        "artifacts/live/../../x",
    ] {
        let r = tftp_get(&d, bad).await;
        assert!(r.is_err(), "{bad:?} was served: {:?}", r.map(|b| b.len()));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upload");
    std::fs::write(&src, b"nope").unwrap();
    let (ok, _, _) = curl(&["-T", src.to_str().unwrap(), &format!("tftp://127.0.0.1:{}/upload", d.tftp.port())]);
    assert!(!ok, "a TFTP write was accepted");
    assert!(!d.root.path().join("upload").exists());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_scripts_ranges_and_refusals() {
    let d = Daemon::start(|_| {}).await;
    let (ok, body, _) = curl(&[&d.url("/ipxe/script?mac=52-54-00-00-00-03&buildarch=x86_64&platform=efi")]);
    assert!(ok);
    let script = String::from_utf8(body).unwrap();
    assert!(script.contains("# uefi1 (52:54:00:00:00:03): profile live, x86_64"), "{script}");
    let (_, body, _) = curl(&[&d.url("/ipxe/script?mac=52-54-00-99-00-01&buildarch=x86_64&platform=efi")]);
    assert!(String::from_utf8(body).unwrap().contains("menu Test menu"));

    let c = d.catalog();
    let version = &c.profile_set("big", appliance_core::arch::Arch::X86_64).unwrap().1.version;
    let url = d.url(&format!("/artifacts/big/{version}/big.img"));
    let big = big_bytes();
    let (ok, head, _) = curl(&["-I", &url]);
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(ok && head.contains("content-length: 20000000") && head.contains("accept-ranges: bytes"), "{head}");
    let (ok, body, _) = curl(&["-r", "1000-1999", &url]);
    assert!(ok && body == big[1000..2000]);
    let (ok, body, _) = curl(&["-r", "19999990-", &url]);
    assert!(ok && body == big[19_999_990..]);
    let (ok, body, _) = curl(&[&url]);
    assert!(ok && body == big);
    for bad in ["/nope", "/artifacts/big/000000000000/big.img", "/artifacts/%2e%2e/%2e%2e/etc/passwd", "/../etc/passwd"]
    {
        let (_, code, _) = curl(&["-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", &d.url(bad)]);
        let code = String::from_utf8(code).unwrap();
        assert!(code == "404" || code == "400", "{bad}: {code}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn republish_keeps_old_version_until_grace_then_gc_removes_it() {
    let d = Daemon::start(|o| {
        o.gc_interval = Duration::from_millis(200);
        o.gc_grace = Some(Duration::from_secs(2));
    })
    .await;
    let old = d.catalog().profile_set("live", appliance_core::arch::Arch::Arm64).unwrap().1.version.clone();
    // A node fetched its kernel of version N...
    let kernel_n = tftp_get(&d, &format!("artifacts/live/{old}/Image")).await.unwrap();
    // ...then the operator publishes N+1 (a new command line) and reloads.
    let live = d.config.path().join("live.yaml");
    let text = std::fs::read_to_string(&live).unwrap().replace("console=ttyAMA0", "console=ttyAMA0 loglevel=7");
    std::fs::write(&live, text).unwrap();
    d.reload.notify_one();
    let new = d.catalog().profile_set("live", appliance_core::arch::Arch::Arm64).unwrap().1.version.clone();
    assert_ne!(old, new);
    let mut served_new = false;
    for _ in 0..50 {
        let px = String::from_utf8(tftp_get(&d, "pxelinux.cfg/01-52-54-00-00-00-05").await.unwrap()).unwrap();
        if px.contains(&new) {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_new, "new decisions do not point at version {new}");
    // The node finishes its boot from version N: same bytes, every file.
    let initrd_n = tftp_get(&d, &format!("artifacts/live/{old}/initrd.img")).await.unwrap();
    assert_eq!(initrd_n, b"fake arm64 initrd\n");
    assert_eq!(kernel_n, tftp_get(&d, &format!("artifacts/live/{old}/Image")).await.unwrap());
    let (ok, _, _) = curl(&["-f", "-o", "/dev/null", &d.url(&format!("/artifacts/live/{old}/board.dtb"))]);
    assert!(ok);
    // After the grace period without transfers, N goes and N+1 stays.
    let (old_dir, new_dir) = (d.store().join("live").join(&old), d.store().join("live").join(&new));
    let mut gone = false;
    for _ in 0..60 {
        if !old_dir.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "version {old} was not collected");
    assert!(new_dir.join("Image").is_file());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_in_the_config_dir_is_picked_up_without_sighup() {
    let d = Daemon::start(|o| o.watch = Some(Duration::from_millis(100))).await;
    let before = String::from_utf8(tftp_get(&d, "pxelinux.cfg/01-52-54-00-00-00-05").await.unwrap()).unwrap();
    assert!(before.contains("host=board1"));
    let m = d.config.path().join("machines.yaml");
    let text = std::fs::read_to_string(&m).unwrap().replace("hostname: board1", "hostname: board2");
    std::fs::write(&m, text).unwrap();
    let mut seen = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if String::from_utf8(tftp_get(&d, "pxelinux.cfg/01-52-54-00-00-00-05").await.unwrap())
            .unwrap()
            .contains("host=board2")
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "the edit was not picked up");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_reload_keeps_serving_the_old_config() {
    let d = Daemon::start(|_| {}).await;
    let before = tftp_get(&d, "pxelinux.cfg/01-52-54-00-00-00-05").await.unwrap();
    std::fs::write(d.config.path().join("machines.yaml"), "machines:\n  \"52:54:00:00:00:05\": { profile: nope }\n")
        .unwrap();
    d.reload.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tftp_get(&d, "pxelinux.cfg/01-52-54-00-00-00-05").await.unwrap(), before);
    let (ok, _, _) = curl(&["-f", "-o", "/dev/null", &d.url("/boot.ipxe")]);
    assert!(ok);
    d.stop().await;
}

/// The kernel's CPU wake-up latency target, the lowest of every open request.
fn cpu_latency_now() -> i32 {
    let bytes = std::fs::read(appliance::latency::DEVICE).unwrap_or_else(|e| {
        panic!("cannot read {}: {e} (the test needs root and the kernel's PM QoS device)", appliance::latency::DEVICE)
    });
    i32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_latency_is_requested_while_transfers_run_and_released_after() {
    let before = cpu_latency_now();
    let linger = Duration::from_millis(300);
    let d =
        Daemon::start(|o| o.cpu_latency = appliance::latency::CpuLatency::new(appliance::latency::DEVICE, 17, linger))
            .await;
    let during = before.min(17);
    assert_eq!(cpu_latency_now(), before, "requested before any transfer");

    // TFTP: a lockstep read whose only block is never acknowledged keeps the transfer waiting.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"\x00\x01hello.txt\x00octet\x00", d.tftp).await.unwrap();
    let mut buf = [0u8; 600];
    let (n, server) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..4], b"\x00\x03\x00\x01", "expected DATA 1, got {:?}", &buf[..n]);
    assert_eq!(cpu_latency_now(), during, "not requested while a TFTP transfer waits for its ACK");
    sock.send_to(b"\x00\x04\x00\x01", server).await.unwrap();
    tokio::time::sleep(linger * 3).await;
    assert_eq!(cpu_latency_now(), before, "still requested after the TFTP transfer and the linger");

    // HTTP: a 20 MB response whose client stops reading stays in flight.
    let catalog = d.catalog();
    let version = &catalog.profile_set("big", appliance_core::arch::Arch::X86_64).unwrap().1.version;
    let mut conn = tokio::net::TcpStream::connect(d.http).await.unwrap();
    let req = format!("GET /artifacts/big/{version}/big.img HTTP/1.1\r\nHost: x\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut conn, req.as_bytes()).await.unwrap();
    let n = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    tokio::time::sleep(linger * 3).await;
    assert_eq!(cpu_latency_now(), during, "not requested while an HTTP body is in flight");
    drop(conn);
    tokio::time::sleep(linger * 3).await;
    assert_eq!(cpu_latency_now(), before, "still requested after the HTTP client went away");
    d.stop().await;
}
