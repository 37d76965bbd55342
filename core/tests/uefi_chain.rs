//! The UEFI boot chain (`uefi_chain: ipxe | shim`): where it is set (globally, per vendor rule,
//! per machine, for unknown machines), which program each UEFI client gets on it, which rule
//! chose it, how `explain` says it, and how a bad value is reported.

mod common;

use appliance_core::arch::Arch;
use appliance_core::boot_file::BootFile;
use appliance_core::catalog::Catalog;
use appliance_core::decide::{decide, decide_boot_file, ChainChoice, Outcome, Rule, Stage, Transport};
use appliance_core::explain::{explain, Query};
use appliance_core::mac::Oui;
use appliance_core::uefi_chain::UefiChain;
use common::*;

const PROFILE: &str = "name: live\narch:\n  x86_64:\n    kernel: { path: k }\n  arm64:\n    kernel: { path: k }\n";
const MACHINES: &str = "\
machines:
  \"52:54:00:00:00:01\": { hostname: sb1, profile: live, uefi_chain: shim }
  \"52:54:00:00:00:02\": { hostname: plain1, profile: live }
  \"52:54:00:00:00:03\": { hostname: pinned1, profile: live, uefi_chain: ipxe }
  \"52:54:00:00:00:04\": { hostname: gone1, action: ignore }
