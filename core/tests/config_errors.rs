//! Every validation error names file, line, column and field, and all of them are reported
//! together. The config is built in memory: validation reads nothing. (Reading a directory, and
//! keeping artifact paths inside it, is the daemon's; `appliance/tests/config_dir.rs`.)

mod common;

use appliance_core::catalog::Target;
use appliance_core::config::ConfigError;

const SETTINGS: &str = "server: { address: 10.0.0.1 }\ndhcp:\n  mode: server\n  subnet: 10.0.0.0/24\n  pool: { start: 10.0.0.100, end: 10.0.0.199 }\n";
const PROFILE: &str = "name: live\ncmdline: \"console=ttyS0\"\narch:\n  x86_64:\n    kernel: { path: files/k }\n";

/// Validates a config (defaults for settings and one profile, overridable) and returns its
/// errors.
fn errors(files: &[(&str, &str)]) -> Vec<ConfigError> {
    let mut all: Vec<(&str, &str)> =
        vec![("appliance.yaml", SETTINGS), ("live.yaml", PROFILE), ("files/k", "kernel bytes\n")];
    for (name, text) in files {
        all.retain(|(n, _)| n != name);
        all.push((name, text));
    }
    match common::validate_files(&all) {
        Ok(_) => vec![],
        Err(e) => e.0,
    }
}

/// Asserts one error at `file:line:col` on `field` whose message contains `msg`.
fn check(errs: &[ConfigError], file: &str, line: usize, col: usize, field: &str, msg: &str) {
    let found = errs.iter().any(|e| {
        e.file.file_name().and_then(|n| n.to_str()) == Some(file)
            && e.line == line
            && e.col == col
            && e.field == field
            && e.message.contains(msg)
    });
    let listing: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(found, "wanted {file}:{line}:{col}: {field}: ..{msg}..\ngot:\n{}", listing.join("\n"));
}

#[test]
fn valid_minimal_config_has_no_errors() {
    assert_eq!(errors(&[]), vec![]);
}

#[test]
fn unknown_field_names_its_line_and_path() {
    let e = errors(&[("machines.yaml", "machines:\n  \"52:54:00:00:00:01\":\n    hostnme: a\n    profile: live\n")]);
    check(&e, "machines.yaml", 3, 5, "machines.\"52:54:00:00:00:01\".hostnme", "unknown field `hostnme`");
}

#[test]
fn serde_error_names_the_field_once() {
    let e = errors(&[("appliance.yaml", "server: { address: 10.0.0.1, adress: 1 }\n")]);
    let line = e[0].to_string();
    assert!(line.ends_with("appliance.yaml:1:30: server.adress: unknown field `adress`, expected one of `address`, `http_port`, `http_base`, `interface`"), "{line}");
}

#[test]
fn malformed_mac_and_oui() {
    let e = errors(&[(
        "machines.yaml",
        "machines:\n  \"52:54:00:zz:00:01\": { profile: live }\nvendors:\n  - { oui: \"b8:27\", arch: arm64 }\n",
    )]);
    check(&e, "machines.yaml", 2, 3, "machines.\"52:54:00:zz:00:01\"", "is not a MAC address");
    check(&e, "machines.yaml", 4, 7, "vendors[0].oui", "is not a MAC address");
}

#[test]
fn duplicate_mac_in_another_spelling() {
    let e = errors(&[(
        "machines.yaml",
        "machines:\n  \"52:54:00:00:00:01\": { profile: live }\n  \"52-54-00-00-00-01\": { profile: live }\n",
    )]);
    check(&e, "machines.yaml", 3, 3, "machines.52-54-00-00-00-01", "duplicate MAC 52:54:00:00:00:01 (also at line 2");
}

#[test]
fn machine_naming_a_missing_profile() {
    let e = errors(&[("machines.yaml", "machines:\n  \"52:54:00:00:00:01\":\n    profile: nope\n")]);
    check(
        &e,
        "machines.yaml",
        3,
        5,
        "machines.\"52:54:00:00:00:01\".profile",
        "no profile named \"nope\" (known: live)",
    );
}

#[test]
fn profile_lacking_the_machines_arch() {
    let e = errors(&[("machines.yaml", "machines:\n  \"52:54:00:00:00:01\": { arch: arm64, profile: live }\n")]);
    check(
        &e,
        "machines.yaml",
        2,
        39,
        "machines.\"52:54:00:00:00:01\".profile",
        "has no arm64 artifacts (it has: x86_64)",
    );
}

#[test]
fn template_that_does_not_compile() {
    let e = errors(&[(
        "live.yaml",
        "name: live\ncmdline: \"console={{ oops\"\narch:\n  x86_64:\n    kernel: { path: files/k }\n",
    )]);
    check(&e, "live.yaml", 2, 1, "cmdline", "template does not compile");
}

#[test]
fn efi_binary_is_an_ipxe_build() {
    let e = errors(&[(
        "appliance.yaml",
        "server: { address: 10.0.0.1 }\ndhcp: { mode: proxy }\nipxe:\n  efi_binary: grubnetx64.efi\n",
    )]);
    check(&e, "appliance.yaml", 4, 3, "ipxe.efi_binary", "\"grubnetx64.efi\" is not one of ipxe.efi, snponly.efi");
}

