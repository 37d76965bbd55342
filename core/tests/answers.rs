//! Answer files (rendering, JSON and cloud-config checks, `check`'s per-machine rendering with
//! positioned errors) and the install state in `decide` (boot-once: installed → local until
//! re-armed). Golden files: `UPDATE_EXPECT=1 cargo test -p appliance-core --test answers`.

mod common;

use appliance_core::answers::{self, AnswerError};
use appliance_core::catalog::Catalog;
use appliance_core::client::{Client, Learned};
use appliance_core::config::ConfigError;
use appliance_core::decide::{decide, Outcome, Rule, Stage, Transport};
use appliance_core::events::{EventKind, Report};
use appliance_core::explain::{explain, render_all, Query};
use appliance_core::install::{entry_digest, InstallLog, Installed, RearmedBy};
use appliance_core::render::{self, Format, ServerInfo};
use common::*;
use expect_test::expect_file;

const INSTALL1: &str = "52:54:00:00:00:0a";

fn server() -> ServerInfo {
    ServerInfo::from_catalog(&catalog())
}

fn x86(m: &str) -> Client {
    let mut c = Client::new(appliance_core::arch::Firmware::Ipxe { efi: true }).with_mac(mac(m), Learned::HttpQuery);
    c.arch_hint = Some((appliance_core::arch::Arch::X86_64, Learned::HttpQuery));
    c
}

fn answer(c: &Catalog, m: &str, name: &str) -> Result<answers::Rendered, AnswerError> {
    let d = decide(c, &x86(m), Stage::IpxeScript);
    let profile = c.profile("installer").unwrap();
    answers::render(c, profile, name, d.arch, &d.machine, &server(), true)
}

#[test]
fn answers_render_per_machine_with_their_token_and_image() {
    let c = catalog();
    let user_data = answer(&c, INSTALL1, "user-data").unwrap();
    assert_eq!(user_data.content_type, "text/cloud-config; charset=utf-8");
    let token = server().tokens.token(mac(INSTALL1));
    assert!(user_data.text.contains(&format!("Authorization: Bearer {token}")), "{}", user_data.text);
    expect_file!["data/golden/answer_user_data"].assert_eq(&user_data.text);
    let meta = answer(&c, INSTALL1, "meta-data").unwrap();
    assert_eq!(meta.content_type, "text/plain; charset=utf-8");
    expect_file!["data/golden/answer_meta_data"].assert_eq(&meta.text);
    let ignition = answer(&c, INSTALL1, "ignition").unwrap();
    assert_eq!(ignition.content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&ignition.text).unwrap();
    assert_eq!(json["storage"]["files"][0]["contents"]["source"], "data:,install1");
    expect_file!["data/golden/answer_ignition.ign"].assert_eq(&ignition.text);
    assert!(matches!(answer(&c, INSTALL1, "ks"), Err(AnswerError::NoSuchAnswer { .. })));
}

#[test]
fn the_command_line_sees_answers_token_and_image() {
    let c = catalog();
    let d = decide(&c, &x86(INSTALL1), Stage::IpxeScript);
    let script = render::render(&c, &d, &server(), Format::Ipxe).unwrap().unwrap();
    let (_, set) = c.profile_set("installer", appliance_core::arch::Arch::X86_64).unwrap();
    let want = format!(
        "answers=http://10.0.0.1:8080/answers/52-54-00-00-00-0a/user-data image=http://10.0.0.1:8080/artifacts/installer/{v}/disk.img sha256={sha} token={token}",
        v = set.version,
        sha = hex::encode(set.image.as_ref().unwrap().digest),
        token = server().tokens.token(mac(INSTALL1)),
    );
    assert!(script.contains(&want), "{script}");
    expect_file!["data/golden/ipxe_installer.ipxe"].assert_eq(&script);
}

#[test]
fn the_image_is_part_of_the_version() {
    let files = |image: &str| {
        let profile = "name: p\narch:\n  x86_64:\n    kernel: { path: k }\n    image: { path: img }\n";
        let settings = "server: { address: 10.0.0.1 }\ndhcp: { mode: off }\n";
        validate_files(&[("appliance.yaml", settings), ("p.yaml", profile), ("k", "kernel"), ("img", image)]).unwrap()
    };
    let version = |c: &Catalog| c.profile_set("p", appliance_core::arch::Arch::X86_64).unwrap().1.version.clone();
    assert_ne!(version(&files("disk one")), version(&files("disk two")));
}

