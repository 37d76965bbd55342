//! DHCP for network boot, the part without sockets: what a request means and what it gets.
//! The daemon (`appliance::dhcp`) owns the sockets, the receive loop and the lease file.
//!
//! - `wire`: decoding requests safely, encoding replies with ordered options.
//! - `reply`: the reply to one request and where it goes (PXE, iPXE, UEFI HTTP Boot and
//!   U-Boot specifics).
//! - `leases`: the address allocator (fixed addresses, held offers, quarantined declines).
//! - `exchange`: one request through leases, `decide` and `reply`, returning what the caller
//!   must do (send, persist, remember).
//!
//! Architecture invariant: what a machine boots is decided by `decide` only; nothing under
//! `dhcp` chooses a boot program, it only says in DHCP what `decide` chose.

pub mod exchange;
pub mod leases;
pub mod reply;
pub mod wire;

/// Request bytes as each firmware sends them, and a test catalog: shared by the reply tests
/// here and the daemon's tests of the whole server on loopback (feature `fixtures`).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
