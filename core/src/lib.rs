//! The appliance's pure core: everything that decides what a machine gets and how it is said,
//! and nothing that touches the world.
//!
//! - `mac`, `arch`: MAC addresses and OUIs; architectures, firmware kinds, DHCP option 93.
//! - `config`: the YAML wire format and its validation into a `catalog::Catalog`, with errors
//!   that name file, line, column and field.
//! - `client`: who is asking, from a DHCP message, a TFTP path or an iPXE query.
//! - `decide`: what a client gets at a stage of its boot; `render`: the boot configs that say it;
//!   `boot_file`: the boot programs handed out, by name; `uefi_chain`: which of them a UEFI
//!   machine gets (iPXE, or shim and signed GRUB for Secure Boot); `boot_image`: the RAM-disk
//!   image (shim, GRUB, config, kernel) a UEFI HTTP Boot client on the shim chain gets.
//! - `explain`: `decide` and `render` for a client described by hand (the CLI's `explain`).
//! - `version`, `cpio`: content-derived artifact versions and a deterministic cpio writer.
//! - `dhcp`: DHCP decoding, replies, the lease allocator and one request's whole exchange.
//! - `gc`: which artifact versions may be removed; `calendar`: dates from Unix time and back.
//! - `journal`: the boot journal's records, the bounded per-machine model and summaries;
//!   `status`: the status pages and the JSON API built from it.
//! - `http_path`: which HTTP request paths may be served at all.
//! - `fair_share`: who gets a TFTP transfer or HTTP connection when they run short;
//!   `log_text`: client-supplied text escaped and bounded for logs; `rate_limit`: repeated
//!   warnings per source, with counts of what was left out.
//! - `pe`, `secure_boot`: whether a kernel carries an Authenticode signature (from bytes the
//!   daemon reads), and the warnings for machines on the shim chain whose kernel does not.
//! - `answers`: per-machine answer files (preseed, cloud-init, kickstart, Ignition) from the
//!   operator's templates; `token`: the per-machine token installers report with; `events`:
//!   what they report; `install`: which machines are installed and boot their disk until
//!   re-armed.
//!
//! Architecture invariant: no I/O and no clock. Files arrive as bytes, time as an argument,
//! and answers leave as values; the daemon crate (`appliance`) owns sockets, files and clocks.
//! The compiler keeps it so: this crate's manifest has no async runtime, socket or mapping
//! crate, `unsafe` is forbidden, and the file, clock, process and environment calls listed in
//! `clippy.toml` are denied.

#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod answers;
pub mod arch;
pub mod boot_file;
pub mod boot_image;
pub mod calendar;
pub mod catalog;
pub mod client;
pub mod config;
pub mod cpio;
pub mod decide;
pub mod dhcp;
pub mod events;
pub mod explain;
pub mod fair_share;
pub mod gc;
pub mod http_path;
pub mod install;
pub mod journal;
pub mod log_text;
pub mod mac;
pub mod pe;
pub mod rate_limit;
pub mod render;
pub mod secure_boot;
pub mod status;
pub mod tftp;
pub mod token;
pub mod uefi_chain;
pub mod version;