// --- check: every template rendered for every machine, errors at their position ------------

const SETTINGS: &str = "server: { address: 10.0.0.1 }\ndhcp: { mode: off }\n";

fn profile(answers: &str) -> String {
    format!("name: inst\ncmdline: \"a={{{{ answers.a }}}}\"\nanswers: {answers}\narch:\n  x86_64:\n    kernel: {{ path: k }}\n")
}

fn check_errors(answers: &str, templates: &[(&str, &str)], machines: &str) -> Vec<ConfigError> {
    let profile = profile(answers);
    let mut files = vec![
        ("appliance.yaml", SETTINGS),
        ("inst.yaml", profile.as_str()),
        ("k", "kernel"),
        ("machines.yaml", machines),
    ];
    files.extend_from_slice(templates);
    match validate_files(&files) {
        Ok(_) => vec![],
        Err(e) => e.0,
    }
}

fn lines(errs: &[ConfigError]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

const TWO_MACHINES: &str = "machines:\n  \"52:54:00:00:00:01\": { hostname: a1, profile: inst, vars: { disk: sda } }\n  \"52:54:00:00:00:02\": { hostname: a2, profile: inst }\n  \"52:54:00:00:00:03\": { hostname: a3, profile: inst }\nunknown: { profile: inst }\n";

#[test]
fn a_valid_answer_set_checks_clean() {
    let t = "#cloud-config\ndisk: {{ machine.vars.disk | default('vda') }}\nurl: {{ answers.a }}\n";
    assert_eq!(lines(&check_errors("{ a: t/a.j2 }", &[("t/a.j2", t)], TWO_MACHINES)), Vec::<String>::new());
}

#[test]
fn a_syntax_error_is_positioned_in_the_template() {
    let e = check_errors("{ a: t/a.j2 }", &[("t/a.j2", "line one\nline {{ two\n")], TWO_MACHINES);
    let l = lines(&e);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].starts_with("/config/t/a.j2:2:"), "{l:?}");
    assert!(l[0].contains(": answers.a: syntax error"), "{l:?}");
}

#[test]
fn an_undefined_value_is_reported_once_for_every_machine_it_fails_for() {
    let t = "#!/bin/sh\n# for {{ machine.hostname }}\nDISK={{ machine.vars.disk }}\n";
    let e = check_errors("{ a: t/a.j2 }", &[("t/a.j2", t)], TWO_MACHINES);
    let l = lines(&e);
    // a1 has the variable; a2, a3 and the sample unknown machine do not.
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(
        l[0],
        "/config/t/a.j2:3:16: answers.a: for machine 52:54:00:00:00:02 (a2) on x86_64 (and for 2 more): undefined value"
    );
}

#[test]
fn the_unknown_machine_sample_is_checked() {
    let t = "{{ machine.vars.disk }}\n";
    let machines = "machines:\n  \"52:54:00:00:00:01\": { hostname: a1, profile: inst, vars: { disk: sda } }\nunknown: { profile: inst }\n";
    let l = lines(&check_errors("{ a: t/a.j2 }", &[("t/a.j2", t)], machines));
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].contains("for an unknown machine (00:00:5e:00:53:01) on x86_64: undefined value"), "{l:?}");
}

#[test]
fn a_profile_no_machine_is_sent_to_is_checked_too() {
    let l = lines(&check_errors("{ a: t/a.j2 }", &[("t/a.j2", "{{ nope }}\n")], "unknown: { action: ignore }\n"));
    assert_eq!(
        l,
        ["/config/t/a.j2:1:4: answers.a: for an unknown machine (00:00:5e:00:53:01) sent to it on x86_64: undefined value"]
    );
}

