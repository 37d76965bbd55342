//! Our daemon against the reference stack (dnsmasq DHCP + TFTP with RA and
//! no-pxedhcp, Python HTTP) on the same cells, one VM at a time, alternating, several rounds:
//! a measurement, not part of `cargo xtask test`. Run it as root with
//!
//! ```sh
//! BOOT_TESTS_VMS=1 cargo test -p boot-tests --test reference_stack -- --ignored --nocapture
//! ```
//!
//! (`REFERENCE_ROUNDS`, default 3; `REFERENCE_CASES=a,b` picks cases by name). Every run of
//! either stack must boot the right payload, or for the `debian_installer_*` cases bring the
//! Debian installer to its mirror step with the preseed fetched (`boot_tests::installer`);
//! the table goes to stdout and `target/qemu-tests/reference-comparison.md`.

use appliance_core::catalog::DhcpMode::Server;
use boot_tests::client::Client::{self, ArmVirtEdk2, OvmfPxe, SeaBiosIpxeRom, UBootArm64};
use boot_tests::matrix::Cell;
use std::fmt::Write as _;

struct Case {
    name: &'static str,
    client: Client,
    mac: &'static str,
    /// The machine's entry; `None`: the example entry of `profiles/machines.yaml`.
    entry: Option<&'static str>,
    /// The reference stack's figure for the cell as observed before this test existed (tuned where
    /// it has one; docs/benchmarks.md#reference-stack-observed-figures).
    firmware_md: Option<f64>,
    /// The Debian installer to its mirror step instead of the payload's marker.
    installer: bool,
}

/// A Debian installer case on the example machine `mac` of `profiles/machines.yaml`. No
/// figure was observed per firmware before: the issue gives one pair for the mirror step, 86 s
/// reference and 71 s ours, without the firmware.
const fn installer(name: &'static str, client: Client, mac: &'static str) -> Case {
    Case { name, client, mac, entry: None, firmware_md: None, installer: true }
}

const CASES: &[Case] = &[
    Case {
        name: "seabios_ipxe_rom",
        client: SeaBiosIpxeRom,
        mac: "52:54:00:4d:11:01",
        entry: Some("{ hostname: bios-ipxe, profile: tiny-live }"),
        firmware_md: Some(6.3),
        installer: false,
    },
    Case {
        name: "seabios_chain_undionly",
        client: SeaBiosIpxeRom,
        mac: "52:54:00:4d:12:01",
        entry: Some("{ hostname: bios-chain, profile: tiny-live, chain_ipxe: true }"),
        firmware_md: Some(16.2),
        installer: false,
    },
    Case {
        name: "ovmf_pxe",
        client: OvmfPxe,
        mac: "52:54:00:4d:13:01",
        entry: Some("{ hostname: uefi-pxe, profile: tiny-live }"),
        firmware_md: Some(17.1),
        installer: false,
    },
    Case {
        name: "armvirt_grub",
        client: ArmVirtEdk2,
        mac: "52:54:00:4d:16:01",
        // The architecture in the entry: the reference's files are mirrored from our daemon
        // before any DHCP, and without it the daemon answers a GRUB config request for an
        // unknown architecture with "not found" (ARCHITECTURE.md).
        entry: Some("{ hostname: armvirt, arch: arm64, profile: tiny-live }"),
        firmware_md: Some(16.5),
        installer: false,
    },
    installer("debian_installer_seabios", SeaBiosIpxeRom, "52:54:00:77:00:11"),
    installer("debian_installer_ovmf", OvmfPxe, "52:54:00:77:00:12"),
    installer("debian_installer_uboot", UBootArm64, "52:54:00:77:00:13"),
    installer("debian_installer_armvirt", ArmVirtEdk2, "52:54:00:77:00:14"),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", ")
}

#[test]
#[ignore = "a comparison run (minutes of VMs), not a check: see the module documentation"]
fn ours_against_the_reference_stack() {
    let rounds: usize = std::env::var("REFERENCE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let only = std::env::var("REFERENCE_CASES").ok();
    let mut table = String::from(
        "| cell (server mode) | observed earlier | reference stack here, median | ours, median | ours / reference | \
         reference runs | our runs |\n|---|---|---|---|---|---|---|\n",
    );
    for case in CASES.iter().filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == c.name))) {
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // One output folder per run: `target/qemu-tests/cmp_<case>_r<round>[-reference]`.
            let name = format!("cmp_{}_r{round}", case.name);
            let cell = || {
                let c = match case.entry {
                    Some(entry) => Cell::new(&name, case.client, Server).machine(case.mac, entry),
                    None => Cell::new(&name, case.client, Server).mac(case.mac),
                };
                if case.installer {
                    c.expect_installer()
                } else {
                    c
                }
            };
            // Alternate which stack goes first, so neither always follows the other.
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for use_reference in order {
                let c = if use_reference { cell().reference() } else { cell() };
                let t = c.run().time_to_marker.expect("a boot cell reports its time").as_secs_f64();
                if use_reference {
                    reference.push(t)
                } else {
                    ours.push(t)
                }
            }
        }
        let (o, r) = (median(&mut ours.clone()), median(&mut reference.clone()));
        let _ = writeln!(
            table,
            "| {} | {} | {r:.1} | {o:.1} | {:.2}x | {} | {} |",
            case.name,
            case.firmware_md.map_or("—".to_string(), |t| format!("{t:.1}")),
            o / r,
            list(&reference),
            list(&ours)
        );
    }
    println!("\n{table}");
    let path = boot_tests::host::target_dir().join("qemu-tests/reference-comparison.md");
    std::fs::write(&path, &table).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