vendors:
  - { oui: \"52:54:01\", uefi_chain: shim }
  - { oui: \"52:54:02\", arch: arm64 }
unknown: { profile: live, uefi_chain: shim }
";

/// The test catalog with `settings` added to the minimal `appliance.yaml`.
fn catalog_with(settings: &str, machines: &str) -> Catalog {
    let settings = format!("server: {{ address: 10.0.0.1 }}\ndhcp: {{ mode: proxy }}\n{settings}");
    validate_files(&[("appliance.yaml", &settings), ("machines.yaml", machines), ("live.yaml", PROFILE), ("k", "k")])
        .unwrap_or_else(|e| panic!("{e}"))
}

fn chain_of(c: &Catalog, client: &appliance_core::client::Client) -> (Outcome, ChainChoice) {
    let d = decide(c, client, Stage::Dhcp);
    (d.outcome, d.uefi_chain.expect("a UEFI client's decision names its chain"))
}

fn tftp(file: BootFile) -> Outcome {
    Outcome::BootFile { file, transport: Transport::Tftp }
}

#[test]
fn the_entry_then_the_vendor_rule_then_the_unknown_policy_then_the_global_setting() {
    let c = catalog_with("", MACHINES);
    let cases = [
        // The machine's own entry.
        ("52:54:00:00:00:01", UefiChain::Shim, Rule::ExactMac(mac("52:54:00:00:00:01"))),
        ("52:54:00:00:00:03", UefiChain::Ipxe, Rule::ExactMac(mac("52:54:00:00:00:03"))),
        // A known machine without one: not the unknown-machine policy's, the global default.
        ("52:54:00:00:00:02", UefiChain::Ipxe, Rule::Global),
        // Its vendor's rule.
        ("52:54:01:00:00:09", UefiChain::Shim, Rule::Oui(Oui::parse("52:54:01").unwrap())),
        // An unknown machine: the policy's.
        ("52:54:00:99:00:01", UefiChain::Shim, Rule::UnknownPolicy),
        ("52:54:02:00:00:01", UefiChain::Shim, Rule::UnknownPolicy),
    ];
    for (m, chain, rule) in cases {
        let (_, choice) = chain_of(&c, &ovmf_pxe(m));
        assert_eq!(choice, ChainChoice { chain, rule }, "{m}");
    }
    // The global setting, when set, replaces the default for everyone the rest leaves open.
    let c = catalog_with("uefi_chain: shim\n", MACHINES);
    assert_eq!(
        chain_of(&c, &ovmf_pxe("52:54:00:00:00:02")).1,
        ChainChoice { chain: UefiChain::Shim, rule: Rule::Global }
    );
    assert_eq!(chain_of(&c, &ovmf_pxe("52:54:00:00:00:03")).1.chain, UefiChain::Ipxe);
}

#[test]
fn each_uefi_client_gets_the_first_program_of_its_chain() {
    let c = catalog_with("", MACHINES);
    let http = |file| Outcome::BootFile { file, transport: Transport::Http };
    let cases = [
        (ovmf_pxe("52:54:00:00:00:01"), tftp(BootFile::ShimX64)),
        // UEFI HTTP Boot on the shim chain: the boot image around shim (Debian's signed GRUB
        // cannot go on over HTTP).
        (uefi_http_x64("52:54:00:00:00:01"), Outcome::BootImage { shim: BootFile::ShimX64 }),
        (armvirt_edk2("52:54:00:00:00:01"), tftp(BootFile::ShimAa64)),
        (uefi_http_arm64("52:54:00:00:00:01"), Outcome::BootImage { shim: BootFile::ShimAa64 }),
        // The vendor rule says arm64 (option 93 says x64): shim for arm64.
        (ovmf_pxe("52:54:02:00:00:01"), tftp(BootFile::ShimAa64)),
        // On the ipxe chain, today's programs.
        (ovmf_pxe("52:54:00:00:00:02"), tftp(BootFile::IpxeEfi)),
        (armvirt_edk2("52:54:00:00:00:02"), tftp(BootFile::GrubAa64)),
        (uefi_http_x64("52:54:00:00:00:03"), http(BootFile::IpxeEfi)),
    ];
    for (client, want) in cases {
        assert_eq!(chain_of(&c, &client).0, want, "{client:?}");
    }
}

#[test]
fn the_chain_is_for_uefi_firmware_only() {
    let c = catalog_with("uefi_chain: shim\n", MACHINES);
    // BIOS, iPXE and U-Boot are not asked; GRUB's config stages neither.
    for client in
        [seabios_ipxe_rom("52:54:00:00:00:01"), bios_stock_pxe("52:54:00:00:00:01"), uboot("52:54:00:00:00:01")]
    {
        let d = decide(&c, &client, Stage::Dhcp);
        assert_eq!(d.uefi_chain, None, "{client:?}");
        assert!(!matches!(d.outcome, Outcome::BootFile { file, .. } if file.is_signed()), "{d:?}");
    }
    assert_eq!(decide(&c, &ovmf_pxe("52:54:00:00:00:01"), Stage::Grub).uefi_chain, None);
    // The MAC database still wins over the chain: an ignored machine gets nothing.
    assert!(matches!(decide(&c, &ovmf_pxe("52:54:00:00:00:04"), Stage::Dhcp).outcome, Outcome::Ignore { .. }));
}

#[test]
fn shims_grub_is_served_under_its_name_even_where_the_site_names_one_file_for_all() {
    let c = catalog_with("", MACHINES);
    // --dhcp off: the site's one name gets shim for a machine on the shim chain...
    assert_eq!(
        decide_boot_file(&c, &ovmf_pxe("52:54:00:00:00:01"), BootFile::Undionly).outcome,
        tftp(BootFile::ShimX64)
    );
    // ...and shim's request for its GRUB gets that GRUB, not shim again, whatever we know of
    // the machine.
    let nothing = appliance_core::client::Client::new(appliance_core::arch::Firmware::Unknown);
    for client in [ovmf_pxe("52:54:00:00:00:01"), nothing] {
        let d = decide_boot_file(&c, &client, BootFile::SignedGrubX64);
        assert_eq!(d.outcome, tftp(BootFile::SignedGrubX64), "{client:?}");
    }
    let ignored = decide_boot_file(&c, &ovmf_pxe("52:54:00:00:00:04"), BootFile::SignedGrubX64);
    assert!(matches!(ignored.outcome, Outcome::Ignore { .. }), "{ignored:?}");
}

fn explained(c: &Catalog, m: &str, arch: u16, vendor: &str) -> String {
    let q = Query { mac: Some(mac(m)), client_arch: Some(arch), vendor_class: Some(vendor.into()), ..Query::default() };
    explain(c, &q).unwrap()
}

#[test]
fn explain_shows_the_chain_its_rule_and_what_secure_boot_makes_of_it() {
    let c = catalog_with("", MACHINES);
    let ipxe = explained(&c, "52:54:00:00:00:02", 7, "PXEClient:Arch:00007:UNDI:003000");
    assert!(ipxe.contains("  uefi chain:   ipxe by appliance.yaml\n"), "{ipxe}");
    assert!(ipxe.contains("ipxe.efi is unsigned: firmware with Secure Boot on refuses it (Access Denied)"), "{ipxe}");
    let shim = explained(&c, "52:54:00:00:00:01", 7, "PXEClient:Arch:00007:UNDI:003000");
    assert!(shim.contains("  hands out:    boot file shimx64.efi by TFTP from 10.0.0.1\n"), "{shim}");
    assert!(shim.contains("  uefi chain:   shim by MAC database entry 52:54:00:00:00:01\n"), "{shim}");
    assert!(shim.contains("loads grubx64.efi (Debian-signed GRUB)"), "{shim}");
    // What that GRUB reads next: the machine's config.
    assert!(shim.contains("then, at the grub.cfg stage:"), "{shim}");
    assert!(shim.contains("linux /artifacts/live/"), "{shim}");
    let http = explained(&c, "52:54:00:00:00:01", 16, "HTTPClient:Arch:00016:UNDI:003001");
    let url = "boot image http://10.0.0.1/boot-image/52-54-00-00-00-01.x86_64.img by HTTP";
    assert!(http.contains(&format!("  hands out:    {url}")), "{http}");
    assert!(http.contains("come in a RAM-disk boot image"), "{http}");
    // The image's files, the config's kernel among them at the path the config names.
    assert!(http.contains("\nEFI/BOOT/BOOTX64.EFI  (shimx64.efi, Microsoft-signed)\n"), "{http}");
    assert!(http.contains("\nEFI/BOOT/grubx64.efi  (Debian-signed)\n"), "{http}");
    let kernel = http.lines().find(|l| l.starts_with("artifacts/live/")).expect("the kernel in the image");
    assert!(http.contains(&format!("linux /{kernel}")), "{http}");
    let arm = explained(&c, "52:54:00:00:00:02", 11, "PXEClient:Arch:00011:UNDI:003000");
    assert!(arm.contains("grubnetaa64.efi is unsigned"), "{arm}");
    assert_eq!(c.profile("live").unwrap().arches.len(), 2);
    assert!(c.profile_set("live", Arch::Arm64).is_some());
}

#[test]
fn a_bad_chain_is_an_error_at_its_position() {
    let machines = "machines:\n  \"52:54:00:00:00:01\": { profile: live, uefi_chain: signed }\n";
    let files = [
        ("appliance.yaml", "server: { address: 10.0.0.1 }\ndhcp: { mode: proxy }\nuefi_chain: grub\n"),
        ("machines.yaml", machines),
        ("live.yaml", PROFILE),
        ("k", "k"),
    ];
    let errs = validate_files(&files).unwrap_err().0;
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let find = |file: &str, line: usize, col: usize, field: &str| {
        errs.iter().any(|e| {
            e.file.ends_with(file)
                && (e.line, e.col) == (line, col)
                && e.field == field
                && e.message.contains("expected `ipxe` or `shim`")
        })
    };
    assert!(find("appliance.yaml", 3, 13, "uefi_chain"), "{text:#?}");
    assert!(find("machines.yaml", 2, 41, "machines.\"52:54:00:00:00:01\".uefi_chain"), "{text:#?}");
}

#[test]
fn render_writes_the_signed_grubs_config_for_x86_machines_on_the_shim_chain() {
    let names = |c: &Catalog| -> Vec<String> {
        appliance_core::explain::render_all(c).unwrap().into_iter().map(|f| f.path).collect()
    };
    let shim = names(&catalog_with("", MACHINES));
    for want in ["tftp/grub/grub.cfg-01-52-54-00-00-00-01.x86_64", "tftp/grub/grub.cfg.x86_64"] {
        assert!(shim.contains(&want.to_string()), "{want} not in {shim:#?}");
    }
    // A machine on the ipxe chain has only its iPXE script.
    assert!(!shim.iter().any(|p| p.starts_with("tftp/grub/grub.cfg-01-52-54-00-00-00-02.x86_64")), "{shim:#?}");
    let plain = names(&catalog_with("", "unknown: { profile: live }\n"));
    assert!(!plain.contains(&"tftp/grub/grub.cfg.x86_64".to_string()), "{plain:#?}");
}