#[test]
fn json_and_cloud_config_must_parse_after_rendering() {
    let json = "{ \"host\": {{ machine.hostname }} }\n";
    let yaml = "#cloud-config\nhostname: {{ machine.hostname }}\n  bad: [indent\n";
    let e = check_errors(
        "{ a: t/a.ign.j2, b: t/b.j2 }",
        &[("t/a.ign.j2", json), ("t/b.j2", yaml)],
        "machines:\n  \"52:54:00:00:00:01\": { hostname: a1, profile: inst }\n",
    );
    let l = lines(&e);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[0].starts_with(
            "/config/t/a.ign.j2:1:1: answers.a: for machine 52:54:00:00:00:01 (a1) on x86_64: renders invalid JSON"
        ),
        "{l:?}"
    );
    assert!(l[1].starts_with("/config/t/b.j2:1:1: answers.b: for machine 52:54:00:00:00:01 (a1) on x86_64: renders a #cloud-config that is not a YAML mapping"), "{l:?}");
}

#[test]
fn the_command_line_is_checked_for_every_machine_too() {
    let profile = "name: inst\ncmdline: \"disk={{ machine.vars.disk }}\"\narch:\n  x86_64:\n    kernel: { path: k }\n";
    let e = validate_files(&[
        ("appliance.yaml", SETTINGS),
        ("inst.yaml", profile),
        ("k", "kernel"),
        ("machines.yaml", TWO_MACHINES),
    ])
    .unwrap_err();
    let l = lines(&e.0);
    assert_eq!(l, ["/config/inst.yaml:2:1: cmdline: for machine 52:54:00:00:00:02 (a2) on x86_64 (and for 2 more): undefined value"]);
}

#[test]
fn bad_answer_declarations() {
    let e = check_errors("{ \"a b\": t/a.j2, c: ../x.j2, d: t/missing.j2 }", &[("t/a.j2", "x")], "machines: {}\n");
    let l = lines(&e);
    assert!(
        l.iter().any(|l| l.starts_with("/config/inst.yaml:3:") && l.contains("\"a b\" is not a valid answer name")),
        "{l:?}"
    );
    assert!(
        l.iter().any(|l| l.contains("answers.c: \"../x.j2\" must be a relative path inside the config directory")),
        "{l:?}"
    );
    assert!(l.iter().any(|l| l.contains("answers.d: answer template \"t/missing.j2\": not found")), "{l:?}");
}

#[test]
fn an_image_must_be_a_file() {
    let profile = "name: p\narch:\n  x86_64:\n    kernel: { path: k }\n    image: { cpio: [ { dest: x, path: k } ] }\n";
    let e = validate_files(&[("appliance.yaml", SETTINGS), ("p.yaml", profile), ("k", "kernel")]).unwrap_err();
    let l = lines(&e.0);
    assert_eq!(
        l,
        ["/config/p.yaml:5:5: arch.x86_64.image: an image is a file (`path`, `deb` or `url`), not a `cpio` recipe"]
    );
}

// --- boot-once: decide with the install state ---------------------------------------------

fn installed_at(c: &Catalog, m: &str, at: u64) -> Installed {
    Installed { at, entry: entry_digest(c.machine(mac(m))) }
}

#[test]
fn an_installed_machine_boots_local_until_rearmed() {
    let c = catalog();
    let mut client = x86(INSTALL1);
    let fresh = decide(&c, &client, Stage::IpxeScript);
    assert!(matches!(fresh.outcome, Outcome::Boot { ref profile, .. } if profile == "installer"), "{fresh:?}");
    client.installed = Some(installed_at(&c, INSTALL1, 1_780_000_000));
    let d = decide(&c, &client, Stage::IpxeScript);
    assert_eq!(d.outcome, Outcome::Local);
    assert_eq!(
        d.target_rule.to_string(),
        "installed 2026-05-28 20:26:40 UTC; booting local until re-armed (after_install: local by MAC database entry 52:54:00:00:00:0a)"
    );
    assert!(matches!(d.target_rule, Rule::Installed { at: 1_780_000_000, .. }));
    // Every config format says local; the DHCP stage still hands out the boot program.
    let script = render::render(&c, &d, &server(), Format::Ipxe).unwrap().unwrap();
    assert!(script.contains("sanboot --no-describe --drive 0x80") && script.contains("exit 1"), "{script}");
    assert!(script.contains("# decided by: target: installed 2026-05-28"), "{script}");
    expect_file!["data/golden/ipxe_installed_local.ipxe"].assert_eq(&script);
    let mut grub = client.clone();
    grub.firmware = appliance_core::arch::Firmware::Grub;
    let g = render::render(&c, &decide(&c, &grub, Stage::Grub), &server(), Format::Grub).unwrap().unwrap();
    assert!(g.ends_with("exit\n"), "{g}");
    let p = render::render(&c, &decide(&c, &client, Stage::Pxelinux), &server(), Format::Pxelinux).unwrap().unwrap();
    assert!(p.contains("localboot 0"), "{p}");
    let mut dhcp = ipxe_efi(INSTALL1);
    dhcp.installed = client.installed.clone();
    assert_eq!(decide(&c, &dhcp, Stage::Dhcp).outcome, Outcome::IpxeScript);
}

