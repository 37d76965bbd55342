use super::*;

fn errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let path = dir.path().join("lab.yaml");
    match parse(&path, text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| format!("{}:{}: {}: {}", e.line, e.col, e.field, e.message)).collect(),
    }
}

/// One error per line of `expect`, in order, each starting with it.
fn assert_starts(errs: &[String], expect: &[&str]) {
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (e, want) in errs.iter().zip(expect) {
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
}

#[test]
fn minimal_recipe_gets_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let r = parse(&dir.path().join("lab.yaml"), "config: profiles\nnetwork: { address: 10.77.0.1/24 }\n").unwrap();
    assert_eq!(r.name, "lab");
    assert_eq!(r.interface, Interface::Auto);
    assert_eq!(r.ipv4, Ipv4::Static { address: Ipv4Addr::new(10, 77, 0, 1), prefix: 24, gateway: None });
    assert_eq!(r.bootloaders.len(), BootFile::bootloaders().count());
    assert_eq!(r.console_args(), "console=tty0 console=ttyS0,115200n8");
    assert_eq!(r.state_mib, 8);
    assert_eq!(r.admin, AdminListen::Loopback(9090));
    assert_eq!(r.admin.script_value(), "127.0.0.1:9090");
}

#[test]
fn the_admin_listener_opens_where_the_recipe_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let admin = |spec: &str| {
        let text = format!("config: profiles\nnetwork: {{ address: 10.77.0.1/24 }}\nadmin: {spec}\n");
        parse(&dir.path().join("lab.yaml"), &text).unwrap().admin.script_value()
    };
    assert_eq!(admin("{ listen: boot }"), "boot:9090");
    assert_eq!(admin("{ listen: 192.168.5.2, port: 8443 }"), "192.168.5.2:8443");
    assert_eq!(admin("{ listen: off }"), "off");
    let base = "config: profiles\nnetwork: { address: 10.77.0.1/24 }\n";
    let errs = errors(&format!("{base}admin: {{ listen: 0.0.0.0 }}\n"));
    assert_starts(&errs, &["3:10: admin.listen: 0.0.0.0 would open the status pages on every interface"]);
    let errs = errors(&format!("{base}admin:\n  listen: mgmt0\n  port: 0\n"));
    assert_starts(&errs, &["5:3: admin.port: port 0", "4:3: admin.listen: \"mgmt0\" is not an IPv4 address"]);
}

#[test]
fn unknown_field_is_reported_with_its_position() {
    let errs = errors("config: profiles\nnetwork:\n  address: 10.77.0.1/24\n  adress: 1.2.3.4\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("4:3: network.adress: unknown field `adress`, expected one of"), "{errs:?}");
}

#[test]
fn every_semantic_error_at_once_with_line_and_field() {
    let text = "\
config: nowhere
network:
  interface: 52:54:00:zz:00:01
  address: 10.77.0.1/33
dhcp:
  mode: relay
  pool: { start: 10.77.0.200, end: 10.77.0.100 }
bootloaders: [ipxe.efi, pxelinux.0, ipxe.efi]
console: { serial: com1, vga: false }
kernel: { modules: [\"bad name\"] }
disk: { state_mib: 0 }
";
    let errs = errors(text);
    let expect = [
        "1:1: config: ",
        "3:3: network.interface: \"52:54:00:zz:00:01\" is not a MAC address",
        "4:3: network.address: \"10.77.0.1/33\" is not an address with a prefix length like 10.0.0.1/24, or `dhcp`",
        "6:3: dhcp.mode: unknown DHCP mode \"relay\"",
        "7:31: dhcp.pool.end: the pool ends (10.77.0.100) before it starts (10.77.0.200)",
        "8:25: bootloaders[1]: unknown bootloader \"pxelinux.0\"",
        "8:37: bootloaders[2]: ipxe.efi is listed twice",
        "9:12: console.serial: \"com1\" is not a serial port",
        "10:21: kernel.modules[0]: \"bad name\" is not a module name",
        "11:9: disk.state_mib: 0 MiB is out of range",
    ];
    assert_starts(&errs, &expect);
}

#[test]
fn host_names_and_addresses_follow_the_configs_rules() {
    // The config's host name rule: an FQDN of up to 253 characters, labels of up to 63.
    let fqdn = format!("{}.lab.example", "a".repeat(63));
    assert_eq!(errors(&format!("config: profiles\nnetwork: {{ address: dhcp, hostname: {fqdn} }}\n")), [""; 0]);
    let text = format!(
        "config: profiles\nnetwork:\n  address: 10.77.0.1/0\n  hostname: {}\ndhcp:\n  pool: {{ start: 10.77.0.300, end: 10.77.0.9 }}\n",
        "a".repeat(64)
    );
    let errs = errors(&text);
    let expect = [
        "3:3: network.address: a /0 prefix",
        "4:3: network.hostname: \"aaaa",
        "6:11: dhcp.pool.start: \"10.77.0.300\" is not an IPv4 address",
    ];
    assert_starts(&errs, &expect);
    let errs = errors("config: profiles\nnetwork: { address: 10.77.0.1/24, gateway: 10.78.0.1 }\n");
    assert_eq!(errs, ["2:35: network.gateway: 10.78.0.1 is not in 10.77.0.1/24"]);
}

#[test]
fn dhcp_server_needs_a_static_address_in_its_subnet() {
    let profiles = crate::project_root().join("profiles");
    let catalog = appliance::config_dir::load(&profiles, None).unwrap();
    let path = crate::project_root().join("images/x.yaml");
    let dhcp = parse(&path, "config: ../profiles\nnetwork: { address: dhcp }\n").unwrap();
    let err = dhcp.check_against(&catalog).unwrap_err().to_string();
    assert!(err.contains("x.yaml:2:12: network.address: a DHCP server needs a static address"), "{err}");
    let outside = parse(&path, "config: ../profiles\nnetwork: { address: 10.9.0.1/24 }\n").unwrap();
    let err = outside.check_against(&catalog).unwrap_err().to_string();
    assert!(err.contains("10.9.0.1 is outside the DHCP subnet 10.77.0.0/24"), "{err}");
    let no_efi =
        parse(&path, "config: ../profiles\nnetwork: { address: 10.77.0.1/24 }\nbootloaders: [undionly.kpxe]\n")
            .unwrap();
    let err = no_efi.check_against(&catalog).unwrap_err().to_string();
    assert!(err.contains("x.yaml:3:1: bootloaders: the config hands ipxe.efi"), "{err}");
}
