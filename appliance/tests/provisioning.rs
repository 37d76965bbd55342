//! Provisioning through the whole daemon in-process on loopback: answer files per machine,
//! installer events (tokens, limits, durability), boot-once (installed → local until
//! re-armed by the admin API, `appliance rearm` or a changed entry), a restart without
//! shutdown, and template errors at reload and at request time.

mod common;

use common::*;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const INSTALL1: &str = "52:54:00:00:00:0a";

/// An HTTP exchange with curl: (status, body).
fn http(method: &str, url: &str, args: &[&str]) -> (u16, String) {
    let (ok, out, err) = curl(&[&["-X", method, "-w", "\n%{http_code}", url], args].concat());
    assert!(ok, "curl {method} {url}: {err}");
    let text = String::from_utf8(out).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// The machine's token under the daemon's key (made once the daemon has loaded its config).
fn token(d: &Daemon, mac: &str) -> String {
    for _ in 0..200 {
        if let Some(key) = appliance::secret_files::existing_token_key(d.state.path()).unwrap() {
            return key.token(appliance_core::mac::MacAddr::parse(mac).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the daemon made no token key in {}", d.state.path().display());
}

fn installs(d: &Daemon) -> String {
    std::fs::read_to_string(d.state.path().join("installs.json")).unwrap_or_default()
}

fn script(d: &Daemon, mac: &str) -> String {
    let dashed = mac.replace(':', "-");
    http("GET", &d.url(&format!("/ipxe/script?mac={dashed}&buildarch=x86_64&platform=pcbios")), &[]).1
}

fn post_installed(d: &Daemon, mac: &str) -> (u16, String) {
    let auth = format!("Authorization: Bearer {}", token(d, mac));
    http("POST", &d.url(&format!("/events/{mac}")), &["-H", &auth, "--data", "event=installed&message=disk+written"])
}

/// Edits a file of the daemon's config and waits until the daemon has (re)loaded it.
async fn edit_and_reload(d: &Daemon, file: &str, edit: impl FnOnce(String) -> String) {
    let path = d.config.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, edit(text)).unwrap();
    d.reload.notify_one();
    // A reload publishes nothing new here and takes milliseconds.
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// What the daemon logged (one subscriber for this whole test binary).
fn log_lines() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let make = move || LogWriter(writer.clone());
        let _ = tracing_subscriber::fmt().with_writer(make).with_ansi(false).try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_per_machine_in_either_mac_spelling() {
    let d = Daemon::start(|_| {}).await;
    let (status, colon) = http("GET", &d.url(&format!("/answers/{INSTALL1}/user-data")), &[]);
    assert_eq!(status, 200, "{colon}");
    assert!(colon.starts_with("#cloud-config\nhostname: install1\n"), "{colon}");
    // The daemon's own key: the token the installer gets is the one /events accepts.
    assert!(colon.contains(&format!("Bearer {}", token(&d, INSTALL1))), "{colon}");
    let (_, dashed) = http("GET", &d.url("/answers/52-54-00-00-00-0A/user-data"), &[]);
    assert_eq!(dashed, colon);
    let (ok, head, _) = curl(&["-I", &d.url(&format!("/answers/{INSTALL1}/ignition"))]);
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(
        ok && head.contains("content-type: application/json") && head.contains("cache-control: no-store"),
        "{head}"
    );
    assert_eq!(http("GET", &d.url(&format!("/answers/{INSTALL1}/kickstart")), &[]).0, 404);
    assert_eq!(http("GET", &d.url("/answers/not-a-mac/user-data"), &[]).0, 404);
    // Not in the MAC database: the unknown-machine policy (a menu here: no answers), unless
    // it names a profile.
    let unknown = "52:54:00:99:00:07";
    assert_eq!(http("GET", &d.url(&format!("/answers/{unknown}/user-data")), &[]).0, 404);
    edit_and_reload(&d, "machines.yaml", |t| {
        t.replace("unknown: { action: menu, menu: default }", "unknown: { profile: installer }")
    })
    .await;
    let (status, body) = http("GET", &d.url(&format!("/answers/{unknown}/user-data")), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hostname: node-525400990007"), "{body}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_need_the_machines_token_and_a_well_formed_small_body() {
    let log = log_lines();
    let d = Daemon::start(|_| {}).await;
    let url = d.url(&format!("/events/{INSTALL1}"));
    let good = format!("Authorization: Bearer {}", token(&d, INSTALL1));
    let other = format!("Authorization: Bearer {}", token(&d, "52:54:00:00:00:01"));
    assert_eq!(http("POST", &url, &["--data", "event=installed"]).0, 403, "no token");
    assert_eq!(http("POST", &url, &["-H", &other, "--data", "event=installed"]).0, 403, "another machine's token");
    assert_eq!(
        http("POST", &format!("{url}?token=00{}", &token(&d, INSTALL1)[2..]), &["--data", "event=installed"]).0,
        403
    );
    let big = format!("event=progress&message={}", "x".repeat(5000));
    assert_eq!(http("POST", &url, &["-H", &good, "--data", &big]).0, 413, "declared length");
    assert_eq!(
        http("POST", &url, &["-H", &good, "-H", "Transfer-Encoding: chunked", "--data", &big]).0,
        413,
        "streamed"
    );
    for bad in ["event=done", "message=hi", "{\"event\": 7}"] {
        assert_eq!(http("POST", &url, &["-H", &good, "--data", bad]).0, 400, "{bad}");
    }
    assert_eq!(installs(&d), "", "nothing was recorded");
    assert_eq!(http("GET", &url, &[]).0, 405);

    // The token as a header, a query parameter or a field; JSON or form data.
    let (status, body) = http(
        "POST",
        &url,
        &[
            "-H",
            &good,
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"event":"started","message":"partitioning"}"#,
        ],
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"event\":\"started\",\"installed\":false,\"mac\":\"52:54:00:00:00:0a\"}\n")
    );
    // Durable before the answer: the file holds it when the 200 arrives.
    assert!(installs(&d).contains("\"message\": \"partitioning\""), "{}", installs(&d));
    let t = token(&d, INSTALL1);
    assert_eq!(http("POST", &format!("{url}?token={t}"), &["--data", "event=progress&message=50%25"]).0, 200);
    assert_eq!(http("POST", &url, &["--data", &format!("event=progress&token={t}")]).0, 200);
    assert!(installs(&d).contains("\"message\": \"50%\""));
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("mac=52:54:00:00:00:0a event=started says=\"partitioning\""), "{log}");

    // A machine the catalog does not serve is unknown.
    edit_and_reload(&d, "machines.yaml", |t| {
        t.replace("unknown: { action: menu, menu: default }", "unknown: { action: ignore }")
    })
    .await;
    let stranger = "52:54:00:99:00:08";
    let auth = format!("Authorization: Bearer {}", token(&d, stranger));
    assert_eq!(http("POST", &d.url(&format!("/events/{stranger}")), &["-H", &auth, "--data", "event=started"]).0, 404);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn installed_boots_local_until_the_admin_api_rearms_it() {
    let d = Daemon::start(|_| {}).await;
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    assert_eq!(post_installed(&d, INSTALL1).0, 200);
    let local = script(&d, INSTALL1);
    assert!(local.contains("sanboot --no-describe --drive 0x80"), "{local}");
    assert!(local.contains("booting local until re-armed"), "{local}");
    // Only machines told `after_install: local` boot local once installed.
    assert_eq!(post_installed(&d, "52:54:00:00:00:01").0, 200);
    assert!(script(&d, "52:54:00:00:00:01").contains("Booting live"));

    let rearm = format!("http://{}/admin/rearm/{INSTALL1}", d.admin);
    let admin_token = std::fs::read_to_string(d.state.path().join("admin.token")).unwrap();
    assert_eq!(http("POST", &rearm, &[]).0, 401);
    assert_eq!(http("POST", &rearm, &["-H", "Authorization: Bearer not-the-token"]).0, 403);
    assert_eq!(http("GET", &rearm, &["-H", &format!("Authorization: Bearer {}", admin_token.trim())]).0, 405);
    assert!(script(&d, INSTALL1).contains("sanboot"), "refused calls change nothing");
    let (status, body) = http("POST", &rearm, &["-H", &format!("Authorization: Bearer {}", admin_token.trim())]);
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"mac\":\"52:54:00:00:00:0a\",\"rearmed\":true,\"was_installed\":true}\n")
    );
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    // Artifacts are never served on the admin port.
    assert_eq!(http("GET", &format!("http://{}/boot.ipxe", d.admin), &[]).0, 404);
    d.stop().await;
}

/// The signed GRUB of the shim chain asks for `/grub/grub.cfg` with nothing of the machine in
/// the name: the machine behind the source address (learned from its iPXE script request here)
/// gets its profile, and once installed the disk's own loader.
#[tokio::test(flavor = "multi_thread")]
async fn the_signed_grubs_config_boots_the_disk_once_installed() {
    let d = Daemon::start(|_| {}).await;
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    let (status, grub) = http("GET", &d.url("/grub/grub.cfg"), &[]);
    assert_eq!(status, 200, "{grub}");
    assert!(grub.contains("linux /artifacts/installer/"), "{grub}");
    assert_eq!(post_installed(&d, INSTALL1).0, 200);
    let (status, grub) = http("GET", &d.url("/grub/grub.cfg"), &[]);
    assert_eq!(status, 200, "{grub}");
    assert!(grub.contains("chainloader /EFI/BOOT/BOOTX64.EFI") && !grub.contains("linux "), "{grub}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rearm_command_reaches_a_running_daemon() {
    let d = Daemon::start(|_| {}).await;
    assert_eq!(post_installed(&d, INSTALL1).0, 200);
    assert!(script(&d, INSTALL1).contains("sanboot"));
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["rearm", "--state"])
        .arg(d.state.path())
        .arg("52-54-00-00-00-0a")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("52:54:00:00:00:0a: re-armed (it reported installed "), "{stdout}");
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    // The daemon's next write keeps the command's change.
    assert_eq!(post_installed(&d, "52:54:00:00:00:01").0, 200);
    assert!(installs(&d).contains("\"rearmed\": \"command\""), "{}", installs(&d));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn install_state_and_tokens_survive_a_kill_and_restart() {
    let d = Daemon::start(|_| {}).await;
    let before = token(&d, INSTALL1);
    assert_eq!(post_installed(&d, INSTALL1).0, 200);
    let d = d.kill_and_restart().await;
    assert!(script(&d, INSTALL1).contains("sanboot"), "still local after the restart");
    assert_eq!(token(&d, INSTALL1), before);
    let (_, answer) = http("GET", &d.url(&format!("/answers/{INSTALL1}/user-data")), &[]);
    assert!(answer.contains(&before));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_entry_rearms_and_a_revert_does_not_bring_the_record_back() {
    let d = Daemon::start(|_| {}).await;
    assert_eq!(post_installed(&d, INSTALL1).0, 200);
    assert!(script(&d, INSTALL1).contains("sanboot"));
    let entry = "hostname: install1, arch: x86_64";
    edit_and_reload(&d, "machines.yaml", |t| t.replace(entry, "hostname: install2, arch: x86_64")).await;
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    assert!(installs(&d).contains("\"rearmed\": \"config\""), "{}", installs(&d));
    edit_and_reload(&d, "machines.yaml", |t| t.replace("hostname: install2, arch: x86_64", entry)).await;
    assert!(script(&d, INSTALL1).contains("Booting installer"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_template_is_refused_at_reload_and_a_failing_render_is_a_500() {
    let log = log_lines();
    let d = Daemon::start(|_| {}).await;
    let url = d.url(&format!("/answers/{INSTALL1}/meta-data"));
    let (_, before) = http("GET", &url, &[]);
    edit_and_reload(&d, "templates/meta-data.j2", |t| format!("{t}broken: {{{{ machine.hostname\n")).await;
    assert_eq!(http("GET", &url, &[]), (200, before), "the last good config keeps serving");

    // Valid for every machine `check` knows of, failing for one it cannot: an unknown machine
    // of unknown architecture on a profile built for two.
    edit_and_reload(&d, "templates/meta-data.j2", |_| "instance-id: {{ machine.mac }}\n".into()).await;
    std::fs::write(d.config.path().join("templates/arch.j2"), "arch: {{ arch }}\n").unwrap();
    edit_and_reload(&d, "live.yaml", |t| format!("{t}answers: {{ arch: templates/arch.j2 }}\n")).await;
    edit_and_reload(&d, "machines.yaml", |t| {
        t.replace("unknown: { action: menu, menu: default }", "unknown: { profile: live }")
    })
    .await;
    assert_eq!(http("GET", &d.url("/answers/52:54:00:00:00:05/arch"), &[]), (200, "arch: arm64\n".to_string()));
    let (status, body) = http("GET", &d.url("/answers/52:54:00:99:00:09/arch"), &[]);
    assert_eq!((status, body.as_str()), (500, "internal error (see the appliance log)\n"));
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("answer arch for 52:54:00:99:00:09: ") && log.contains("undefined value"), "{log}");
    d.stop().await;
}
