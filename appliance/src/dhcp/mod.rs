//! DHCP for network boot, the part with sockets and files: a full DHCP server, a ProxyDHCP
//! server beside the site's own, or silence (`off`) while overhearing requests so TFTP and HTTP
//! know each client later. What a request means and what it gets (decoding, leases, the reply)
//! is the core's `appliance_core::dhcp`; this module does what that returns.
//!
//! - `store`: the lease table's `leases.json`, written atomically.
//! - `socket`: binding (SO_REUSEADDR, SO_BROADCAST, IP_PKTINFO, SO_BINDTODEVICE) and
//!   datagram I/O that keeps the ingress interface.
//! - `server`: the receive loop that does what `appliance_core::dhcp::exchange` returns.
//! - `observe`: the metrics and journal record of each exchange.
//! - `ra`: an IPv6 router advertisement that spares iPXE its ~13 s wait.
//!
//! Architecture invariant: what a machine boots is decided by `decide` only; nothing under
//! `dhcp` chooses a boot program, it only says in DHCP what `decide` chose.

mod observe;
pub mod ra;
pub mod server;
mod socket;
pub mod store;

pub use server::{run, DhcpOptions, DhcpSockets};
pub use socket::{bind, DhcpSocket};

#[cfg(test)]
mod tests;
