//! Table tests of `decide`: every firmware of docs/firmware.md#dhcp-requests-by-client, the MAC
//! database, OUI rules, the unknown-machine policy and the iPXE chain loop.

mod common;

use appliance_core::arch::{Arch, Firmware};
use appliance_core::boot_file::BootFile;
use appliance_core::client::{Client, Learned};
use appliance_core::decide::{decide, IgnoreReason, Outcome, Rule, Stage, Transport};
use appliance_core::explain::for_path;
use appliance_core::mac::Oui;
use common::*;

fn oui(s: &str) -> Oui {
    Oui::parse(s).unwrap()
}

fn tftp(file: BootFile) -> Outcome {
    Outcome::BootFile { file, transport: Transport::Tftp }
}
fn http(file: BootFile) -> Outcome {
    Outcome::BootFile { file, transport: Transport::Http }
}

/// Decides the DHCP stage and checks the outcome.
fn check_dhcp(client: Client, want: Outcome) {
    let d = decide(&catalog(), &client, Stage::Dhcp);
    assert_eq!(d.outcome, want, "client {client:?}\ndecision {d:?}");
}

fn ignored(client: Client, stage: Stage) -> IgnoreReason {
    match decide(&catalog(), &client, stage).outcome {
        Outcome::Ignore { reason } => reason,
        other => panic!("expected ignore, got {other:?}"),
    }
}

fn boot_of(c: &appliance_core::catalog::Catalog, profile: &str, arch: Arch) -> Outcome {
    let (_, set) = c.profile_set(profile, arch).unwrap();
    Outcome::Boot { profile: profile.into(), version: set.version.clone() }
}

#[test]
fn firmware_is_identified_from_its_options() {
    let cases = [
        (seabios_ipxe_rom("52:54:00:00:00:01"), Firmware::Ipxe { efi: false }),
        (bios_stock_pxe("52:54:00:00:00:01"), Firmware::BiosPxe),
        (ovmf_pxe("52:54:00:00:00:01"), Firmware::UefiPxe),
        (ipxe_efi("52:54:00:00:00:01"), Firmware::Ipxe { efi: true }),
        (uboot("52:54:00:00:00:01"), Firmware::Uboot),
        (uboot_efi_retry("52:54:00:00:00:01"), Firmware::UefiPxe),
        (uefi_http_x64("52:54:00:00:00:01"), Firmware::UefiHttp),
        (uefi_http_arm64("52:54:00:00:00:01"), Firmware::UefiHttp),
        (os_client("52:54:00:00:00:01"), Firmware::Unknown),
    ];
    for (client, fw) in cases {
        assert_eq!(client.firmware, fw, "{client:?}");
    }
}

#[test]
fn bios_ipxe_rom_gets_the_script_at_once() {
    check_dhcp(seabios_ipxe_rom("52:54:00:00:00:01"), Outcome::IpxeScript);
}

#[test]
fn stock_bios_pxe_rom_gets_undionly() {
    check_dhcp(bios_stock_pxe("52:54:00:00:00:01"), tftp(BootFile::Undionly));
    // Even when the MAC is unknown: the menu comes later, from iPXE.
    check_dhcp(bios_stock_pxe("52:54:00:aa:bb:cc"), tftp(BootFile::Undionly));
}

#[test]
fn chain_ipxe_machine_gets_undionly_once_then_the_script() {
    let mut c = seabios_ipxe_rom("52:54:00:00:00:02");
    check_dhcp(c.clone(), tftp(BootFile::Undionly));
    // The chained undionly.kpxe sends byte-identical options; only memory tells
    // (docs/firmware.md#ipxe-rom-and-undionly).
    c.ipxe_chained = true;
    check_dhcp(c, Outcome::IpxeScript);
}

#[test]
fn ovmf_pxe_gets_ipxe_efi_by_tftp() {
    check_dhcp(ovmf_pxe("52:54:00:00:00:03"), tftp(BootFile::IpxeEfi));
}

#[test]
fn efi64_ipxe_client_gets_http_script() {
    check_dhcp(ipxe_efi("52:54:00:00:00:03"), Outcome::IpxeScript);
}

#[test]
fn uefi_http_boot_gets_ipxe_efi_by_http() {
    check_dhcp(uefi_http_x64("52:54:00:00:00:03"), http(BootFile::IpxeEfi));
    check_dhcp(uefi_http_arm64("52:54:00:aa:00:01"), http(BootFile::GrubAa64));
}

#[test]
fn uboot_gets_its_script_image() {
    check_dhcp(uboot("52:54:00:00:00:05"), tftp(BootFile::UbootScript));
}

