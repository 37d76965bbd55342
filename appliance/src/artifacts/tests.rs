//! Publishing, garbage collection and `open` against real temporary directories. `Fixture` is
//! shared with the HTTP tests.

use super::*;
use appliance_core::arch::Arch;
use appliance_core::catalog::Catalog;
use appliance_core::gc::Verdict;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub(crate) const KNOWN_MAC: &str = "52:54:00:12:34:56";
pub(crate) const BUSYBOX: &[u8] = b"not really busybox\n";
pub(crate) const ARM_IMAGE: &[u8] = b"arm64 kernel Image\n";

/// A config directory with two profiles, a blob cache and an empty store, in a temporary
/// directory that goes away with the fixture.
pub(crate) struct Fixture {
    _tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub store: PathBuf,
    pub blobs: PathBuf,
}

pub(crate) fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Fixture {
    /// `live`: x86_64 (a local kernel and a gzipped cpio initrd built from a local `init` and a
    /// Debian busybox) and arm64 (a kernel from a URL); `rescue`: x86_64 with a local kernel.
    /// The MAC database knows `KNOWN_MAC` (→ `live`); unknown machines get the menu.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let f =
            Fixture { config: root.join("config"), store: root.join("store"), blobs: root.join("blobs"), _tmp: tmp };
        for d in [&f.config, &f.store, &f.blobs] {
            fs::create_dir_all(d).unwrap();
        }
        f.write("appliance.yaml", b"server: { address: 127.0.0.1, http_port: 8080 }\ndhcp: { mode: proxy }\n");
        let machines = format!(
            "machines:\n  \"{KNOWN_MAC}\": {{ hostname: node1, arch: x86_64, profile: live }}\n\
             unknown: {{ action: menu, menu: default }}\n"
        );
        f.write("machines.yaml", machines.as_bytes());
        f.write(
            "menus.yaml",
            b"menus:\n  default:\n    title: Test boot\n    entries:\n      - profile: live\n      - profile: rescue\n      - action: local\n",
        );
        let live = format!(
            r#"name: live
description: Live system
cmdline: "console=ttyS0 hostname={{{{ machine.hostname }}}}"
arch:
  x86_64:
    kernel: {{ name: vmlinuz, path: files/vmlinuz }}
    initrd:
      - name: initrd.img
        gzip: true
        cpio:
          - {{ dest: init, path: files/init, mode: "0755" }}
          - {{ dest: bin/busybox, deb: busybox-static, file: bin/busybox, mode: "0755", sha256: {busybox} }}
          - {{ dest: bin/sh, symlink: busybox }}
  arm64:
    kernel: {{ name: Image, url: "http://example.invalid/Image", sha256: {image} }}
"#,
            busybox = sha_hex(BUSYBOX),
            image = sha_hex(ARM_IMAGE),
        );
        f.write("live.yaml", live.as_bytes());
        f.write(
            "rescue.yaml",
            b"name: rescue\ncmdline: console=ttyS0\narch:\n  x86_64:\n    kernel: { name: vmlinuz, path: files/rescue-vmlinuz }\n",
        );
        f.write("files/vmlinuz", b"x86_64 kernel, first edition\n");
        f.write("files/init", b"#!/bin/sh\nexec sh\n");
        f.write("files/rescue-vmlinuz", b"rescue kernel\n");
        f.add_blob(BUSYBOX);
        f.add_blob(ARM_IMAGE);
        f
    }

    /// Writes a file of the config directory (creating its parents).
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.config.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    pub fn add_blob(&self, bytes: &[u8]) {
        fs::write(self.blobs.join(sha_hex(bytes)), bytes).unwrap();
    }

    pub fn catalog(&self) -> Catalog {
        crate::config_dir::load(&self.config, None).unwrap_or_else(|e| panic!("test config does not load: {e:?}"))
    }

    pub fn publish(&self, catalog: &Catalog) -> Result<PublishReport, PublishError> {
        publish(catalog, &self.store, &self.blobs)
    }
}

