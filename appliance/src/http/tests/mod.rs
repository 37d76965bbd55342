//! The HTTP server in-process on 127.0.0.1:0, driven by real clients: curl, and a raw TCP
//! client for request targets curl would normalise.

use super::*;
use crate::artifacts::tests::{version_of, Fixture, KNOWN_MAC};
use appliance_core::arch::{Arch, Firmware};
use appliance_core::catalog::Catalog;
use appliance_core::client::{Client, Learned};
use appliance_core::mac::MacAddr;
use appliance_core::render::ServerInfo;
use std::net::Ipv4Addr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BIG: usize = 20 * 1024 * 1024 + 12345;

struct TestServer {
    addr: SocketAddr,
    ctx: Arc<HttpContext>,
    catalog: Arc<Catalog>,
    _fixture: Fixture,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    /// Publishes the fixture's catalog and serves it.
    async fn start(fixture: Fixture, bootloaders: Option<PathBuf>) -> TestServer {
        TestServer::start_with(fixture, bootloaders, |_| {}).await
    }

    async fn start_with(
        fixture: Fixture,
        bootloaders: Option<PathBuf>,
        configure: impl FnOnce(&mut HttpContext),
    ) -> TestServer {
        let catalog = Arc::new(fixture.catalog());
        fixture.publish(&catalog).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ServerInfo::new(Ipv4Addr::LOCALHOST, format!("http://{addr}"));
        let shared = Shared::new(catalog.clone(), server);
        let installs = Arc::new(crate::install_store::InstallStore::new(&fixture.store));
        let mut ctx = HttpContext::new(shared, fixture.store.clone(), bootloaders, Arc::new(Touches::new()), installs);
        configure(&mut ctx);
        let ctx = Arc::new(ctx);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, ctx.clone(), async {
            let _ = rx.await;
        }));
        TestServer { addr, ctx, catalog, _fixture: fixture, stop: Some(tx), task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn artifact_url(&self, profile: &str, arch: Arch, file: &str) -> String {
        self.url(&format!("/artifacts/{profile}/{}/{file}", version_of(&self.catalog, profile, arch)))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|tx| tx.send(()));
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply { status, headers, body: raw[end + 4..].to_vec() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl, with the response headers included and paths sent as given.
async fn curl(args: &[&str]) -> Reply {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-i", "--path-as-is", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Reply::parse(&out.stdout)
}

/// One request with a raw request target, on its own connection.
async fn raw(addr: SocketAddr, target: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    Reply::parse(&out)
}

/// Deterministic bytes that do not compress or repeat.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn boot_ipxe_is_the_entry_script() {
    let s = TestServer::start(Fixture::new(), None).await;
    let r = curl(&[&s.url("/boot.ipxe")]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("#!ipxe"), "{}", r.text());
    assert!(r.text().contains(&format!("chain --autofree http://{}/ipxe/script?mac=", s.addr)));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let h = curl(&["-I", &s.url("/boot.ipxe")]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(r.body.len().to_string().as_str()));
    assert!(h.body.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn known_machine_gets_its_profile_script() {
    let s = TestServer::start(Fixture::new(), None).await;
    let mac = KNOWN_MAC.replace(':', "-");
    let r = curl(&[&s.url(&format!("/ipxe/script?mac={mac}&buildarch=x86_64&platform=efi"))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = version_of(&s.catalog, "live", Arch::X86_64);
    let text = r.text();
    assert!(text.contains(&format!("http://{}/artifacts/live/{v}/vmlinuz", s.addr)), "{text}");
    assert!(text.contains("hostname=node1"), "{text}");
    assert!(!text.contains("menu"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn unknown_machine_gets_the_menu() {
    let s = TestServer::start(Fixture::new(), None).await;
    let r = curl(&[&s.url("/ipxe/script?mac=52-54-00-99-99-99&buildarch=i386&platform=pcbios")]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("menu Test boot") && text.contains("item live") && text.contains("item rescue"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn script_uses_what_the_mac_said_in_dhcp() {
    let s = TestServer::start(Fixture::new(), None).await;
    let mac = MacAddr::parse("52:54:00:aa:bb:cc").unwrap();
    let mut dhcp = Client::new(Firmware::UefiPxe).with_mac(mac, Learned::Chaddr);
    dhcp.arch_hint = Some((Arch::Arm64, Learned::Option93(11)));
    s.ctx.shared.remember_dhcp(&dhcp, Instant::now());
    // No buildarch in the query: the architecture comes from the overheard DHCP request, and
    // only `live` has arm64 artifacts.
    let text = curl(&[&s.url("/ipxe/script?mac=52:54:00:aa:bb:cc")]).await.text();
    assert!(text.contains("item live") && !text.contains("item rescue"), "{text}");
    assert!(text.contains(&version_of(&s.catalog, "live", Arch::Arm64)), "{text}");
    s.stop().await;
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_logs_one_line_with_mac_decision_and_rule() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    // The test runtime is single-threaded, so the server's tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing caches per call site whether anyone listens. While only one dispatcher exists it
    // asks the default of whichever thread reaches a call site first, possibly a parallel test's
    // thread without a subscriber; with two alive it asks each of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();
    let s = TestServer::start(Fixture::new(), None).await;
    let v = version_of(&s.catalog, "live", Arch::X86_64);
    curl(&[&s.url("/ipxe/script?mac=52-54-00-12-34-56&buildarch=x86_64&platform=efi")]).await;
    curl(&[&s.url("/ipxe/script?mac=52-54-00-99-99-99&buildarch=x86_64&platform=efi")]).await;
    curl(&["-r", "0-3", &s.artifact_url("live", Arch::X86_64, "vmlinuz")]).await;
    s.stop().await;
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("http request")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    for want in [
        "method=GET",
        "path=/ipxe/script",
        "status=200",
        "mac=52:54:00:12:34:56",
        &format!("decision=\"boot live/{v}\""),
        "rule=\"MAC database entry 52:54:00:12:34:56\"",
    ] {
        assert!(lines[0].contains(want), "{want} in {}", lines[0]);
    }
    assert!(
        lines[1].contains("decision=\"menu default\"") && lines[1].contains("unknown-machine policy"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("status=206") && lines[2].contains("bytes=4"), "{}", lines[2]);
}

#[tokio::test]
async fn script_without_a_usable_mac_is_400() {
    let s = TestServer::start(Fixture::new(), None).await;
    for q in ["", "?buildarch=x86_64", "?mac=zz-zz&buildarch=x86_64", "?mac="] {
        let r = curl(&[&s.url(&format!("/ipxe/script{q}"))]).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(r.text().contains("mac"), "{}", r.text());
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new();
    f.write("files/vmlinuz", &noise(BIG));
    let s = TestServer::start_with(f, None, |c| c.write_stall = Duration::from_millis(500)).await;
    let url = s.artifact_url("live", Arch::X86_64, "vmlinuz");
    let path = url.trim_start_matches(&format!("http://{}", s.addr)).to_string();
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    // Read nothing while the server fills the socket buffers and its write stalls...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...then drain: the connection must end short of the body, not after all of it.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the server kept the stalled connection open");
    assert!(got > 0 && got < BIG, "read {got} bytes of a {BIG}-byte response");
    s.stop().await;
}

#[tokio::test]
async fn large_artifact_full_range_head_and_validators() {
    let f = Fixture::new();
    let big = noise(BIG);
    f.write("files/vmlinuz", &big);
    let s = TestServer::start(f, None).await;
    let url = s.artifact_url("live", Arch::X86_64, "vmlinuz");
    let v = version_of(&s.catalog, "live", Arch::X86_64);

    let from_files = super::sendfile::sent_from_files();
    let r = curl(&[&url]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(r.body == big, "body differs from the published file");
    // Tests running alongside may send from files too: at least this body went that way.
    let sent = super::sendfile::sent_from_files() - from_files;
    assert!(sent >= BIG as u64, "{sent} of {BIG} artifact bytes went by sendfile");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{v}-vmlinuz\""));
    let last_modified = r.header("last-modified").unwrap().to_string();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert!(s.ctx.touches.last("live", &v).is_some(), "the transfer touched its version");

    let r = curl(&["-r", "1000-1999", &url]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some(format!("bytes 1000-1999/{BIG}").as_str()));
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body == big[1000..2000]);

    let r = curl(&["-H", "Range: bytes=-4096", &url]).await;
    assert_eq!(r.status, 206);
    assert!(r.body == big[BIG - 4096..]);
    let r = curl(&["-H", &format!("Range: bytes={}-", BIG - 10), &url]).await;
    assert_eq!(r.header("content-range"), Some(format!("bytes {}-{}/{BIG}", BIG - 10, BIG - 1).as_str()));
    assert!(r.body == big[BIG - 10..]);
    // Ranges across chunk boundaries of the streamers (read and mapped).
    for (a, b) in [(body::CHUNK - 7, 3 * body::CHUNK + 5), (body::MAPPED_CHUNK - 3, 2 * body::MAPPED_CHUNK + 2)] {
        let r = curl(&["-r", &format!("{a}-{b}"), &url]).await;
        assert!(r.body == big[a..=b], "range {a}-{b}");
    }

    let h = curl(&["-I", &url]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(BIG.to_string().as_str()));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    assert!(h.body.is_empty());

    let r = curl(&["-H", &format!("If-None-Match: {etag}"), &url]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = curl(&["-H", &format!("If-Modified-Since: {last_modified}"), "-r", "0-0", &url]).await;
    assert_eq!(r.status, 304);
    // A stale If-Range gets the whole file; multiple ranges get the whole file too.
    let r = curl(&["-I", "-H", "If-Range: \"other\"", "-r", "0-9", &url]).await;
    assert_eq!((r.status, r.header("content-length")), (200, Some(BIG.to_string().as_str())));
    let r = curl(&["-I", "-H", &format!("If-Range: {etag}"), "-r", "0-9", &url]).await;
    assert_eq!((r.status, r.header("content-length")), (206, Some("10")));
    let r = curl(&["-I", "-r", "0-9,20-29", &url]).await;
    assert_eq!((r.status, r.header("content-length")), (200, Some(BIG.to_string().as_str())));
    s.stop().await;
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let s = TestServer::start(Fixture::new(), None).await;
    let url = s.artifact_url("rescue", Arch::X86_64, "vmlinuz");
    let r = curl(&["-r", "5000-", &url]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */14"));
    assert!(r.body.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let s = TestServer::start(Fixture::new(), None).await;
    let v = version_of(&s.catalog, "live", Arch::X86_64);
    for path in [
        "/",
        "/nope",
        "/artifacts",
        "/artifacts/live",
        &format!("/artifacts/live/{v}"),
        &format!("/artifacts/live/{v}/nope"),
        &format!("/artifacts/live/{v}/vmlinuz/extra"),
        "/artifacts/live/000000000000/vmlinuz",
        "/artifacts/nope/x/y",
        "/ipxe.efi",
        "/ipxe/script/extra",
    ] {
        assert_eq!(curl(&[&s.url(path)]).await.status, 404, "{path}");
    }
    assert_eq!(curl(&["-X", "POST", &s.url("/boot.ipxe")]).await.status, 405);
    s.stop().await;
}

#[tokio::test]
async fn traversal_attempts_never_reach_a_file() {
    let f = Fixture::new();
    // A symlink planted in the store that points at the config directory.
    std::os::unix::fs::symlink(&f.config, f.store.join("evil")).unwrap();
    let s = TestServer::start(f, None).await;
    let secret = "mode: proxy";
    let targets = [
        "/artifacts/../config/appliance.yaml",
        "/artifacts/../../config/appliance.yaml",
        "/artifacts/%2e%2e/%2e%2e/config/appliance.yaml",
        "/artifacts/live/%2e%2e%2f%2e%2e%2fconfig/appliance.yaml",
        "/artifacts/live/..%2f..%2fconfig/appliance.yaml",
        "/..\\..\\config\\appliance.yaml",
        "/artifacts\\..\\..\\config\\appliance.yaml",
        "/artifacts/evil/files/vmlinuz",
        "/artifacts/evil/x/../appliance.yaml",
        "//artifacts/live",
        "/ipxe.efi%00",
        "/%2e%2e/config/appliance.yaml",
    ];
    for t in targets {
        let r = raw(s.addr, t).await;
        assert!(matches!(r.status, 400 | 404), "{t}: {}", r.status);
        assert!(!r.text().contains(secret) && !r.text().contains("kernel"), "{t}: {}", r.text());
    }
    // Absolute-form request targets are judged by their path too.
    let r = raw(s.addr, &format!("http://{}/artifacts/../config/appliance.yaml", s.addr)).await;
    assert!(matches!(r.status, 400 | 404), "{}", r.status);
    let r = curl(&[&s.url("/artifacts/../config/appliance.yaml")]).await;
    assert_eq!(r.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn boot_programs_are_served_byte_exact() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let efi = noise(1024 * 1024 + 3);
    std::fs::write(dir.path().join("ipxe.efi"), &efi).unwrap();
    std::fs::write(dir.path().join("kernel.img"), b"not a boot program").unwrap();
    let kpxe = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kpxe.path(), b"undionly").unwrap();
    std::os::unix::fs::symlink(kpxe.path(), dir.path().join("undionly.kpxe")).unwrap();
    let s = TestServer::start(f, Some(dir.path().to_path_buf())).await;

    let r = curl(&[&s.url("/ipxe.efi")]).await;
    assert_eq!(r.status, 200);
    assert!(r.body == efi);
    assert_eq!(r.header("content-length"), Some(efi.len().to_string().as_str()));
    assert_eq!(r.header("content-type"), Some("application/efi"));
    assert!(r.header("location").is_none());
    let r = curl(&[&s.url("/undionly.kpxe")]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"undionly"[..]));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(curl(&[&s.url("/snponly.efi")]).await.status, 404);
    assert_eq!(curl(&[&s.url("/kernel.img")]).await.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_transfer_in_flight_finish() {
    let f = Fixture::new();
    f.write("files/vmlinuz", &noise(BIG));
    let s = TestServer::start(f, None).await;
    let path = format!("/artifacts/live/{}/vmlinuz", version_of(&s.catalog, "live", Arch::X86_64));
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = conn.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let mut all = first[..n].to_vec();

    // An idle keep-alive connection is closed at once.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let _ = idle.read(&mut buf).await.unwrap();

    let addr = s.addr;
    let stopped = tokio::spawn(s.stop());
    conn.read_to_end(&mut all).await.unwrap();
    let reply = Reply::parse(&all);
    assert_eq!(reply.body.len(), BIG, "the whole file arrived");
    assert_eq!(idle.read(&mut buf).await.unwrap(), 0, "idle connection closed");
    stopped.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second).
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Loopback throughput of a 100 MB artifact with curl as the client: the median of several
/// single downloads, and 64 at once, plus the server's CPU time per GB (steadier than wall
/// time on a shared machine). `BENCH_URL=http://…` also measures another server (e.g. nginx
/// serving a 100 MiB file, its worker pids in `BENCH_PIDS="1 2"`), interleaved with ours so
/// both see the same machine load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p appliance --lib -- --ignored --nocapture http_throughput"]
async fn http_throughput() {
    const SIZE: usize = 100 * 1024 * 1024;
    let f = Fixture::new();
    f.write("files/vmlinuz", &noise(SIZE));
    let s = TestServer::start(f, None).await;
    let mut targets = vec![("appliance", s.artifact_url("live", Arch::X86_64, "vmlinuz"), vec!["self".to_string()])];
    if let Ok(url) = std::env::var("BENCH_URL") {
        let pids = std::env::var("BENCH_PIDS").unwrap_or_default().split_whitespace().map(String::from).collect();
        targets.push(("BENCH_URL", url, pids));
    }
    let fetch = |url: String| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-S", "-o", "/dev/null", "-w", "%{size_download}", &url])
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).parse::<usize>().unwrap(), SIZE);
    };
    // (MB/s, server CPU seconds per GB) of `clients` simultaneous downloads.
    let run = |url: String, pids: Vec<String>, clients: usize| async move {
        let cpu = || pids.iter().map(|p| cpu_seconds(p)).sum::<f64>();
        let (started, cpu_before) = (Instant::now(), cpu());
        let tasks: Vec<_> = (0..clients).map(|_| tokio::spawn(fetch(url.clone()))).collect();
        for t in tasks {
            t.await.unwrap();
        }
        let bytes = (SIZE * clients) as f64;
        (bytes / started.elapsed().as_secs_f64() / 1e6, (cpu() - cpu_before) / (bytes / 1e9))
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (_, url, _) in &targets {
        fetch(url.clone()).await;
    }
    for (clients, rounds) in [(1, 15), (64, 3)] {
        let mut results = vec![(Vec::new(), Vec::new()); targets.len()];
        for _ in 0..rounds {
            for (i, (_, url, pids)) in targets.iter().enumerate() {
                let (rate, cpu) = run(url.clone(), pids.clone(), clients).await;
                results[i].0.push(rate);
                results[i].1.push(cpu);
            }
        }
        for ((name, _, _), (rates, cpu)) in targets.iter().zip(results) {
            let (rate, cpu) = (median(rates), median(cpu));
            println!(
                "{name:>10}, {clients:>2} client(s): median {rate:>7.1} MB/s, server {cpu:.3} CPU s/GB ({rounds} runs)"
            );
        }
    }
    s.stop().await;
}

/// An idle connection from `source` (another loopback address: another source for the
/// fair share).
async fn idle_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server closed `conn` within `wait` (end of stream or a reset).
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(wait, conn.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn idle_connections_from_one_source_keep_only_its_share_and_yield_to_a_new_client() {
    let limits = ShareLimits { per_source: 2, total: 3, evict_after: Duration::from_millis(300) };
    let s = TestServer::start_with(Fixture::new(), None, |ctx| ctx.limits = limits).await;
    let hostile = [127, 0, 0, 2];
    let mut held = vec![idle_from(hostile, s.addr).await];
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.push(idle_from(hostile, s.addr).await);
    let mut third = idle_from(hostile, s.addr).await;
    assert!(closed_within(&mut third, Duration::from_secs(2)).await, "a third connection for one source");
    for c in &mut held {
        assert!(!closed_within(c, Duration::from_millis(50)).await, "within its share");
    }
    // A busy client's connection is never the one to go.
    let mut busy = idle_from([127, 0, 0, 3], s.addr).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    busy.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    busy.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Every slot is taken: the stalest idle one makes room and the new client is served.
    let reply = raw(s.addr, "/boot.ipxe").await;
    assert_eq!(reply.status, 200);
    assert!(closed_within(&mut held[0], Duration::from_secs(2)).await, "the stalest was closed");
    assert!(!closed_within(&mut held[1], Duration::from_millis(50)).await);
    s.stop().await;
}

/// UEFI HTTP Boot on the shim chain: the firmware fetches shim, shim its GRUB from the same
/// directory as `//grubx64.efi`, each byte for byte as signed (even bytes that look like our own
/// GRUB images' address placeholder), and the shim probes are plain 404s.
mod secure_boot;