#[test]
fn a_changed_entry_rearms_the_machine() {
    let c = catalog();
    let mut client = x86(INSTALL1);
    // Installed under another entry (say, before the operator changed its hostname).
    client.installed = Some(Installed { at: 5, entry: [1; 32] });
    assert!(matches!(decide(&c, &client, Stage::IpxeScript).outcome, Outcome::Boot { .. }));
    // The daemon removes such records when it loads a config.
    let mut log = InstallLog::new();
    let r = |kind| Report { kind, message: None, token: None };
    log.record(mac(INSTALL1), &r(EventKind::Installed), 5, [1; 32]);
    log.record(
        mac("52:54:00:00:00:01"),
        &r(EventKind::Installed),
        6,
        entry_digest(c.machine(mac("52:54:00:00:00:01"))),
    );
    assert_eq!(log.rearm_changed(&c, 7), [mac(INSTALL1)]);
    assert!(log.installed(mac(INSTALL1)).is_none());
    assert!(log.installed(mac("52:54:00:00:00:01")).is_some());
}

#[test]
fn without_after_install_local_an_installed_machine_netboots() {
    let c = catalog();
    // bios1 has no after_install, nor has its vendor or the unknown policy.
    assert!(matches!(decide_installed(&c, "52:54:00:00:00:01").outcome, Outcome::Boot { .. }));
}

/// A config of one x86_64 profile `p` and the MAC database `machines`.
fn one_profile(machines: &str) -> Catalog {
    let profile = "name: p\narch:\n  x86_64:\n    kernel: { path: k }\n";
    validate_files(&[("appliance.yaml", SETTINGS), ("p.yaml", profile), ("k", "kernel"), ("machines.yaml", machines)])
        .unwrap()
}

/// The iPXE script stage's decision for `m`, installed under its entry in force.
fn decide_installed(c: &Catalog, m: &str) -> appliance_core::decide::Decision {
    let mut client = x86(m);
    client.installed = Some(installed_at(c, m, 9));
    decide(c, &client, Stage::IpxeScript)
}

#[test]
fn vendor_rules_and_the_unknown_policy_can_say_after_install() {
    let c = one_profile("vendors:\n  - { oui: \"02:00:00\", profile: p, after_install: local }\nunknown: { profile: p, after_install: local }\nmachines:\n  \"02:00:00:00:00:09\": { hostname: own, after_install: netboot }\n");
    for (m, local, by) in [
        ("02:00:00:00:00:01", true, "vendor rule 02:00:00"),
        ("52:54:00:99:00:01", true, "unknown-machine policy"),
        // Its own entry says netboot, over its vendor's rule.
        ("02:00:00:00:00:09", false, ""),
    ] {
        let d = decide_installed(&c, m);
        assert_eq!(d.outcome == Outcome::Local, local, "{m}: {d:?}");
        assert!(d.target_rule.to_string().contains(by), "{m}: {}", d.target_rule);
    }
}

