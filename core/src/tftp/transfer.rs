//! One read transfer's protocol as a state machine without I/O, in the manner of quinn-proto:
//! the driver feeds it what arrived ([`Transfer::handle`]) and the passing of time
//! ([`Transfer::handle_timeout`]), and asks it what to send ([`Transfer::poll_transmit`]) and
//! when to wake it next ([`Transfer::poll_timeout`]), until [`Transfer::outcome`] says it ended.
//!
//! This module owns what a transfer sends and when: the OACK and its acknowledgement (ACK 0),
//! the RFC 7440 send window over block numbers that roll over, retransmission on timeout and
//! the retry limit, what a duplicate or stale ACK does, ending at once on a client ERROR, the
//! ERROR the server sends when it refuses, stops or fails, and the transfer's metrics. It must
//! not touch sockets, files or clocks: the driver owns those (the daemon has two, an async one
//! and a blocking lockstep thread, with their own syscall-level tricks), reads the time and
//! hands it in, and fills the DATA blocks it is told to send from its own copy of the content.
//!
//! Time is a [`Duration`] since an epoch the driver chooses (its transfer's start), on a
//! monotonic clock; tests drive it by hand.
//!
//! Block numbers: blocks are counted from 1 without limit ([`Transmit::Data`]); on the wire
//! block `n` is `n mod 65536` ([`wire_block`]), so after 65535 comes 0, then 1, as tftpd-hpa
//! and the firmware clients we serve do it. An ACK's 16-bit number is read relative to the
//! last acknowledged block, so it is unambiguous within a window.

use std::fmt;
use std::time::Duration;

use super::error::TftpError;
use super::options::{negotiate, Limits};
use super::packet::{self, DecodeError, Packet};
use crate::log_text::escaped;

#[cfg(test)]
mod tests;

/// The 16-bit number that carries block `block` (counted from 1) on the wire.
pub fn wire_block(block: u64) -> u16 {
    block as u16
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client answered an OACK that carried tsize with ERROR 8 (option refused): it only
    /// wanted the size. EDK2 firmware does this before every real download.
    SizeProbe { message: String },
    /// The client ended the transfer with an ERROR packet.
    ClientError { code: u16, message: String },
    /// `sends` copies of the OACK (`block` 0) or of the window starting at DATA `block` went
    /// unacknowledged: the retry limit.
    TimedOut { block: u64, sends: u32 },
    /// The request was answered with an ERROR and no data: a WRQ, an unsupported mode, or a
    /// path the server refused.
    Refused(TftpError),
    /// Local failure (socket or file read); the client was sent ERROR 0.
    Failed(String),
    /// The server was shut down mid-transfer; the client was sent ERROR 0.
    Shutdown,
    /// Ended to make room for a new request after making no progress for a while (see
    /// `fair_share`); the client was sent ERROR 0.
    Evicted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Complete => f.write_str("complete"),
            // The messages are the client's: escaped and bounded, as everything logged is.
            Outcome::SizeProbe { message } => {
                write!(f, "size probe (client error 8 after the OACK: {})", escaped(message))
            }
            Outcome::ClientError { code, message } => write!(f, "client error {code} ({})", escaped(message)),
            Outcome::TimedOut { block: 0, sends } => write!(f, "timed out (OACK sent {sends} times)"),
            Outcome::TimedOut { block, sends } => write!(f, "timed out (block {block} sent {sends} times)"),
            Outcome::Refused(e) => write!(f, "refused with error {} ({})", e.code, e.message),
            Outcome::Failed(e) => write!(f, "failed: {e}"),
            Outcome::Shutdown => f.write_str("server shutdown"),
            Outcome::Evicted => f.write_str("evicted (stalled while others waited)"),
        }
    }
}

/// What the transfer got done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// DATA blocks the client acknowledged.
    pub blocks: u64,
    /// Payload bytes in those blocks.
    pub bytes: u64,
    /// DATA blocks or OACKs sent more than once.
    pub retransmits: u64,
}