pub(crate) fn version_of(catalog: &Catalog, profile: &str, arch: Arch) -> String {
    catalog.profile_set(profile, arch).unwrap().1.version.clone()
}

fn names(sets: &[PublishedSet]) -> Vec<String> {
    sets.iter().map(|s| format!("{}/{}", s.profile, s.arch)).collect()
}

/// Directory names directly in the store (to spot leftovers).
fn store_entries(store: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(store).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn publish_creates_version_dirs_and_a_second_publish_is_a_noop() {
    let f = Fixture::new();
    let cat = f.catalog();
    let report = f.publish(&cat).unwrap();
    assert_eq!(names(&report.published), ["live/x86_64", "live/arm64", "rescue/x86_64"]);
    assert!(report.existing.is_empty());

    let live = f.store.join("live").join(version_of(&cat, "live", Arch::X86_64));
    assert_eq!(fs::read(live.join("vmlinuz")).unwrap(), b"x86_64 kernel, first edition\n");
    let initrd = fs::read(live.join("initrd.img")).unwrap();
    assert_eq!(initrd[..2], [0x1f, 0x8b], "gzip magic");
    let arm = f.store.join("live").join(version_of(&cat, "live", Arch::Arm64));
    assert_eq!(fs::read(arm.join("Image")).unwrap(), ARM_IMAGE);

    let before = fs::metadata(live.join("vmlinuz")).unwrap().modified().unwrap();
    let again = f.publish(&cat).unwrap();
    assert!(again.published.is_empty());
    assert_eq!(names(&again.existing), ["live/x86_64", "live/arm64", "rescue/x86_64"]);
    assert_eq!(fs::metadata(live.join("vmlinuz")).unwrap().modified().unwrap(), before);
    assert_eq!(store_entries(&f.store), ["live", "rescue"], "no temporary directory left");
}

#[test]
fn cpio_initrd_is_reproducible_and_holds_its_entries() {
    let f = Fixture::new();
    let cat = f.catalog();
    f.publish(&cat).unwrap();
    let path = f.store.join("live").join(version_of(&cat, "live", Arch::X86_64)).join("initrd.img");
    let gz = fs::read(path).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("bin/busybox") && text.contains("not really busybox") && text.contains("exec sh"));

    // The same recipe in another store gives the same bytes.
    let other = tempfile::tempdir().unwrap();
    publish(&cat, other.path(), &f.blobs).unwrap();
    let again = fs::read(other.path().join("live").join(version_of(&cat, "live", Arch::X86_64)).join("initrd.img"));
    assert_eq!(again.unwrap(), gz);
}

#[test]
fn changed_profile_gets_a_new_version_and_the_old_one_is_untouched() {
    let f = Fixture::new();
    let old = f.catalog();
    f.publish(&old).unwrap();
    let v1 = version_of(&old, "live", Arch::X86_64);

    f.write("files/vmlinuz", b"x86_64 kernel, second edition\n");
    let new = f.catalog();
    let v2 = version_of(&new, "live", Arch::X86_64);
    assert_ne!(v1, v2);
    let report = f.publish(&new).unwrap();
    assert_eq!(names(&report.published), ["live/x86_64"]);
    assert_eq!(names(&report.existing), ["live/arm64", "rescue/x86_64"]);
    let read = |v: &str| fs::read(f.store.join("live").join(v).join("vmlinuz")).unwrap();
    assert_eq!(read(&v1), b"x86_64 kernel, first edition\n");
    assert_eq!(read(&v2), b"x86_64 kernel, second edition\n");
}

#[test]
fn checksum_mismatch_names_profile_artifact_and_digests() {
    let f = Fixture::new();
    let cat = f.catalog();
    // The file changed after the catalog was validated.
    f.write("files/vmlinuz", b"tampered\n");
    let err = f.publish(&cat).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, PublishError::Artifact { profile, artifact, problem, .. }
            if profile == "live" && artifact == "vmlinuz" && matches!(**problem, ArtifactProblem::Checksum { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&sha_hex(b"tampered\n")) && msg.contains(&sha_hex(b"x86_64 kernel, first edition\n")),
        "{msg}"
    );
    assert!(store_entries(&f.store).iter().all(|e| !e.starts_with('.')), "temporary directory removed");
    assert!(!f.store.join("live").join(version_of(&cat, "live", Arch::X86_64)).exists());
}

