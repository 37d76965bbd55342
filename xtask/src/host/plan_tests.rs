//! The plan on real dpkg and apt output. The samples in `testdata/` were captured on Debian
//! bookworm amd64: `dpkg-query.txt` and `policy-fresh-root.txt` in a debootstrap root with arm64
//! added, `hello:arm64` installed and `mtools` removed (its conffiles kept: `rc`);
//! `policy-no-lists.txt` in the same root with apt's lists moved away; `policy-this-host.txt` on
//! a developer machine with the packages installed.

use super::*;

const DPKG_QUERY: &str = include_str!("testdata/dpkg-query.txt");
const POLICY_FRESH_ROOT: &str = include_str!("testdata/policy-fresh-root.txt");
const POLICY_NO_LISTS: &str = include_str!("testdata/policy-no-lists.txt");
const POLICY_THIS_HOST: &str = include_str!("testdata/policy-this-host.txt");

fn pkg(spec: &str) -> PackageRef {
    PackageRef::parse(spec, "amd64")
}

fn pin(spec: &str, version: &str) -> PinnedDownload {
    PinnedDownload { package: pkg(spec), version: version.to_owned() }
}

fn dpkg(foreign: &[&str], installed: &[&str]) -> Dpkg {
    Dpkg {
        native: "amd64".to_owned(),
        foreign: foreign.iter().map(|a| a.to_string()).collect(),
        installed: installed.iter().map(|s| pkg(s)).collect(),
    }
}

/// What `cargo xtask image` needs, in miniature: two packages, the arm64 architecture, two pins.
fn image_needs() -> Needs {
    Needs {
        architectures: ["amd64", "arm64"].map(str::to_owned).into(),
        install: vec![pkg("grub-common"), pkg("mtools")],
        download: vec![
            pin("grub-efi-arm64-bin:arm64", "2.06-13+deb12u2"),
            pin("ipxe:amd64", "1.0.0+git-20190125.36a4c85-5.1"),
        ],
    }
}

fn steps(needs: &Needs, dpkg: &Dpkg, policy: &str) -> Vec<String> {
    let apt = parse_policy(policy, &dpkg.native);
    plan(&unmet(needs, dpkg, &apt), &dpkg.native).iter().map(Step::to_string).collect()
}

#[test]
fn dpkg_query_gives_installed_packages_with_their_architecture() {
    let installed = parse_dpkg_query(DPKG_QUERY, "amd64");
    // Unqualified names are the native architecture's (or `all`); M-A: same ones are qualified.
    assert!(installed.contains(&pkg("apt")));
    assert!(installed.contains(&pkg("libc6:amd64")) && installed.contains(&pkg("libc6")));
    // The foreign package.
    assert!(installed.contains(&pkg("hello:arm64")));
    assert!(installed.contains(&pkg("libc6:arm64")));
    assert!(!installed.contains(&pkg("hello")));
    // Removed, conffiles kept (`rc`): not installed.
    assert!(DPKG_QUERY.contains("mtools\trc "));
    assert!(!installed.contains(&pkg("mtools")));
    assert_eq!(installed.len(), DPKG_QUERY.lines().count() - 1);
}

#[test]
fn dpkg_states_other_than_installed_do_not_count() {
    let text = "a\tii \nb\thi \nc\tiU \nd\tiF \ne\tun \nf\tiiR\ng:arm64\tii \n";
    let installed: Vec<String> = parse_dpkg_query(text, "amd64").iter().map(|p| p.spec("amd64")).collect();
    assert_eq!(installed, ["a", "b", "g:arm64"]);
}

#[test]
fn foreign_architectures_parse() {
    assert_eq!(parse_architectures("arm64\ni386\n"), ["arm64", "i386"].map(str::to_owned).into());
    assert!(parse_architectures("").is_empty());
}

#[test]
fn apt_policy_gives_candidates_and_downloadable_versions() {
    let apt = parse_policy(POLICY_FRESH_ROOT, "amd64");
    let arm_grub = apt.get(&pkg("grub-efi-arm64-bin:arm64"), "amd64").unwrap();
    assert_eq!(arm_grub.candidate.as_deref(), Some("2.06-13+deb12u2"));
    assert_eq!(arm_grub.downloadable, ["2.06-13+deb12u1", "2.06-13+deb12u2"].map(str::to_owned).into());
    // Asked as `ipxe:amd64`, headed `ipxe:` (Architecture: all).
    assert!(apt.get(&pkg("ipxe:amd64"), "amd64").unwrap().downloadable.contains("1.0.0+git-20190125.36a4c85-5.1"));
    // Known, but nothing provides it: no candidate.
    let mta = apt.get(&pkg("mail-transport-agent"), "amd64").unwrap();
    assert_eq!(mta, &Policy::default());
    // apt prints nothing at all for a name it has never heard of.
    assert!(apt.get(&pkg("no-such-package-xyz"), "amd64").is_none());
    // The foreign package, installed.
    assert_eq!(apt.get(&pkg("hello:arm64"), "amd64").unwrap().candidate.as_deref(), Some("2.10-3"));
}

