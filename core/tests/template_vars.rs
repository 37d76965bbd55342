//! What a profile's templates see beside the machine: the profile's own `vars` (defaults a
//! machine's `vars` override in the template) and `machine.domain`, the DNS domain the
//! appliance's DHCP hands out. The Debian installer's preseed takes locale, keyboard and mirror
//! this way (`profiles/debian-installer/preseed.cfg.j2`).

mod common;

use appliance_core::answers;
use appliance_core::arch::Arch;
use appliance_core::catalog::Catalog;
use appliance_core::client::{Client, Learned};
use appliance_core::decide::{decide, Stage};
use appliance_core::render::{self, Format, ServerInfo};
use common::*;

const PROFILE: &str = "\
name: inst
cmdline: domain={{ machine.domain | default('none') }} locale={{ machine.vars.locale | default(profile.vars.locale) }}
answers: { preseed: preseed.j2 }
vars:
  locale: en_US.UTF-8
  mirror: { hostname: deb.debian.org, directory: /debian }
arch:
  x86_64:
    kernel: { path: k }
";

const PRESEED: &str = "\
{%- set mirror = machine.vars.mirror | default(profile.vars.mirror) -%}
locale={{ machine.vars.locale | default(profile.vars.locale) }}
mirror={{ mirror.hostname }}{{ mirror.directory }}
domain={{ machine.domain | default('none') }}
";

const MACHINES: &str = "\
machines:
  \"52:54:00:00:00:01\": { hostname: plain, profile: inst }
  \"52:54:00:00:00:02\":
    hostname: own
    profile: inst
    vars: { locale: de_DE.UTF-8, mirror: { hostname: 10.0.0.9, directory: /mirror } }
";

fn catalog(dhcp: &str) -> Catalog {
    let settings = format!("server: {{ address: 10.0.0.1 }}\ndhcp: {dhcp}\n");
    validate_files(&[
        ("appliance.yaml", &settings),
        ("inst.yaml", PROFILE),
        ("machines.yaml", MACHINES),
        ("preseed.j2", PRESEED),
        ("k", "kernel"),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn client(m: &str) -> Client {
    let mut c = Client::new(appliance_core::arch::Firmware::Ipxe { efi: false }).with_mac(mac(m), Learned::HttpQuery);
    c.arch_hint = Some((Arch::X86_64, Learned::HttpQuery));
    c
}

fn preseed(c: &Catalog, m: &str) -> String {
    let d = decide(c, &client(m), Stage::IpxeScript);
    let server = ServerInfo::from_catalog(c);
    answers::render(c, c.profile("inst").unwrap(), "preseed", d.arch, &d.machine, &server, true).unwrap().text
}

#[test]
fn profile_vars_are_defaults_that_machine_vars_override() {
    let c = catalog("{ mode: off, domain: lab.internal }");
    assert_eq!(
        preseed(&c, "52:54:00:00:00:01"),
        "locale=en_US.UTF-8\nmirror=deb.debian.org/debian\ndomain=lab.internal\n"
    );
    assert_eq!(preseed(&c, "52:54:00:00:00:02"), "locale=de_DE.UTF-8\nmirror=10.0.0.9/mirror\ndomain=lab.internal\n");
}

#[test]
fn the_dhcp_domain_is_the_machines_and_undefined_without_one() {
    let c = catalog("{ mode: off }");
    assert!(preseed(&c, "52:54:00:00:00:01").ends_with("domain=none\n"));
    let with = catalog("{ mode: off, domain: lab.internal }");
    let d = decide(&with, &client("52:54:00:00:00:02"), Stage::IpxeScript);
    let script = render::render(&with, &d, &ServerInfo::from_catalog(&with), Format::Ipxe).unwrap().unwrap();
    assert!(script.contains("domain=lab.internal locale=de_DE.UTF-8"), "{script}");
}
