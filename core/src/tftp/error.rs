//! The ERROR packet's content as a value: a [`TftpError`] (code and message), with the codes
//! RFC 1350 and RFC 2347 name.
//!
//! This module owns only the type. Who sends which error is the transfer's business
//! (`transfer`) and the daemon's (a handler refusing a path).

use std::fmt;

/// A TFTP ERROR (code and message), sent to the client or received from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpError {
    pub code: u16,
    pub message: String,
}

impl TftpError {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const DISK_FULL: u16 = 3;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const UNKNOWN_TID: u16 = 5;
    pub const FILE_EXISTS: u16 = 6;
    pub const NO_SUCH_USER: u16 = 7;
    pub const OPTION_REFUSED: u16 = 8;

    pub fn new(code: u16, message: impl Into<String>) -> Self {
        TftpError { code, message: message.into() }
    }

    /// Code 0 with a free-form message.
    pub fn undefined(message: impl Into<String>) -> Self {
        Self::new(Self::NOT_DEFINED, message)
    }

    pub fn not_found() -> Self {
        Self::new(Self::FILE_NOT_FOUND, "File not found")
    }

    pub fn access_violation(message: impl Into<String>) -> Self {
        Self::new(Self::ACCESS_VIOLATION, message)
    }

    pub fn illegal_operation(message: impl Into<String>) -> Self {
        Self::new(Self::ILLEGAL_OPERATION, message)
    }

    pub fn unknown_tid() -> Self {
        Self::new(Self::UNKNOWN_TID, "Unknown transfer ID")
    }

    pub fn option_refused(message: impl Into<String>) -> Self {
        Self::new(Self::OPTION_REFUSED, message)
    }

    /// The wire form of this error.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.message.len());
        super::packet::encode_error(&mut out, self.code, &self.message);
        out
    }
}

impl fmt::Display for TftpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TFTP error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for TftpError {}
