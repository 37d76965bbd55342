//! End-to-end boot tests: real firmware (SeaBIOS + iPXE, OVMF, U-Boot, ArmVirt EDK2) in QEMU,
//! netbooting from `appliance serve` on a private bridge in a network namespace, optionally
//! beside a foreign dnsmasq (the proxy and off columns). The cells are in
//! `tests/qemu_matrix.rs`; this library is the harness. QEMU, the namespaces and the child
//! processes come from `testkit`, shared with xtask's image tests.
//!
//! | module    | what |
//! |-----------|------|
//! | `matrix`  | one cell end to end: prerequisites, config, namespaces, processes, verdict |
//! | `lifecycle` | one machine installed from the network, booting its disk, re-armed |
//! | `client`  | the client machines: firmware, NIC, what the console shows on the cell's path |
//! | `daemon`  | `appliance serve` in the namespace |
//! | `browser` | headless Chromium reading the daemon's status pages after a boot |
//! | `dnsmasq` | the site DHCP server (proxy and off columns) |
//! | `installer` | installer cells: the Debian installer's mirror step, its preseed in the logs |
//! | `reference` | the reference stack (dnsmasq + Python HTTP), for comparisons |
//! | `config`  | the test's copy of `profiles/` |
//! | `host`    | workspace, target, bootloaders, blobs, output folders; what the host must have |

pub mod browser;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dnsmasq;
pub mod host;
pub mod installer;
pub mod lifecycle;
pub mod matrix;
pub mod reference;
