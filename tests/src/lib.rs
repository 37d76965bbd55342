//! End-to-end boot tests: real firmware (SeaBIOS + iPXE, OVMF, U-Boot, ArmVirt EDK2) in QEMU,
//! netbooting from `appliance serve` on a private bridge in a network namespace, optionally
//! beside a foreign dnsmasq (the proxy and off columns). The cells are in
//! `tests/qemu_matrix.rs`; this library is the harness.
//!
//! | module    | what |
//! |-----------|------|
//! | `matrix`  | one cell end to end: prerequisites, config, namespaces, processes, verdict |
//! | `netns`   | namespaces, bridge, taps, veth to the site DHCP; removed on drop |
//! | `daemon`  | `appliance serve` in the namespace |
//! | `dnsmasq` | the site DHCP server (proxy and off columns) |
//! | `reference` | the reference stack (dnsmasq + Python HTTP), for comparisons |
//! | `qemu`    | firmware kinds and their QEMU command lines |
//! | `serial`  | the boot marker, KVM failure text, log tails |
//! | `config`  | the test's copy of `profiles/` |
//! | `host`    | workspace, target, bootloaders, blobs, output folders; what the host must have |
//! | `procs`   | child processes stopped by PID on drop; at most two VMs at a time |

pub mod config;
pub mod daemon;
pub mod dnsmasq;
pub mod host;
pub mod matrix;
pub mod netns;
pub mod procs;
pub mod qemu;
pub mod reference;
pub mod serial;
