//! A lockstep transfer (windowsize 1) on a thread of its own, with blocking
//! socket calls.
//!
//! In lockstep the client's next ACK is the only thing a transfer can wait
//! for, so the shortest path from that ACK to the next DATA is a thread
//! sleeping in `recv` on its socket: the kernel wakes it with the ACK already
//! copied out, and it answers with one `send`. Two system calls per block,
//! where the async engine needs three (`epoll_wait`, `recv`, `send`) plus a
//! trip through the runtime's scheduler, and tftpd-hpa five. The accept loop
//! hands a transfer here only while a thread is free (see
//! [`super::TftpConfig::lockstep_threads`]); every other transfer, and every
//! windowed one, stays on the async engine in `transfer`, which has the same
//! protocol behaviour.
//!
//! This module owns only the blocking wait-and-resend loop. Retransmission
//! timeouts are checked every [`POLL_SLICE`] (the socket's receive timeout),
//! which is also how soon a server shutdown is noticed.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::debug;

use super::handler::{Outcome, TftpError};
use super::packet::{self, Packet, DATA_HEADER};
use super::source::Source;

/// Longest a blocked `recv` sleeps before the loop looks at the clock and
/// the shutdown flag.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(50);

/// Everything a lockstep transfer needs once its options are settled.
pub(crate) struct Job {
    pub source: Source,
    /// The encoded OACK, sent as "block 0" and acknowledged with ACK 0; empty
    /// when the request carried no options we acknowledge.
    pub oack: Vec<u8>,
    pub blksize: u16,
    pub runtime: Handle,
    pub limits: Limits,
}

/// How long to wait for each ACK, how often to resend, when to give up.
pub(crate) struct Limits {
    pub timeout: Duration,
    pub max_retries: u32,
    pub shutdown: watch::Receiver<bool>,
}

impl Limits {
    /// The server asked transfers to stop, or is gone.
    fn stop_requested(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }
}

/// What a transfer got done, for its [`super::TransferReport`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    pub blocks: u64,
    pub bytes: u64,
    pub retransmits: u64,
}

/// How waiting for one ACK ended.
enum Wait {
    Acked,
    Timeout,
    End(Outcome),
}

/// Runs the transfer to its end on the calling (blocking) thread. `sock` is
/// connected to the peer, blocking, with [`POLL_SLICE`] as read timeout.
pub(crate) fn run(sock: &UdpSocket, peer: SocketAddr, mut job: Job, report: &mut Progress) -> Outcome {
    let mut rx = [0u8; 2048];
    let mut tx = vec![0u8; DATA_HEADER + usize::from(job.blksize)];
    let len = job.source.len();
    let blk = u64::from(job.blksize);
    let total = len / blk + 1;
    let result = (|| -> io::Result<Outcome> {
        if !job.oack.is_empty() {
            if let Some(end) = exchange(sock, peer, &job.limits, &mut rx, 0, &job.oack, report)? {
                return Ok(end);
            }
        }
        for block in 1..=total {
            if job.limits.stop_requested() {
                return Ok(Outcome::Shutdown);
            }
            let offset = (block - 1) * blk;
            if !job.source.is_resident(offset, offset + blk) {
                job.runtime.block_on(job.source.prepare(offset, offset + blk))?;
            }
            tx.truncate(DATA_HEADER);
            packet::write_data_header(&mut tx, block as u16);
            tx.extend_from_slice(job.source.get(offset, blk as usize));
            if let Some(end) = exchange(sock, peer, &job.limits, &mut rx, block, &tx, report)? {
                return Ok(end);
            }
            report.blocks = block;
            report.bytes = (block * blk).min(len);
        }
        Ok(Outcome::Complete)
    })();
    match result {
        Ok(Outcome::Shutdown) => {
            send_error(sock, peer, &TftpError::undefined("server shutting down"));
            Outcome::Shutdown
        }
        Ok(outcome) => outcome,
        Err(e) => {
            send_error(sock, peer, &TftpError::undefined("server error"));
            Outcome::Failed(e.to_string())
        }
    }
}

/// Sends `packet` (block `block`, or the OACK as block 0) until its ACK
/// comes; `Some` ends the transfer.
fn exchange(
    sock: &UdpSocket,
    peer: SocketAddr,
    limits: &Limits,
    rx: &mut [u8],
    block: u64,
    packet: &[u8],
    report: &mut Progress,
) -> io::Result<Option<Outcome>> {
    let mut retries = 0;
    loop {
        sock.send(packet)?;
        match wait_ack(sock, peer, limits, rx, block as u16, Instant::now() + limits.timeout)? {
            Wait::Acked => return Ok(None),
            Wait::End(outcome) => return Ok(Some(outcome)),
            Wait::Timeout => {
                retries += 1;
                if retries > limits.max_retries {
                    return Ok(Some(Outcome::TimedOut));
                }
                report.retransmits += 1;
            }
        }
    }
}

/// Waits for ACK `want` until `deadline`. Duplicate and stale ACKs are
/// ignored, never answered (sorcerer's apprentice), as is junk.
fn wait_ack(
    sock: &UdpSocket,
    peer: SocketAddr,
    limits: &Limits,
    rx: &mut [u8],
    want: u16,
    deadline: Instant,
) -> io::Result<Wait> {
    loop {
        match sock.recv(rx) {
            Ok(n) => match Packet::decode(&rx[..n]) {
                Ok(Packet::Ack { block }) if block == want => return Ok(Wait::Acked),
                Ok(Packet::Ack { .. }) => {}
                Ok(Packet::Error { code, message }) => {
                    return Ok(Wait::End(Outcome::ClientError { code, message: message.into_owned() }))
                }
                Ok(other) => debug!(%peer, kind = other.kind(), "tftp: ignoring unexpected packet"),
                Err(e) => debug!(%peer, "tftp: ignoring malformed datagram: {e}"),
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            // An ICMP error about an earlier DATA: the timeout decides.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(%peer, "tftp: peer reports port unreachable");
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if limits.stop_requested() {
            return Ok(Wait::End(Outcome::Shutdown));
        }
        if Instant::now() >= deadline {
            return Ok(Wait::Timeout);
        }
    }
}

fn send_error(sock: &UdpSocket, peer: SocketAddr, err: &TftpError) {
    let mut buf = Vec::with_capacity(64);
    packet::encode_error(&mut buf, err.code, &err.message);
    if let Err(e) = sock.send(&buf) {
        debug!(%peer, "tftp: sending ERROR failed: {e}");
    }
}
