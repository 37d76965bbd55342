//! The appliance's pure core: everything that decides what a machine gets and how it is said,
//! and nothing that touches the world.
//!
//! Architecture invariant: no I/O and no clock. Files arrive as bytes, time as an argument,
//! and answers leave as values; the daemon crate (`appliance`) owns sockets, files and clocks.
//! The compiler keeps it so: this crate's manifest has no async runtime, socket or mapping
//! crate, `unsafe` is forbidden, and the file, clock, process and environment calls listed in
//! `clippy.toml` are denied.

#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod tftp;