#[test]
fn corrupt_blob_is_a_checksum_error() {
    let f = Fixture::new();
    let cat = f.catalog();
    fs::write(f.blobs.join(sha_hex(ARM_IMAGE)), b"truncated").unwrap();
    let msg = f.publish(&cat).unwrap_err().to_string();
    assert!(msg.contains("profile live (arm64), artifact Image: sha256 mismatch"), "{msg}");
    // At the line of the profile that pins the digest.
    let origin = &cat.profile_set("live", Arch::Arm64).unwrap().1.kernel.origin;
    assert!(origin.file.ends_with("live.yaml") && origin.line > 1, "{origin}");
    assert!(msg.starts_with(&format!("{origin}: profile live")), "{msg}");
}

#[test]
fn missing_blob_names_the_artifact_and_the_fetch_command() {
    let f = Fixture::new();
    let cat = f.catalog();
    fs::remove_file(f.blobs.join(sha_hex(ARM_IMAGE))).unwrap();
    let msg = f.publish(&cat).unwrap_err().to_string();
    assert!(msg.contains("profile live (arm64), artifact Image"), "{msg}");
    assert!(msg.contains("http://example.invalid/Image") && msg.contains("cargo xtask fetch"), "{msg}");
}

#[test]
fn missing_blob_of_a_cpio_entry_names_the_entry() {
    let f = Fixture::new();
    let cat = f.catalog();
    fs::remove_file(f.blobs.join(sha_hex(BUSYBOX))).unwrap();
    let msg = f.publish(&cat).unwrap_err().to_string();
    assert!(msg.contains("artifact initrd.img: cpio entry bin/busybox"), "{msg}");
    assert!(msg.contains("busybox-static") && msg.contains("cargo xtask fetch"), "{msg}");
}

#[test]
fn symlink_out_of_the_config_dir_is_refused() {
    let f = Fixture::new();
    let cat = f.catalog();
    let outside = tempfile::NamedTempFile::new().unwrap();
    fs::write(outside.path(), b"x86_64 kernel, first edition\n").unwrap();
    fs::remove_file(f.config.join("files/vmlinuz")).unwrap();
    std::os::unix::fs::symlink(outside.path(), f.config.join("files/vmlinuz")).unwrap();
    let msg = f.publish(&cat).unwrap_err().to_string();
    assert!(msg.contains("artifact vmlinuz") && msg.contains("outside the config directory"), "{msg}");
}

#[test]
fn gc_removes_an_unreferenced_version_only_after_the_grace_period() {
    let f = Fixture::new();
    let old = f.catalog();
    f.publish(&old).unwrap();
    let v1 = version_of(&old, "live", Arch::X86_64);
    f.write("files/vmlinuz", b"x86_64 kernel, second edition\n");
    let new = f.catalog();
    f.publish(&new).unwrap();
    let v2 = version_of(&new, "live", Arch::X86_64);

    let grace = Duration::from_secs(600);
    let never = |_: &str, _: &str| None;
    let now = SystemTime::now();
    let report = gc(&new, &f.store, grace, &never, now);
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(report.kept.contains(&("live".into(), v1.clone(), Verdict::Recent)));
    assert!(report.kept.contains(&("live".into(), v2.clone(), Verdict::Referenced)));

    // Past the grace period from publishing, but a transfer touched it recently.
    let later = now + Duration::from_secs(3600);
    let touches = Touches::new();
    touches.touch("live", &v1, later - Duration::from_secs(60));
    let report = gc(&new, &f.store, grace, &|p: &str, v: &str| touches.last(p, v), later);
    assert!(report.removed.is_empty(), "{report:?}");

    let v1_bytes: u64 =
        std::fs::read_dir(f.store.join("live").join(&v1)).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let report = gc(&new, &f.store, grace, &never, later);
    assert_eq!(report.removed, [("live".to_string(), v1.clone())]);
    assert_eq!(report.freed_bytes, v1_bytes);
    assert!(v1_bytes > 0);
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!f.store.join("live").join(&v1).exists());
    assert!(f.store.join("live").join(&v2).join("vmlinuz").exists());
    // Referenced versions survive any amount of time.
    let report = gc(&new, &f.store, grace, &never, now + Duration::from_secs(10 * 365 * 86400));
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(store_entries(&f.store), ["live", "rescue"]);
}

