//! QEMU machines for tests and `cargo xtask vm`: which firmware boots them and what it needs
//! (`firmware`), their command line (`machine`), a running VM and what its serial console says
//! (`vm`, `console`).
//!
//! x86 guests run under TCG unless `BOOT_TESTS_ACCEL` says otherwise: KVM is a broken nested
//! hypervisor on the build machines (guests die with "KVM internal error" / "emulation
//! failure"), and a VM fails fast when QEMU reports that (`console::kvm_error`).

pub mod console;
pub mod firmware;
pub mod machine;
pub mod vm;

pub use firmware::Firmware;
pub use machine::{Disk, Link, Machine, Net, Nic, Serial, Side};
pub use vm::Vm;
