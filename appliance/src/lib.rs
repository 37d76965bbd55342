//! The network-boot appliance: DHCP (server and proxy), TFTP and HTTP, driven by YAML profiles.
//!
//! The pure core (`mac`, `arch`, `client`, `catalog`, `config::validate`, `decide`, `render`,
//! `version`, `cpio`) does no I/O and is tested without sockets; see ARCHITECTURE.md.

pub mod arch;
pub mod artifacts;
pub mod catalog;
pub mod client;
pub mod config;
pub mod cpio;
pub mod decide;
pub mod dhcp;
pub mod explain;
pub mod http;
pub mod latency;
pub mod mac;
pub mod render;
pub mod serve;
pub mod state;
pub mod tftp;
pub mod version;
