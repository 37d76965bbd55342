//! `obtain::plan`: which blobs a catalog still needs, each once, and which it cannot get.

mod common;

use appliance_core::catalog::ConfigSource;
use appliance_core::obtain::{plan, Fetch};

const SETTINGS: &str = "server: { address: 10.0.0.1 }\ndhcp: { mode: off }\n";
const K: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const D: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const B: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const F: &str = "4444444444444444444444444444444444444444444444444444444444444444";

fn profile() -> String {
    format!(
        "name: p\ncmdline: x\narch:\n  x86_64:\n    kernel: {{ name: vmlinuz, url: http://h/k, sha256: {K} }}\n    initrd:\n\
         \x20     - {{ name: a.img, deb: linux, file: boot/a, url: http://h/l.deb, deb_sha256: {D}, sha256: {F} }}\n\
         \x20     - name: b.img\n        cpio:\n          - {{ dest: bin/busybox, deb: busybox-static, file: bin/busybox, sha256: {B} }}\n\
         \x20         - {{ dest: k, url: http://h/k, sha256: {K} }}\n"
    )
}

fn hex(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn every_missing_blob_once_and_the_unobtainable_with_their_use() {
    let c = common::validate_files(&[("appliance.yaml", SETTINGS), ("p.yaml", &profile())]).unwrap();
    let p = plan(&c, &|_| false, &|_, _| false);
    let urls: Vec<_> = p.fetch.iter().map(|f| (f.url().to_string(), *f.sha256())).collect();
    assert_eq!(urls, vec![("http://h/k".to_string(), hex(K)), ("http://h/l.deb".to_string(), hex(F))]);
    assert!(matches!(&p.fetch[1], Fetch::Deb { deb, file, .. } if deb.sha256 == hex(D) && file == "boot/a"));
    assert_eq!(p.unobtainable.len(), 1);
    let why = p.unobtainable[0].to_string();
    assert!(
        why.starts_with("profile p (x86_64), artifact b.img: bin/busybox from Debian package busybox-static (amd64)"),
        "{why}"
    );
    assert!(why.contains("names no `url`"), "{why}");

    // What is at hand, and sets already published, need nothing.
    let p = plan(&c, &|d| *d == hex(K) || *d == hex(B), &|_, _| false);
    assert_eq!(p.fetch.len(), 1);
    assert!(p.unobtainable.is_empty());
    let p = plan(&c, &|_| false, &|profile, _| profile == "p");
    assert_eq!(p, Default::default());
}

#[test]
fn a_deb_url_needs_the_packages_sha256_and_the_origin_is_only_rendered_for_git() {
    let bad = format!(
        "name: p\narch:\n  x86_64:\n    kernel: {{ deb: linux, file: boot/a, url: http://h/l.deb, sha256: {F} }}\n"
    );
    let errs = common::validate_files(&[("appliance.yaml", SETTINGS), ("p.yaml", &bad)]).unwrap_err();
    assert!(errs.to_string().contains("needs `deb_sha256`"), "{errs}");
    let c = common::validate_files(&[("appliance.yaml", SETTINGS), ("p.yaml", &profile())]).unwrap();
    assert_eq!(c.config_source().header(), None);
    let c = c.with_config_source(ConfigSource::Git { url: "git://h/r".into(), commit: "abc".into() });
    assert_eq!(c.config_source().header().as_deref(), Some("# config: git git://h/r commit abc"));
}