#[test]
fn versions_only_in_dpkg_status_are_not_downloadable() {
    let apt = parse_policy(POLICY_NO_LISTS, "amd64");
    let apt_itself = apt.get(&pkg("apt"), "amd64").unwrap();
    assert_eq!(apt_itself.candidate.as_deref(), Some("2.6.1"));
    assert!(apt_itself.downloadable.is_empty());
    // Without lists, apt has no stanza for packages that are not installed.
    assert!(apt.get(&pkg("grub-common"), "amd64").is_none());
}

#[test]
fn installed_packages_keep_their_other_versions_downloadable() {
    let apt = parse_policy(POLICY_THIS_HOST, "amd64");
    let grub = apt.get(&pkg("grub-common"), "amd64").unwrap();
    assert_eq!(grub.downloadable, ["2.06-13+deb12u1", "2.06-13+deb12u2"].map(str::to_owned).into());
    let qemu = apt.get(&pkg("qemu-system-x86"), "amd64").unwrap();
    assert!(qemu.downloadable.contains("1:7.2+dfsg-7+deb12u18+b3"), "{qemu:?}");
    assert_eq!(apt.get(&pkg("mail-transport-agent"), "amd64").unwrap().candidate, None);
}

#[test]
fn fresh_host_adds_arm64_updates_and_installs_everything() {
    let fresh = dpkg(&[], &["apt", "dpkg", "libc6:amd64"]);
    assert_eq!(
        steps(&image_needs(), &fresh, POLICY_NO_LISTS),
        [
            "dpkg --add-architecture arm64",
            "apt-get update",
            "apt-get install --no-install-recommends -y grub-common mtools"
        ]
    );
}

#[test]
fn ready_host_needs_no_step_and_no_question_to_apt() {
    let ready = dpkg(&["arm64"], &["grub-common", "mtools"]);
    assert_eq!(steps(&image_needs(), &ready, POLICY_FRESH_ROOT), Vec::<String>::new());
    // With every pinned package in the download cache, apt is not even asked.
    let cached = Needs { download: Vec::new(), ..image_needs() };
    assert!(apt_questions(&cached, &ready).is_empty());
    assert_eq!(steps(&cached, &ready, ""), Vec::<String>::new());
}

#[test]
fn stale_lists_only_need_an_update() {
    let ready = dpkg(&["arm64"], &["grub-common", "mtools"]);
    // Everything installed, but apt's lists are gone: the pinned versions are unknown.
    assert_eq!(steps(&image_needs(), &ready, POLICY_NO_LISTS), ["apt-get update"]);
    // A pin newer than the lists.
    let mut needs = image_needs();
    needs.download.push(pin("grub-efi-arm64-bin:arm64", "2.06-13+deb12u3"));
    assert_eq!(steps(&needs, &ready, POLICY_FRESH_ROOT), ["apt-get update"]);
}

#[test]
fn installable_packages_need_no_update() {
    let host = dpkg(&["arm64"], &["grub-common"]);
    assert_eq!(steps(&image_needs(), &host, POLICY_FRESH_ROOT), ["apt-get install --no-install-recommends -y mtools"]);
}

#[test]
fn a_package_without_candidate_updates_first() {
    let host = dpkg(&["arm64"], &["grub-common", "mtools"]);
    let mut needs = image_needs();
    needs.install.push(pkg("mail-transport-agent"));
    assert_eq!(
        steps(&needs, &host, POLICY_FRESH_ROOT),
        ["apt-get update", "apt-get install --no-install-recommends -y mail-transport-agent"]
    );
}

#[test]
fn foreign_packages_are_installed_by_qualified_name() {
    let host = dpkg(&["arm64"], &["grub-common", "mtools"]);
    let mut needs = image_needs();
    needs.install.push(pkg("hello:arm64"));
    assert_eq!(steps(&needs, &host, POLICY_FRESH_ROOT), ["apt-get install --no-install-recommends -y hello:arm64"]);
    // Installed as arm64, it does not count for amd64.
    let host = dpkg(&["arm64"], &["grub-common", "mtools", "hello:arm64"]);
    needs.install.push(pkg("hello"));
    assert_eq!(
        steps(&needs, &host, POLICY_FRESH_ROOT),
        ["apt-get update", "apt-get install --no-install-recommends -y hello"]
    );
}

#[test]
fn apt_is_asked_about_missing_packages_and_pins_by_qualified_name() {
    let host = dpkg(&[], &["grub-common"]);
    assert_eq!(apt_questions(&image_needs(), &host), ["grub-efi-arm64-bin:arm64", "ipxe:amd64", "mtools:amd64"]);
}

#[test]
fn what_is_left_after_the_steps_is_reported_by_kind() {
    // After `apt-get update` the lists still lack a pinned version: the lock is stale.
    let host = dpkg(&["arm64"], &["grub-common", "mtools"]);
    let mut needs = image_needs();
    needs.download.push(pin("grub-efi-arm64-bin:arm64", "2.06-13+deb12u3"));
    let apt = parse_policy(POLICY_FRESH_ROOT, "amd64");
    assert_eq!(unmet(&needs, &host, &apt), [Unmet::PinUnknown(pin("grub-efi-arm64-bin:arm64", "2.06-13+deb12u3"))]);
    let host = dpkg(&[], &["grub-common"]);
    assert_eq!(
        unmet(&image_needs(), &host, &apt),
        [Unmet::Architecture("arm64".to_owned()), Unmet::NotInstalled { package: pkg("mtools"), candidate: true }]
    );
}