#[test]
fn arm64_uefi_gets_grub() {
    check_dhcp(armvirt_edk2("52:54:00:00:00:05"), tftp(BootFile::GrubAa64));
    check_dhcp(uboot_efi_retry("52:54:00:aa:00:02"), tftp(BootFile::GrubAa64));
}

#[test]
fn plain_os_dhcp_client_is_not_a_boot_client() {
    assert_eq!(ignored(os_client("52:54:00:00:00:01"), Stage::Dhcp), IgnoreReason::NotBootClient);
}

#[test]
fn ignored_machine_gets_nothing() {
    assert_eq!(ignored(seabios_ipxe_rom("52:54:00:00:00:06"), Stage::Dhcp), IgnoreReason::Database);
    let entry = Rule::ExactMac(mac("52:54:00:00:00:06"));
    assert_eq!(ignored(seabios_ipxe_rom("52:54:00:00:00:06"), Stage::IpxeScript), IgnoreReason::Rule(entry));
}

#[test]
fn mac_database_arch_wins_over_option_93() {
    // board1 is arm64 in the database; a (wrong) option 93 = 7 does not change that.
    let d = decide(&catalog(), &ovmf_pxe("52:54:00:00:00:05"), Stage::Dhcp);
    assert_eq!(d.arch, Some(Arch::Arm64));
    assert_eq!(d.arch_rule, Rule::ExactMac(mac("52:54:00:00:00:05")));
    assert_eq!(d.outcome, tftp(BootFile::GrubAa64));
}

#[test]
fn oui_rule_decides_arch_where_option_93_is_absent_or_wrong() {
    // A Raspberry Pi OUI sending x64 UEFI's option 93: the vendor rule says arm64.
    let d = decide(&catalog(), &ovmf_pxe("b8:27:eb:00:00:01"), Stage::Dhcp);
    assert_eq!(d.arch, Some(Arch::Arm64));
    assert_eq!(d.arch_rule, Rule::Oui(oui("b8:27:eb")));
    assert_eq!(d.outcome, tftp(BootFile::GrubAa64));
    // With no option 93 at all, a pxelinux request is still decided by the OUI rule.
    let (stage, _, c) = for_path(Client::new(Firmware::Unknown), "pxelinux.cfg/01-b8-27-eb-00-00-01");
    let d = decide(&catalog(), &c, stage);
    assert_eq!(d.arch, Some(Arch::Arm64));
    assert_eq!(d.outcome, Outcome::Menu { menu: "default".into() });
}

#[test]
fn oui_rule_can_name_a_profile() {
    let c = catalog();
    let d = decide(&c, &ipxe_efi("02:00:00:00:00:01"), Stage::IpxeScript);
    assert_eq!(d.target_rule, Rule::Oui(oui("02:00:00")));
    assert_eq!(d.outcome, boot_of(&c, "x86only", Arch::X86_64));
}

#[test]
fn known_machine_gets_its_profile_in_the_ipxe_script() {
    let c = catalog();
    let d = decide(&c, &ipxe_efi("52:54:00:00:00:03"), Stage::IpxeScript);
    assert_eq!(d.outcome, boot_of(&c, "live", Arch::X86_64));
    assert_eq!(d.target_rule, Rule::ExactMac(mac("52:54:00:00:00:03")));
    assert_eq!(d.arch_rule, Rule::Client(Learned::Option93(7)));
    assert_eq!(d.machine.hostname, "uefi1");
}

#[test]
fn unknown_machine_gets_the_menu() {
    let d = decide(&catalog(), &ipxe_efi("52:54:00:99:99:99"), Stage::IpxeScript);
    assert_eq!(d.outcome, Outcome::Menu { menu: "default".into() });
    assert_eq!(d.target_rule, Rule::UnknownPolicy);
    assert!(!d.machine.known);
    assert_eq!(d.machine.hostname, "node-525400999999");
}

#[test]
fn local_boot_machine() {
    let d = decide(&catalog(), &ipxe_efi("52:54:00:00:00:07"), Stage::IpxeScript);
    assert_eq!(d.outcome, Outcome::Local);
}

#[test]
fn profile_without_the_clients_arch_is_refused_with_a_reason() {
    let want = IgnoreReason::NoArtifacts { profile: "x86only".into(), arch: Arch::Arm64 };
    assert_eq!(ignored(uboot("52:54:00:00:00:08"), Stage::Pxelinux), want);
    assert_eq!(ignored(uboot("52:54:00:00:00:08"), Stage::Dhcp), want);
}

#[test]
fn pxelinux_paths_identify_the_machine() {
    let c = catalog();
    let (stage, _, client) = for_path(Client::new(Firmware::Unknown), "pxelinux.cfg/01-52-54-00-00-00-05");
    assert_eq!(stage, Stage::Pxelinux);
    assert_eq!(decide(&c, &client, stage).outcome, boot_of(&c, "live", Arch::Arm64));
}