/// A UEFI machine on the shim chain keeps getting shim at the DHCP stage (Secure Boot needs the
/// signed chain whatever comes next); once installed, the signed GRUB's config boots the disk.
#[test]
fn an_installed_machine_on_the_shim_chain_gets_grub_to_boot_the_disk() {
    let m = "52:54:00:00:00:01";
    let c = one_profile(&format!(
        "machines:\n  \"{m}\": {{ profile: p, arch: x86_64, uefi_chain: shim, after_install: local }}\n"
    ));
    let mut dhcp = ovmf_pxe(m);
    dhcp.installed = Some(installed_at(&c, m, 9));
    let file = appliance_core::boot_file::BootFile::ShimX64;
    assert_eq!(decide(&c, &dhcp, Stage::Dhcp).outcome, Outcome::BootFile { file, transport: Transport::Tftp });
    let mut grub = x86(m);
    grub.firmware = appliance_core::arch::Firmware::Grub;
    let fresh = decide(&c, &grub, Stage::Grub);
    assert!(matches!(fresh.outcome, Outcome::Boot { .. }), "{fresh:?}");
    grub.installed = dhcp.installed.clone();
    let d = decide(&c, &grub, Stage::Grub);
    assert_eq!(d.outcome, Outcome::Local);
    let text = render::render(&c, &d, &server(), Format::Grub).unwrap().unwrap();
    // The disk's own loader, chained (a GRUB `exit` alone would stop OVMF at its menu), and
    // `exit` when no disk has one.
    assert!(text.contains("chainloader /EFI/BOOT/BOOTX64.EFI\n") && text.ends_with("fi\nexit\n"), "{text}");
    assert!(!text.contains("linux"), "{text}");
}

#[test]
fn an_ignored_machine_stays_ignored_when_installed() {
    let c = one_profile("machines:\n  \"52:54:00:00:00:01\": { action: ignore, after_install: local }\n");
    assert!(matches!(decide_installed(&c, "52:54:00:00:00:01").outcome, Outcome::Ignore { .. }));
}

#[test]
fn explain_shows_install_state_history_and_answers() {
    let c = catalog();
    let mut log = InstallLog::new();
    let digest = entry_digest(c.machine(mac(INSTALL1)));
    let r = |kind, message: &str| Report { kind, message: Some(message.into()), token: None };
    log.record(mac(INSTALL1), &r(EventKind::Started, "started"), 1_780_000_000, digest);
    log.record(mac(INSTALL1), &r(EventKind::Installed, "disk written"), 1_780_000_100, digest);
    let q = |install| Query {
        mac: Some(mac(INSTALL1)),
        client_arch: Some(7),
        vendor_class: Some("PXEClient:Arch:00007:UNDI:003010".into()),
        user_class: Some("iPXE".into()),
        install,
        ..Query::default()
    };
    let text = explain(&c, &q(log.machine(mac(INSTALL1)).cloned())).unwrap();
    assert!(text.contains("hands out:    boot from local disk"), "{text}");
    assert!(text.contains("  after install: local (by MAC database entry 52:54:00:00:00:0a)"), "{text}");
    assert!(
        text.contains("  state:         installed 2026-05-28 20:28:20 UTC; booting local until re-armed"),
        "{text}"
    );
    assert!(text.contains("    2026-05-28 20:26:40 UTC  started: started"), "{text}");
    log.rearm(mac(INSTALL1), 1_780_000_200, RearmedBy::Admin);
    let text = explain(&c, &q(log.machine(mac(INSTALL1)).cloned())).unwrap();
    assert!(text.contains("hands out:    profile installer"), "{text}");
    assert!(text.contains("  state:         not installed"), "{text}");
    assert!(text.contains("re-armed through the admin API"), "{text}");
    assert!(text.contains("--- answer user-data (http://10.0.0.1:8080/answers/52-54-00-00-00-0a/user-data, text/cloud-config; charset=utf-8) ---\n#cloud-config\n"), "{text}");
    let text = explain(&c, &q(None)).unwrap();
    assert!(text.contains("state:         unknown (give --state DIR"), "{text}");
}

#[test]
fn render_writes_the_answers_of_every_machine() {
    let files = render_all(&catalog()).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).filter(|p| p.starts_with("http/answers/")).collect();
    assert_eq!(
        names,
        [
            "http/answers/52-54-00-00-00-0a/ignition",
            "http/answers/52-54-00-00-00-0a/meta-data",
            "http/answers/52-54-00-00-00-0a/user-data"
        ]
    );
}
