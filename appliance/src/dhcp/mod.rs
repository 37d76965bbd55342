//! DHCP for network boot: a full DHCP server, a ProxyDHCP server beside the site's own, or
//! silence (`off`) while overhearing requests so TFTP and HTTP know each client later.
//!
//! Layout, pure parts first:
//! - `wire`: decoding requests safely, encoding replies with ordered options.
//! - `reply`: the reply to one request and where it goes (PXE, iPXE, UEFI HTTP Boot and
//!   U-Boot specifics, docs/firmware.md#what-a-reply-must-carry).
//! - `leases`: the address allocator; `store`: its `leases.json`, written atomically.
//! - `exchange`: one request through leases, `decide` and `reply`, without I/O.
//! - `socket`: binding (SO_REUSEADDR, SO_BROADCAST, IP_PKTINFO, SO_BINDTODEVICE) and
//!   datagram I/O that keeps the ingress interface.
//! - `server`: the receive loop that does what `exchange` returns.
//! - `ra`: an IPv6 router advertisement that spares iPXE its ~13 s wait.
//!
//! Architecture invariant: what a machine boots is decided by `decide` only; nothing under
//! `dhcp` chooses a boot program, it only says in DHCP what `decide` chose.

pub mod exchange;
pub mod leases;
pub mod ra;
pub mod reply;
pub mod server;
mod socket;
pub mod store;
pub mod wire;

pub use server::{run, DhcpOptions, DhcpSockets};
pub use socket::{bind, DhcpSocket};

#[cfg(test)]
mod tests;
