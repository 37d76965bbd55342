//! The operator's view of a boot, through the whole daemon in-process on loopback: a scripted
//! DHCP → TFTP → HTTP boot of one machine (firmware request bytes, the TFTP test client and curl,
//! all from the machine's own address 127.0.0.11) must leave the expected timeline in
//! `/api/machines/<mac>`, the expected counts in `/metrics` (read by real parsers), and pages
//! that show it; a transfer the client abandons must say at which block.

mod common;

use appliance_core::dhcp::fixtures::{firmware, Req, DISCOVER, REQUEST};
use appliance_core::tftp::packet::{Mode, Packet, Request};
use common::*;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::tftp_client::{self as client, ClientOptions};

const MAC: &str = "52:54:00:00:00:01";
const MAC_BYTES: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
/// The machine's fixed address, made a loopback one so requests can come from it.
const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The test config with a loopback subnet, so the lease is an address the test can send from.
fn loopback_config(dir: &std::path::Path) {
    std::fs::write(
        dir.join("appliance.yaml"),
        "server: { address: 127.0.0.1, http_port: 8080 }\n\
         dhcp: { mode: server, subnet: 127.0.0.0/24, pool: { start: 127.0.0.100, end: 127.0.0.199 } }\n",
    )
    .unwrap();
    let machines = std::fs::read_to_string(dir.join("machines.yaml")).unwrap();
    std::fs::write(dir.join("machines.yaml"), machines.replace("address: 10.0.0.11", "address: 127.0.0.11")).unwrap();
}

async fn dhcp(d: &Daemon, req: Req) -> dhcproto::v4::Message {
    use dhcproto::Decodable;
    let (server, client) = d.dhcp.as_ref().unwrap();
    client.send_to(&req.bytes(), server).await.unwrap();
    let mut buf = vec![0u8; 1500];
    // The sockets are bound before the daemon starts: a first request waits in the socket
    // until the config is loaded and published, which takes seconds when the tests run at once.
    let (n, _) =
        tokio::time::timeout(Duration::from_secs(30), client.recv_from(&mut buf)).await.expect("a reply").unwrap();
    dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&buf[..n])).unwrap()
}

