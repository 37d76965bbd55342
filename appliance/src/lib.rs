//! The network-boot appliance daemon: DHCP (server and proxy), TFTP and HTTP, driven by YAML
//! profiles. This crate owns sockets, files and clocks; everything that decides what a machine
//! gets and how it is said is the pure core, `appliance_core` (config validation, catalog,
//! client identification, `decide`, `render`, DHCP messages and leases), which the modules
//! here call with what they read from the world.
//!
//! - `config_dir`: reading a config directory for the core's validation; `kernel_signatures`:
//!   whether its kernels are signed, for the core's Secure Boot warnings.
//! - `artifacts`: the versioned artifact store on disk (publish, open, gc).
//! - `dhcp`, `tftp`, `http`: the servers; `admin`: the operators' API (re-arm); `serve`: the
//!   daemon that runs them; `fair_share`: the per-source and total limits on TFTP transfers and
//!   HTTP connections; `descriptors`: the file descriptor limit they are fitted to.
//! - `privileges`: becoming an unprivileged user once the sockets are bound.
//! - `state`: what the running daemon shares between tasks (with the metrics in `observe`); `latency`: the
//!   CPU wake-up latency request; `memory`: free heap pages handed back after load; `observe`:
//!   the boot journal, the metrics and the status pages.
//! - `install_store`: the install log (which machines are installed, their events) on disk;
//!   `secret_files`: the machine token key and the admin token; `atomic_file`: crash-safe
//!   writes of state files.
//! - `status_cli`: `appliance status`, the machines table of a running daemon.

pub mod admin;
pub mod artifacts;
pub mod atomic_file;
pub mod config_dir;
pub mod descriptors;
pub mod dhcp;
pub mod fair_share;
pub mod http;
pub mod install_store;
pub mod kernel_signatures;
pub mod latency;
pub mod memory;
pub mod observe;
pub mod privileges;
pub mod secret_files;
pub mod serve;
pub mod state;
pub mod status_cli;
pub mod tftp;
