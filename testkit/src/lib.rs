//! Test support shared by the daemon's tests, the QEMU boot tests (`tests/`) and `xtask`
//! (image tests and benchmarks): one copy of each helper, so the boot tests and the image
//! tests start QEMU, build namespaces and stop processes the same way.

pub mod tftp_client;