/// Something to put on the wire, from [`Transfer::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// The encoded OACK.
    Oack(&'a [u8]),
    /// DATA blocks `first..=last` (counted from 1, see [`wire_block`]): block `n` carries the
    /// content's bytes from `(n - 1) * blksize`, `blksize` of them or fewer for the last.
    Data { first: u64, last: u64 },
    /// An encoded ERROR, the transfer's last packet. A failure to send it changes nothing.
    Error(&'a [u8]),
}

/// What a datagram from the client did, for the driver's logs and tricks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An ACK for new blocks (or ACK 0 for the OACK): the next ones are due, or the transfer
    /// is complete.
    Progress,
    /// The last acknowledged block's ACK again. `resend`: it made the machine send the rest of
    /// the window again (RFC 7440's gap signal; once per progress step, never in lockstep,
    /// where answering every duplicate doubles every later block: the sorcerer's apprentice).
    Duplicate { resend: bool },
    /// An ACK outside the window: an old one, or one for blocks not sent yet. Ignored.
    Stale,
    /// The client ended the transfer with an ERROR.
    ClientError,
    /// A well-formed packet a read transfer has no use for (DATA, a request...), ignored.
    Unexpected(&'static str),
    /// Not a TFTP packet; ignored.
    Malformed(DecodeError),
    /// The transfer had ended already; ignored.
    AfterEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The OACK waits for ACK 0.
    Negotiating,
    Sending,
}

/// One read transfer's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Transfer {
    blksize: u16,
    windowsize: u16,
    size: u64,
    /// Blocks in the transfer: every full block and one short (possibly empty) last block.
    total: u64,
    timeout: Duration,
    max_retries: u32,
    phase: Phase,
    /// The encoded OACK, empty when no option was acknowledged.
    oack: Vec<u8>,
    /// The OACK carries tsize: an ERROR 8 answering it is a size probe.
    oack_has_tsize: bool,
    oack_sent: bool,
    /// Highest block the client acknowledged.
    acked: u64,
    /// Highest block sent so far.
    sent_hi: u64,
    /// The first block of the burst (or 0: the OACK) the next `poll_transmit` sends.
    due: Option<u64>,
    /// When what is in flight times out; `None` while nothing is (a burst is due, or the
    /// transfer ended).
    deadline: Option<Duration>,
    /// Timeouts since the last progress.
    retries: u32,
    /// A duplicate ACK may still make the window's rest go out again before the next progress.
    dup_resend_armed: bool,
    retransmits: u64,
    /// The ERROR to send once the transfer ended, if it ends with one.
    farewell: Vec<u8>,
    farewell_due: bool,
    outcome: Option<Outcome>,
}

impl Transfer {
    /// A transfer of `size` bytes, after negotiating the client's `options` within `limits`:
    /// it starts with the OACK if an option was acknowledged, else with DATA 1.
    pub fn new(options: &[(String, String)], size: u64, limits: &Limits) -> Transfer {
        let neg = negotiate(options, size, limits);
        let mut oack = Vec::new();
        if !neg.oack.is_empty() {
            packet::encode_oack(&mut oack, neg.oack.iter().map(|(n, v)| (*n, v.as_str())));
        }
        let negotiating = !oack.is_empty();
        Transfer {
            blksize: neg.blksize,
            windowsize: neg.windowsize,
            size,
            total: size / u64::from(neg.blksize) + 1,
            timeout: neg.timeout,
            max_retries: limits.max_retries,
            phase: if negotiating { Phase::Negotiating } else { Phase::Sending },
            oack_has_tsize: neg.oack.iter().any(|(n, _)| *n == "tsize"),
            oack,
            oack_sent: false,
            acked: 0,
            sent_hi: 0,
            due: Some(if negotiating { 0 } else { 1 }),
            deadline: None,
            retries: 0,
            dup_resend_armed: true,
            retransmits: 0,
            farewell: Vec::new(),
            farewell_due: false,
            outcome: None,
        }
    }

    /// A request answered with `error` alone: the transfer's only packet is that ERROR.
    pub fn refused(error: TftpError) -> Transfer {
        let mut t = Transfer::new(&[], 0, &Limits::default());
        t.end_with_error(Outcome::Refused(error.clone()), &error);
        t
    }

    /// Negotiated block size (512 without the option).
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Negotiated window size (1, lockstep, without the option).
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// Size of the content, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Blocks in the transfer, the last one short (empty if the size is a multiple of blksize).
    pub fn total_blocks(&self) -> u64 {
        self.total
    }

    /// Takes a datagram from the client (the driver keeps strangers out).
    pub fn handle(&mut self, datagram: &[u8]) -> Received {
        if self.outcome.is_some() {
            return Received::AfterEnd;
        }
        match Packet::decode(datagram) {
            Ok(Packet::Ack { block }) => self.on_ack(block),
            Ok(Packet::Error { code, message }) => {
                let message = message.into_owned();
                let probe =
                    self.phase == Phase::Negotiating && self.oack_has_tsize && code == TftpError::OPTION_REFUSED;
                self.end(if probe { Outcome::SizeProbe { message } } else { Outcome::ClientError { code, message } });
                Received::ClientError
            }
            Ok(other) => Received::Unexpected(other.kind()),
            Err(e) => Received::Malformed(e),
        }
    }

