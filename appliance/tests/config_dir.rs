//! Loading a config directory from disk: artifact paths stay inside it (also through
//! symlinks), a missing artifact file is named, and every shipped profile file validates. The
//! validation's own errors are the core's tests (`core/tests/config_errors.rs`).

use appliance::config_dir;
use appliance_core::arch::Arch;
use appliance_core::config::ConfigError;
use std::path::Path;

const SETTINGS: &str = "server: { address: 10.0.0.1 }\ndhcp: { mode: proxy }\n";

/// Writes a config dir with one profile whose kernel is `files/k`, made by `make_kernel`.
fn errors(profile: &str, make_kernel: impl FnOnce(&Path)) -> Vec<ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("appliance.yaml"), SETTINGS).unwrap();
    std::fs::write(dir.path().join("live.yaml"), profile).unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    make_kernel(&dir.path().join("files/k"));
    match config_dir::load(dir.path(), None) {
        Ok(_) => vec![],
        Err(e) => e.0,
    }
}

fn check(errs: &[ConfigError], want: &str) {
    let listing: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(listing.iter().any(|l| l.contains(want)), "wanted ..{want}..\ngot:\n{}", listing.join("\n"));
}

const PROFILE: &str = "name: live\narch:\n  x86_64:\n    kernel: { path: files/k }\n";

#[test]
fn a_plain_file_loads() {
    assert_eq!(errors(PROFILE, |k| std::fs::write(k, "kernel").unwrap()), vec![]);
}

#[test]
fn symlink_out_of_the_config_dir_is_refused() {
    let e = errors(PROFILE, |k| std::os::unix::fs::symlink("/etc/hostname", k).unwrap());
    check(
        &e,
        "live.yaml:4:15: arch.x86_64.kernel.path: artifact file \"files/k\": resolves outside the config directory",
    );
}

#[test]
fn missing_artifact_file_is_named() {
    let e = errors(PROFILE, |_| {});
    check(&e, "live.yaml:4:15: arch.x86_64.kernel.path: artifact file \"files/k\": not found in");
}

#[test]
fn every_shipped_profile_file_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let c = config_dir::load(&root, None).unwrap_or_else(|e| panic!("profiles/ does not validate:\n{e}"));
    assert!(c.profile("tiny-live").is_some());
    for p in c.profiles() {
        // The live systems boot on both; the deploy profile's demo disk is an x86 disk.
        let arm64 = p.name != "deploy";
        assert!(p.arches.contains_key(&Arch::X86_64) && p.arches.contains_key(&Arch::Arm64) == arm64, "{}", p.name);
    }
    // And every YAML file in it was read (a stray file would be taken for a profile and fail).
    let yaml = std::fs::read_dir(&root)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert_eq!(yaml, 3 + c.profiles().len());
}

#[test]
fn text_that_is_not_utf8_is_reported_at_its_byte() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("appliance.yaml"), SETTINGS).unwrap();
    std::fs::write(dir.path().join("live.yaml"), b"name: live\narch:\n  x86_64: \xe9t\xe9\n").unwrap();
    std::fs::write(dir.path().join("menus.yaml"), b"\xff").unwrap();
    let e = config_dir::load(dir.path(), None).unwrap_err().0;
    check(&e, "live.yaml:3:11: (document): not UTF-8 text: byte 0xe9 at offset 27");
    // Every file's error, not only the first one read.
    check(&e, "menus.yaml:1:1: (document): not UTF-8 text: byte 0xff at offset 0");
}