/// curl from the machine's address.
fn get(url: &str) -> (u16, String) {
    let (ok, out, err) = curl(&["--interface", &ADDRESS.to_string(), "-w", "\n%{http_code}", url]);
    assert!(ok, "curl {url}: {err}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

fn admin(d: &Daemon, path: &str) -> (u16, String) {
    let (ok, out, err) = curl(&["-w", "\n%{http_code}", &format!("http://{}{path}", d.admin)]);
    assert!(ok, "curl {path}: {err}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// The machine's timeline once it has `n` records.
async fn timeline(d: &Daemon, n: usize) -> Vec<serde_json::Value> {
    let mut last = String::new();
    for _ in 0..200 {
        let (status, body) = admin(d, &format!("/api/machines/{MAC}"));
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let t = v["timeline"].as_array().unwrap().clone();
            if t.len() >= n {
                return t;
            }
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the timeline never reached {n} records; last answer:\n{last}");
}

/// Starts `ipxe.efi`, acknowledges block 1, then goes silent.
async fn abandon_transfer(d: &Daemon) {
    let sock = tokio::net::UdpSocket::bind((ADDRESS, 0)).await.unwrap();
    let mut rrq = Vec::new();
    Packet::Rrq(Request { filename: "ipxe.efi".into(), mode: Mode::Octet, options: vec![] }).encode(&mut rrq);
    sock.send_to(&rrq, d.tftp).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (_, from) = sock.recv_from(&mut buf).await.unwrap();
    let mut ack = Vec::new();
    Packet::Ack { block: 1 }.encode(&mut ack);
    sock.send_to(&ack, from).await.unwrap();
    let _ = sock.recv_from(&mut buf).await.unwrap();
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_boot_leaves_its_timeline_metrics_and_pages() {
    let d = Daemon::start_with_dhcp(loopback_config, |_| {}).await;
    let server_id = Ipv4Addr::LOCALHOST;

    // 1. A stock BIOS PXE ROM: DISCOVER → OFFER undionly.kpxe, REQUEST → ACK.
    let offer = dhcp(&d, Req::new(DISCOVER, MAC_BYTES, firmware::bios_stock_pxe(MAC_BYTES))).await;
    assert_eq!(offer.yiaddr(), ADDRESS);
    let req = Req::new(REQUEST, MAC_BYTES, firmware::bios_stock_pxe(MAC_BYTES)).requested(ADDRESS).server_id(server_id);
    let ack = dhcp(&d, req).await;
    assert_eq!(ack.yiaddr(), ADDRESS);
    timeline(&d, 2).await;

    // 2. TFTP: the boot program, from the leased address (no MAC in the request).
    let opts = ClientOptions { local: Some(IpAddr::V4(ADDRESS)), blksize: Some(1468), ..Default::default() };
    let undionly = client::get(d.tftp, "undionly.kpxe", &opts).await.unwrap();
    assert_eq!(undionly.data.len(), 70_000);
    timeline(&d, 3).await;

    // 3. HTTP: iPXE's entry script, its per-machine script, the kernel.
    assert_eq!(get(&d.url("/boot.ipxe")).0, 200);
    timeline(&d, 4).await;
    let (status, script) = get(&d.url("/ipxe/script?mac=52-54-00-00-00-01&buildarch=i386&platform=pcbios"));
    assert_eq!(status, 200, "{script}");
    let kernel_path = script
        .split_whitespace()
        .filter(|w| w.starts_with("http://") && w.ends_with("/vmlinuz"))
        .find_map(|w| w.find("/artifacts/").map(|i| w[i..].to_string()))
        .unwrap_or_else(|| panic!("no kernel URL in\n{script}"));
    let version = kernel_path.split('/').nth(3).unwrap().to_string();
    timeline(&d, 5).await;
    let (status, kernel) = get(&d.url(&kernel_path));
    assert_eq!(status, 200);
    timeline(&d, 6).await;

    // 4. A transfer the machine abandons after block 1.
    abandon_transfer(&d).await;
    let t = timeline(&d, 7).await;

    let kinds: Vec<String> = t
        .iter()
        .map(|r| format!("{} {}", r["kind"].as_str().unwrap(), r["path"].as_str().or(r["request"].as_str()).unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            "dhcp DISCOVER",
            "dhcp REQUEST",
            "tftp undionly.kpxe",
            "http /boot.ipxe",
            "http /ipxe/script",
            &format!("http {kernel_path}"),
            "tftp ipxe.efi",
        ],
        "{t:#?}"
    );
    assert!(t.iter().all(|r| r["mac"] == MAC), "every record is the machine's: {t:#?}");
    let (discover, ack, tftp, script_rec, kernel_rec, abandoned) = (&t[0], &t[1], &t[2], &t[4], &t[5], &t[6]);
    assert_eq!(discover["reply"], "OFFER");
    assert_eq!(discover["boot"], "undionly.kpxe");
    assert_eq!(discover["decision"]["outcome"], "boot file undionly.kpxe by TFTP");
    assert_eq!(discover["decision"]["target_rule"], format!("MAC database entry {MAC}"));
    assert_eq!(discover["firmware"], "bios-pxe");
    assert_eq!((&ack["reply"], &ack["address"]), (&"ACK".into(), &ADDRESS.to_string().into()));
    assert_eq!(tftp["end"], "complete");
    assert_eq!((tftp["bytes"].as_u64(), tftp["blksize"].as_u64()), (Some(70_000), Some(1468)));
    assert_eq!(tftp["ip"], ADDRESS.to_string());
    assert_eq!(script_rec["decision"]["profile"], "live");
    assert_eq!(script_rec["decision"]["version"], version.as_str());
    assert_eq!(script_rec["decision"]["hostname"], "bios1");
    assert_eq!(kernel_rec["status"], 200);
    assert_eq!(kernel_rec["bytes"].as_u64(), Some(kernel.len() as u64));
    assert_eq!((&abandoned["end"], abandoned["block"].as_u64()), (&"timed_out".into(), Some(2)), "{abandoned:#}");

    // The summary row.
    let (_, body) = admin(&d, "/api/machines");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = &rows["machines"][0];
    assert_eq!((&row["mac"], &row["hostname"], &row["firmware"]), (&MAC.into(), &"bios1".into(), &"bios-pxe".into()));
    assert_eq!((&row["profile"], &row["version"]), (&"live".into(), &version.clone().into()));
    let err = row["last_error"].as_str().unwrap();
    assert!(err.starts_with("TFTP ipxe.efi: client stopped acknowledging at block 2"), "{err}");

    // The metrics, counted as the boot went, and read by real parsers.
    let mut text = String::new();
    for _ in 0..100 {
        text = admin(&d, "/metrics").1;
        // The lease gauges are brought up to date every 2 s.
        if text.contains(r#"appliance_dhcp_leases{state="bound"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (series, want) in [
        (r#"appliance_requests_total{protocol="dhcp",outcome="offer"}"#, 1.0),
        (r#"appliance_requests_total{protocol="dhcp",outcome="ack"}"#, 1.0),
        (r#"appliance_dhcp_answers_total{mode="server",reply="ack"}"#, 1.0),
        (r#"appliance_requests_total{protocol="tftp",outcome="complete"}"#, 1.0),
        (r#"appliance_requests_total{protocol="tftp",outcome="timed_out"}"#, 1.0),
        (r#"appliance_requests_total{protocol="http",outcome="2xx"}"#, 3.0),
        (r#"appliance_transfer_duration_seconds_count{protocol="http"}"#, 3.0),
        (r#"appliance_transfers_in_flight{protocol="tftp"}"#, 0.0),
        (r#"appliance_dhcp_leases{state="bound"}"#, 1.0),
        (r#"appliance_dhcp_leases{state="free"}"#, 100.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series}");
    }
    let tftp_bytes = metric(&text, r#"appliance_sent_bytes_total{protocol="tftp"}"#);
    assert!(tftp_bytes >= 70_000.0 + 512.0, "{tftp_bytes}");
    assert!(text.contains("appliance_catalog_info{version=\""), "{text}");
    openmetrics_parser_accepts(&text);
    promtool_lints(&text);

    // The pages: HTML on the admin listener only.
    let (status, html) = admin(&d, "/status");
    assert_eq!(status, 200);
    assert!(html.contains(&format!("/status/machines/{MAC}")) && html.contains(&version), "{html}");
    let (status, page) = admin(&d, &format!("/status/machines/{MAC}"));
    assert_eq!(status, 200);
    assert!(
        page.contains("client stopped acknowledging at block 2") && page.contains("decision (DHCP stage)"),
        "{page}"
    );
    assert_eq!(get(&d.url("/status")).0, 404, "the boot port serves no status");
    assert_eq!(admin(&d, &kernel_path).0, 404, "the admin listener serves no artifact");

    // `appliance status` prints the same row.
    let table = appliance::status_cli::run(&format!("http://{}", d.admin)).unwrap();
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with(MAC) && l.contains("bios1")), "{table}");
    d.stop().await;
}

/// The journal is written to the state directory and read back after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_survives_a_restart() {
    let d = Daemon::start_with_dhcp(loopback_config, |_| {}).await;
    let _ = dhcp(&d, Req::new(DISCOVER, MAC_BYTES, firmware::bios_stock_pxe(MAC_BYTES))).await;
    timeline(&d, 1).await;
    let file = d.state.path().join("journal/journal.jsonl");
    assert!(std::fs::read_to_string(&file).unwrap().contains(r#""kind":"dhcp""#));
    let d = d.kill_and_restart().await;
    let t = timeline(&d, 1).await;
    assert_eq!(t[0]["request"], "DISCOVER");
    d.stop().await;
}

/// The provisioning steps are journaled: an answer-file fetch with the decision behind it, an
/// installer's `installed` with its message, and the summary's install state follows.
#[tokio::test(flavor = "multi_thread")]
async fn answer_files_and_installer_events_are_in_the_timeline() {
    const INSTALL1: &str = "52:54:00:00:00:0a";
    let d = Daemon::start(|_| {}).await;
    let (status, body) = http_get(&d.url(&format!("/answers/{INSTALL1}/user-data")));
    assert_eq!(status, 200, "{body}");
    let key = loop {
        if let Some(k) = appliance::secret_files::existing_token_key(d.state.path()).unwrap() {
            break k;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let auth = format!("Authorization: Bearer {}", key.token(appliance_core::mac::MacAddr::parse(INSTALL1).unwrap()));
    let url = d.url(&format!("/events/{INSTALL1}"));
    let (ok, _, err) = curl(&["-f", "-H", &auth, "--data", "event=installed&message=disk+written", &url]);
    assert!(ok, "{err}");

    let mut last = String::new();
    for _ in 0..100 {
        let (status, body) = admin(&d, &format!("/api/machines/{INSTALL1}"));
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let t = v["timeline"].as_array().unwrap();
            if t.len() >= 2 {
                assert_eq!(
                    (&t[0]["kind"], &t[0]["name"], &t[0]["status"]),
                    (&"answer".into(), &"user-data".into(), &200.into()),
                    "{body}"
                );
                assert_eq!(t[0]["decision"]["profile"], "installer", "{body}");
                assert_eq!(
                    (&t[1]["kind"], &t[1]["event"], &t[1]["message"]),
                    (&"installer".into(), &"installed".into(), &"disk written".into()),
                    "{body}"
                );
                assert!(v["summary"]["install"].as_str().unwrap().starts_with("installed"), "{body}");
                d.stop().await;
                return;
            }
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the answer fetch and the event never reached the timeline:\n{last}");
}

fn http_get(url: &str) -> (u16, String) {
    let (ok, out, err) = curl(&["-w", "\n%{http_code}", url]);
    assert!(ok, "curl {url}: {err}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// `--journal off`: no record is made, the metrics still count.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_journal_off_only_metrics_count() {
    let d = Daemon::start(|o| o.journal.enabled = false).await;
    assert!(client::get(d.tftp, "undionly.kpxe", &ClientOptions::default()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(admin(&d, &format!("/api/machines/{MAC}")).0, 404);
    let text = admin(&d, "/metrics").1;
    assert_eq!(metric(&text, r#"appliance_requests_total{protocol="tftp",outcome="complete"}"#), 1.0);
    assert!(!d.state.path().join("journal/journal.jsonl").exists());
    d.stop().await;
}

/// Python's `prometheus_client` OpenMetrics parser (Debian package python3-prometheus-client):
/// strict about the format `prometheus-client` writes (types, `_total`, `# EOF`).
fn openmetrics_parser_accepts(text: &str) {
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        families = list(parse(sys.stdin.read()))\n\
        print(len(families))\n";
    let out =
        pipe(Command::new("/usr/bin/python3").args(["-c", script]), text, "python3 with python3-prometheus-client");
    assert!(out.0, "the OpenMetrics parser refused /metrics: {}", out.2);
    assert!(out.1.trim().parse::<usize>().unwrap() >= 12, "{}", out.1);
}

/// `promtool check metrics` (Debian package prometheus) lints the names, units and help texts.
/// It reads the classic text format, where a counter's samples carry the family's own name, so
/// an OpenMetrics counter (`# TYPE x counter`, sample `x_total`) reads to it as a family
/// `x_total` without help: that complaint, and only that one, is the format's, not ours.
fn promtool_lints(text: &str) {
    let (_, stdout, stderr) =
        pipe(Command::new("promtool").args(["check", "metrics"]), text, "promtool (Debian package prometheus)");
    let helped: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()).collect();
    for problem in stdout.lines().chain(stderr.lines()).filter(|l| !l.trim().is_empty()) {
        let counter_total = problem
            .strip_suffix(" no help text")
            .and_then(|name| name.strip_suffix("_total"))
            .is_some_and(|family| helped.contains(&family));
        assert!(counter_total, "promtool: {problem}");
    }
}

/// Runs `cmd` with `input` on its stdin: (success, stdout, stderr). A missing program fails the
/// test with the package to install.
fn pipe(cmd: &mut Command, input: &str, what: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; install it (`cargo xtask test` does)"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
