//! Test support shared by the daemon's tests, the QEMU boot tests (`tests/`) and `xtask`
//! (image tests and benchmarks): one copy of each helper, so the boot tests and the image
//! tests start QEMU, build namespaces and stop processes the same way.
//!
//! | module  | what |
//! |---------|------|
//! | `procs` | child processes stopped by PID on drop, hard lifetimes, logs, the VM slots |
//! | `netns` | network namespaces (deleted on drop, stale ones of killed runs removed), veth pairs |
//! | `lab`   | a bridge for VMs in a namespace, with taps and an optional second host |
//! | `qemu`  | firmware, QEMU command lines, running VMs and their serial consoles |
//! | `tftp_client` | a TFTP client with loss simulation, for the daemon's tests and the bench |
//!
//! Architecture invariant: nothing here depends on the `appliance` crate, so the daemon's own
//! tests can use this crate.

pub mod lab;
pub mod netns;
pub mod procs;
pub mod qemu;
pub mod tftp_client;