#[test]
fn per_arch_default_is_served_before_the_plain_default() {
    let c = catalog();
    // An unknown board asking for its MAC file, with no architecture known: not found, so
    // U-Boot moves on...
    let (stage, _, client) = for_path(Client::new(Firmware::Unknown), "pxelinux.cfg/01-52-54-00-99-00-01");
    assert!(matches!(decide(&c, &client, stage).outcome, Outcome::Ignore { .. }));
    // ...to default-arm, which names the architecture: the menu for arm64.
    let (stage, _, client) = for_path(Client::new(Firmware::Unknown), "pxelinux.cfg/default-arm-virt-qemu");
    let d = decide(&c, &client, stage);
    assert_eq!(d.arch, Some(Arch::Arm64));
    assert_eq!(d.outcome, Outcome::Menu { menu: "default".into() });
    // The plain default with nothing known is not served.
    let (stage, _, client) = for_path(Client::new(Firmware::Unknown), "pxelinux.cfg/default");
    assert!(matches!(decide(&c, &client, stage).outcome, Outcome::Ignore { .. }));
}

#[test]
fn grub_config_paths() {
    let c = catalog();
    let (stage, _, client) = for_path(Client::new(Firmware::Unknown), "grub/grub.cfg-01-52-54-00-00-00-05");
    assert_eq!(stage, Stage::Grub);
    assert_eq!(decide(&c, &client, stage).outcome, boot_of(&c, "live", Arch::Arm64));
}

#[test]
fn decisions_are_deterministic() {
    let c = catalog();
    let client = uboot("52:54:00:00:00:05");
    assert_eq!(decide(&c, &client, Stage::Pxelinux), decide(&c, &client, Stage::Pxelinux));
}

mod boot_file_by_name {
    use super::*;
    use appliance_core::decide::decide_boot_file;

    fn nothing_overheard(m: &str) -> Client {
        Client::new(Firmware::Unknown).with_mac(mac(m), Learned::SourceAddress("10.0.0.50".parse().unwrap()))
    }

    #[test]
    fn firmware_known_from_overheard_dhcp_decides_as_dhcp() {
        let d = decide_boot_file(&catalog(), &ovmf_pxe("52:54:00:00:00:03"), BootFile::Undionly);
        assert_eq!(d.outcome, tftp(BootFile::IpxeEfi));
    }

    #[test]
    fn arm64_by_oui_rule_gets_grub_when_nothing_was_overheard() {
        let d = decide_boot_file(&catalog(), &nothing_overheard("b8:27:eb:00:00:09"), BootFile::Undionly);
        assert_eq!(d.arch_rule, Rule::Oui(oui("b8:27:eb")));
        assert_eq!(d.outcome, tftp(BootFile::GrubAa64));
    }

    #[test]
    fn x86_with_nothing_overheard_gets_the_name_it_asked_for() {
        let d = decide_boot_file(&catalog(), &nothing_overheard("52:54:00:00:00:01"), BootFile::IpxeEfi);
        assert_eq!(d.outcome, tftp(BootFile::IpxeEfi));
    }

    #[test]
    fn an_ignored_machine_stays_ignored() {
        let d = decide_boot_file(&catalog(), &nothing_overheard("52:54:00:00:00:06"), BootFile::Undionly);
        assert!(matches!(d.outcome, Outcome::Ignore { .. }), "{d:?}");
    }
}

#[test]
fn the_efi_binary_setting_picks_the_uefi_ipxe_build() {
    let catalog = |ipxe: &str| {
        let settings = format!("server: {{ address: 10.0.0.1 }}\ndhcp: {{ mode: proxy }}\n{ipxe}");
        validate_files(&[
            ("appliance.yaml", &settings),
            ("machines.yaml", "unknown: { profile: live }\n"),
            ("live.yaml", "name: live\narch:\n  x86_64:\n    kernel: { path: k }\n"),
            ("k", "kernel"),
        ])
        .unwrap()
    };
    for (ipxe, want) in [("", BootFile::IpxeEfi), ("ipxe: { efi_binary: snponly.efi }\n", BootFile::SnponlyEfi)] {
        let c = catalog(ipxe);
        assert_eq!(decide(&c, &ovmf_pxe("52:54:00:00:00:03"), Stage::Dhcp).outcome, tftp(want), "{ipxe}");
        assert_eq!(decide(&c, &uefi_http_x64("52:54:00:00:00:03"), Stage::Dhcp).outcome, http(want), "{ipxe}");
    }
}