#[test]
fn pool_outside_the_subnet() {
    let e = errors(&[(
        "appliance.yaml",
        "server: { address: 10.0.0.1 }\ndhcp:\n  subnet: 10.0.0.0/24\n  pool:\n    start: 10.0.0.10\n    end: 10.0.1.20\n",
    )]);
    check(&e, "appliance.yaml", 6, 5, "dhcp.pool.end", "10.0.1.20 is outside the subnet 10.0.0.0/24");
}

#[test]
fn missing_local_artifact_and_checksum_mismatch() {
    let e = errors(&[(
        "live.yaml",
        "name: live\narch:\n  x86_64:\n    kernel: { path: files/missing }\n    initrd:\n      - path: files/k\n        sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
    )]);
    check(&e, "live.yaml", 4, 15, "arch.x86_64.kernel.path", "artifact file \"files/missing\": not found");
    check(&e, "live.yaml", 7, 9, "arch.x86_64.initrd[0].sha256", "checksum mismatch for files/k");
}

#[test]
fn artifact_path_outside_the_config_dir_is_refused() {
    let e = errors(&[("live.yaml", "name: live\narch:\n  x86_64:\n    kernel: { path: ../../etc/passwd }\n")]);
    check(&e, "live.yaml", 4, 15, "arch.x86_64.kernel.path", "must be a relative path inside the config directory");
}

#[test]
fn yaml_syntax_error_has_serde_position() {
    let e = errors(&[("machines.yaml", "machines:\n  a: [unclosed\n")]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].file.file_name().unwrap(), "machines.yaml");
    assert!(e[0].line >= 2, "{:?}", e[0]);
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let e = errors(&[
        (
            "machines.yaml",
            "machines:\n  \"52:54:00:00:00:01\": { profile: nope }\n  \"bad\": { profile: live }\n  \"52:54:00:00:00:03\": { arch: sparc }\n",
        ),
        ("menus.yaml", "menus:\n  m:\n    default: zzz\n    entries:\n      - profile: live\n"),
        ("appliance.yaml", "server: { address: 10.0.0.999 }\ndhcp: { mode: proxy }\n"),
    ]);
    assert_eq!(e.len(), 5, "{:#?}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>());
    check(&e, "appliance.yaml", 1, 11, "server.address", "is not an IPv4 address");
    check(&e, "menus.yaml", 3, 5, "menus.m.default", "is not one of this menu's entries");
    check(&e, "machines.yaml", 4, 26, "machines.\"52:54:00:00:00:03\".arch", "unknown architecture \"sparc\"");
}

#[test]
fn error_lines_read_file_line_col_field_message() {
    let e = errors(&[("machines.yaml", "machines:\n  \"52:54:00:00:00:01\":\n    profile: nope\n")]);
    let line = e[0].to_string();
    assert!(
        line.ends_with(
            "machines.yaml:3:5: machines.\"52:54:00:00:00:01\".profile: no profile named \"nope\" (known: live)"
        ),
        "{line}"
    );
}

#[test]
fn overlay_wins_entry_by_entry() {
    let overlay = "machines:\n  \"52:54:00:00:00:01\": { hostname: renamed, arch: x86_64, profile: x86only }\n";
    let c = common::load(&common::data("config"), Some(overlay)).unwrap();
    let m = c.machine(common::mac("52:54:00:00:00:01")).unwrap();
    assert_eq!(m.hostname, "renamed");
    assert!(matches!(&m.target, Some(Target::Profile(p)) if p.name == "x86only"), "{:?}", m.target);
    // The other shipped entries are untouched.
    assert_eq!(c.machine(common::mac("52:54:00:00:00:05")).unwrap().hostname, "board1");
}

#[test]
fn duplicate_key_is_reported_at_its_second_occurrence() {
    let e = errors(&[(
        "machines.yaml",
        "machines:\n  \"52:54:00:00:00:01\": { profile: live }\n  \"52:54:00:00:00:01\": { profile: live }\n",
    )]);
    check(&e, "machines.yaml", 3, 3, "machines.\"52:54:00:00:00:01\"", "duplicate key, first at line 2 column 3");
    let e = errors(&[("appliance.yaml", &format!("{SETTINGS}server: {{ address: 10.0.0.2 }}\n"))]);
    check(&e, "appliance.yaml", 6, 1, "server", "duplicate");
}

#[test]
fn empty_yaml_files_are_reported() {
    for text in ["", "\n \n"] {
        for file in ["half-written.yaml", "machines.yaml", "menus.yaml", "appliance.yaml"] {
            let e = errors(&[(file, text)]);
            check(&e, file, 1, 1, "", "the file is empty");
        }
    }
    // Comments only: the MAC database and the menus were written empty on purpose.
    assert_eq!(errors(&[("machines.yaml", "# no machines yet\n")]), vec![]);
}