    fn on_ack(&mut self, block: u16) -> Received {
        if self.phase == Phase::Negotiating {
            if block != 0 {
                return Received::Stale;
            }
            self.phase = Phase::Sending;
            self.progressed();
            return Received::Progress;
        }
        // The ACK's place in [acked, acked + window]; anything else is old or bogus.
        let delta = u64::from(block.wrapping_sub(wire_block(self.acked)));
        if delta > u64::from(self.windowsize) || self.acked + delta > self.sent_hi {
            return Received::Stale;
        }
        if delta == 0 {
            let resend = self.windowsize > 1 && self.dup_resend_armed;
            if resend {
                self.dup_resend_armed = false;
                self.due = Some(self.acked + 1);
                self.deadline = None;
            }
            return Received::Duplicate { resend };
        }
        self.acked += delta;
        self.progressed();
        Received::Progress
    }

    /// Something new was acknowledged: resume right after it (an ACK short of the window's
    /// end means the rest was lost), or end.
    fn progressed(&mut self) {
        self.retries = 0;
        self.dup_resend_armed = true;
        if self.acked == self.total {
            self.end(Outcome::Complete);
        } else {
            self.due = Some(self.acked + 1);
            self.deadline = None;
        }
    }

    /// The next thing to send, if any. Call until `None` after every `handle`,
    /// `handle_timeout`, `shutdown` or `fail`, and at the start.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit<'_>> {
        if self.outcome.is_some() {
            if self.farewell_due {
                self.farewell_due = false;
                return Some(Transmit::Error(&self.farewell));
            }
            return None;
        }
        let first = self.due.take()?;
        self.deadline = Some(now.saturating_add(self.timeout));
        if self.phase == Phase::Negotiating {
            if self.oack_sent {
                self.retransmits += 1;
            }
            self.oack_sent = true;
            return Some(Transmit::Oack(&self.oack));
        }
        let last = (self.acked + u64::from(self.windowsize)).min(self.total);
        if first <= self.sent_hi {
            self.retransmits += self.sent_hi.min(last) - first + 1;
        }
        self.sent_hi = self.sent_hi.max(last);
        Some(Transmit::Data { first, last })
    }

    /// When [`Transfer::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadline
    }

    /// Lets time pass: at or after the deadline, what is in flight is sent again, or the
    /// transfer gives up after the retry limit. Earlier calls do nothing.
    pub fn handle_timeout(&mut self, now: Duration) {
        match self.deadline {
            Some(deadline) if now >= deadline && self.outcome.is_none() => {}
            _ => return,
        }
        self.deadline = None;
        self.retries += 1;
        let block = match self.phase {
            Phase::Negotiating => 0,
            Phase::Sending => self.acked + 1,
        };
        if self.retries > self.max_retries {
            self.end(Outcome::TimedOut { block, sends: self.retries });
        } else {
            self.due = Some(block);
        }
    }

    /// The server stops: the client is told (ERROR 0) and the transfer ends.
    pub fn shutdown(&mut self) {
        if self.outcome.is_none() {
            self.end_with_error(Outcome::Shutdown, &TftpError::undefined("server shutting down"));
        }
    }

    /// The transfer stalled and its slot is given to another request: the client is told
    /// (ERROR 0) and the transfer ends.
    pub fn evict(&mut self) {
        if self.outcome.is_none() {
            self.end_with_error(Outcome::Evicted, &TftpError::undefined("transfer stalled, ended to make room"));
        }
    }

    /// A local failure (a send or a file read): the client is told (ERROR 0, without the
    /// details) and the transfer ends. Does nothing if it ended already.
    pub fn fail(&mut self, reason: impl fmt::Display) {
        if self.outcome.is_none() {
            self.end_with_error(Outcome::Failed(reason.to_string()), &TftpError::undefined("server error"));
        }
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    pub fn progress(&self) -> Progress {
        let blksize = u64::from(self.blksize);
        Progress { blocks: self.acked, bytes: (self.acked * blksize).min(self.size), retransmits: self.retransmits }
    }

    fn end(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.due = None;
        self.deadline = None;
    }

    fn end_with_error(&mut self, outcome: Outcome, error: &TftpError) {
        self.end(outcome);
        self.farewell = error.encode();
        self.farewell_due = true;
    }
}