#[test]
fn gc_sweeps_stale_build_directories_and_empty_profiles() {
    let f = Fixture::new();
    let cat = f.catalog();
    f.publish(&cat).unwrap();
    fs::create_dir_all(f.store.join(".tmp-live-abc-1-0")).unwrap();
    fs::create_dir_all(f.store.join("gone/0123456789ab")).unwrap();
    let never = |_: &str, _: &str| None;
    let grace = Duration::from_secs(60);
    let report = gc(&cat, &f.store, grace, &never, SystemTime::now());
    assert!(report.swept.is_empty() && report.removed.is_empty(), "fresh build directories stay: {report:?}");
    let report = gc(&cat, &f.store, grace, &never, SystemTime::now() + Duration::from_secs(120));
    assert_eq!(report.swept, [".tmp-live-abc-1-0"]);
    assert_eq!(report.removed, [("gone".to_string(), "0123456789ab".to_string())]);
    assert_eq!(store_entries(&f.store), ["live", "rescue"]);
}

#[test]
fn open_serves_a_published_file() {
    let f = Fixture::new();
    let cat = f.catalog();
    f.publish(&cat).unwrap();
    let v = version_of(&cat, "rescue", Arch::X86_64);
    let (file, meta) = open(&f.store, "rescue", &v, "vmlinuz").unwrap();
    assert_eq!(meta.len(), b"rescue kernel\n".len() as u64);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &file, &mut s).unwrap();
    assert_eq!(s, "rescue kernel\n");
    assert_eq!(open(&f.store, "rescue", &v, "nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(open(&f.store, "rescue", "000000000000", "vmlinuz").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn open_refuses_traversal_and_symlinks_out_of_the_store() {
    let f = Fixture::new();
    let cat = f.catalog();
    f.publish(&cat).unwrap();
    let v = version_of(&cat, "rescue", Arch::X86_64);
    for (p, ver, file) in [
        ("..", "..", "appliance.yaml"),
        ("rescue", &*v, "../../live"),
        ("rescue", "..", "rescue.yaml"),
        ("rescue", &*v, ""),
        ("rescue", &*v, ".hidden"),
        ("rescue", &*v, "..\\x"),
        ("/etc", "x", "passwd"),
    ] {
        let err = open(&f.store, p, ver, file).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{p}/{ver}/{file}");
    }
    // A symlink planted in the store pointing outside it.
    let dir = f.store.join("evil").join("000000000000");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(f.config.join("appliance.yaml"), dir.join("cfg")).unwrap();
    assert_eq!(open(&f.store, "evil", "000000000000", "cfg").unwrap_err().kind(), ErrorKind::PermissionDenied);
    std::os::unix::fs::symlink(&f.config, f.store.join("evil2")).unwrap();
    assert_eq!(open(&f.store, "evil2", "files", "vmlinuz").unwrap_err().kind(), ErrorKind::PermissionDenied);
    // A directory is not a file.
    assert_eq!(open(&f.store, "evil", "000000000000", "..").unwrap_err().kind(), ErrorKind::InvalidInput);
    fs::create_dir(dir.join("sub")).unwrap();
    assert_eq!(open(&f.store, "evil", "000000000000", "sub").unwrap_err().kind(), ErrorKind::NotFound);
}
