//! `check`'s Secure Boot warnings: every entry that puts a machine on the shim chain with a
//! profile whose kernel has no Authenticode signature is named by file and line, with the
//! kernel's own position; signed kernels and the ipxe chain give nothing.

mod common;

use appliance_core::catalog::Catalog;
use appliance_core::pe::{Authenticode, PeError};
use appliance_core::secure_boot::{kernels, unsigned_kernel_warnings, KernelFact, KernelFacts};
use common::*;

const SIGNED: &str = "name: signed\narch:\n  x86_64:\n    kernel: { path: signed.img }\n";
const PLAIN: &str =
    "name: plain\narch:\n  x86_64:\n    kernel: { path: plain.img }\n  arm64:\n    kernel: { path: plain-arm.img }\n";
const MENUS: &str = "menus:\n  default:\n    entries:\n      - profile: signed\n      - profile: plain\n";

fn catalog(settings: &str, machines: &str) -> Catalog {
    let settings = format!("server: {{ address: 10.0.0.1 }}\ndhcp: {{ mode: proxy }}\n{settings}");
    validate_files(&[
        ("appliance.yaml", &settings),
        ("machines.yaml", machines),
        ("menus.yaml", MENUS),
        ("signed.yaml", SIGNED),
        ("plain.yaml", PLAIN),
        ("signed.img", "signed kernel"),
        ("plain.img", "plain kernel"),
        ("plain-arm.img", "plain arm64 kernel"),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The kernel of `signed` is signed, the others are not.
fn facts(c: &Catalog) -> KernelFacts {
    let signed = c.profile("signed").unwrap().arches.values().next().unwrap().kernel.digest;
    kernels(c)
        .map(|k| {
            let fact = if k.digest == signed {
                KernelFact::Pe(Authenticode::Signed { offset: 4096, len: 1472 })
            } else {
                KernelFact::Pe(Authenticode::Unsigned)
            };
            (k.digest, fact)
        })
        .collect()
}

fn warnings(c: &Catalog) -> Vec<String> {
    unsigned_kernel_warnings(c, &facts(c)).iter().map(|w| w.to_string()).collect()
}

#[test]
fn each_entry_on_the_shim_chain_that_reaches_an_unsigned_kernel_is_named() {
    let machines = "\
machines:
  \"52:54:00:00:00:01\": { profile: plain, uefi_chain: shim }
  \"52:54:00:00:00:02\": { profile: signed, uefi_chain: shim }
  \"52:54:00:00:00:03\": { profile: plain }
  \"52:54:00:00:00:04\": { profile: plain, arch: arm64, uefi_chain: shim }
vendors:
  - { oui: \"52:54:01\", menu: default, uefi_chain: shim }
unknown: { profile: plain, uefi_chain: shim }
";
    let w = warnings(&catalog("", machines));
    let want = [
        "/config/machines.yaml:2:3: machines.\"52:54:00:00:00:01\": uefi_chain shim (by MAC database entry \
         52:54:00:00:00:01), but profile plain (x86_64) boots a kernel without an Authenticode signature \
         (/config/plain.yaml:4:5: arch.x86_64.kernel): shim refuses it when Secure Boot is on",
        "/config/machines.yaml:2:3: machines.\"52:54:00:00:00:01\": uefi_chain shim (by MAC database entry \
         52:54:00:00:00:01), but profile plain (arm64) boots a kernel without an Authenticode signature \
         (/config/plain.yaml:6:5: arch.arm64.kernel): shim refuses it when Secure Boot is on",
        // Its arch is known: only the arm64 kernel.
        "/config/machines.yaml:5:3: machines.\"52:54:00:00:00:04\": uefi_chain shim (by MAC database entry \
         52:54:00:00:00:04), but profile plain (arm64) boots a kernel without an Authenticode signature \
         (/config/plain.yaml:6:5: arch.arm64.kernel): shim refuses it when Secure Boot is on",
    ];
    assert_eq!(&w[..3], &want, "{w:#?}");
    // The vendor rule's menu reaches plain (both architectures), not signed.
    let vendor: Vec<&String> = w.iter().filter(|l| l.starts_with("/config/machines.yaml:7:5: vendors[0]")).collect();
    assert_eq!(vendor.len(), 2, "{w:#?}");
    assert!(vendor.iter().all(|l| l.contains("(by vendor rule 52:54:01)") && l.contains("profile plain")), "{w:#?}");
    let policy: Vec<&String> = w.iter().filter(|l| l.starts_with("/config/machines.yaml:8:1: unknown")).collect();
    assert_eq!(policy.len(), 2, "{w:#?}");
    assert!(policy[0].contains("(by unknown-machine policy)"), "{w:#?}");
    assert_eq!(w.len(), 7, "{w:#?}");
}

#[test]
fn the_global_setting_puts_every_open_entry_on_the_shim_chain() {
    let machines = "machines:\n  \"52:54:00:00:00:03\": { profile: plain, arch: x86_64 }\nunknown: { action: local }\n";
    assert_eq!(warnings(&catalog("", machines)), Vec::<String>::new());
    let w = warnings(&catalog("uefi_chain: shim\n", machines));
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0]
        .starts_with("/config/machines.yaml:2:3: machines.\"52:54:00:00:00:03\": uefi_chain shim (by appliance.yaml)"));
}

#[test]
fn a_kernel_that_cannot_be_read_or_is_no_pe_image_says_so() {
    let c = catalog("", "unknown: { profile: plain, uefi_chain: shim }\n");
    let mut f = facts(&c);
    let plain = c.profile("plain").unwrap();
    let x86 = plain.arches[&appliance_core::arch::Arch::X86_64].kernel.digest;
    let arm = plain.arches[&appliance_core::arch::Arch::Arm64].kernel.digest;
    f.insert(x86, KernelFact::NotPe(PeError::NoMz));
    f.insert(arm, KernelFact::Unreadable("blob 1234 not fetched".into()));
    let w: Vec<String> = unsigned_kernel_warnings(&c, &f).iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "/config/machines.yaml:1:1: unknown: uefi_chain shim (by unknown-machine policy), but profile plain \
             (x86_64) boots a kernel that is no EFI program (not a PE image (no MZ header)) \
             (/config/plain.yaml:4:5: arch.x86_64.kernel): shim refuses it when Secure Boot is on",
            "/config/plain.yaml:6:5: arch.arm64.kernel: cannot tell whether this kernel is signed for Secure Boot: \
             blob 1234 not fetched",
        ]
    );
}
