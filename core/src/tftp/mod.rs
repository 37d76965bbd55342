//! TFTP without I/O: the wire codec ([`packet`]), the ERROR value ([`error`]), option
//! negotiation ([`options`]) and one read transfer's protocol as a state machine
//! ([`transfer`]). The daemon's `tftp` module drives these over sockets; the test client in
//! `testkit` speaks the same codec.

pub mod error;
pub mod options;
pub mod packet;
pub mod transfer;

pub use error::TftpError;
pub use options::{Limits, DEFAULT_BLKSIZE, DEFAULT_MAX_TIMEOUT, MAX_BLKSIZE, MIN_BLKSIZE};
pub use transfer::{wire_block, Outcome, Progress, Received, Transfer, Transmit};
