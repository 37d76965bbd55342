//! One read transfer, from request to report, on its own UDP socket.
//!
//! This module owns the per-transfer state machine: answering the request
//! (ERROR, OACK or the first window), the RFC 7440 send window with block
//! number rollover, retransmission on timeout, duplicate-ACK handling, and
//! ending at once on a client ERROR. It must not parse wire bytes itself
//! (that is `packet`), decide options (`options`), read files (`source`) or
//! interpret the requested path (the [`Handler`] does).
//!
//! The transfer socket is bound to the listening socket's IP with an
//! ephemeral port and deliberately *not* `connect`ed: a connected socket
//! would make the kernel drop datagrams from other ports silently, whereas
//! RFC 1350 wants them answered with ERROR 5 while the transfer goes on.

use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::handler::{Handler, Outcome, ReadRequest, TftpError, TransferReport};
use super::options::{negotiate, TftpConfig};
use super::packet::{self, Mode, Packet, Request, OP_ERROR};
use super::sender::DataSender;
use super::source::Source;

/// A request handed over by the accept loop.
pub(crate) enum Incoming {
    Read(Request),
    Write(Request),
}

/// What the peer (or the clock) did while we waited.
enum Event {
    Ack(u16),
    Error { code: u16, message: String },
    Timeout,
    Shutdown,
}

struct Link {
    sock: UdpSocket,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

/// Runs one request to completion and reports it. Never panics on peer input.
pub(crate) async fn run<H: Handler + ?Sized>(
    handler: Arc<H>,
    config: Arc<TftpConfig>,
    local: SocketAddr,
    peer: SocketAddr,
    incoming: Incoming,
    shutdown: watch::Receiver<bool>,
) {
    let started = std::time::Instant::now();
    let req = match &incoming {
        Incoming::Read(r) | Incoming::Write(r) => r,
    };
    let mut report = TransferReport {
        peer,
        local,
        path: req.filename.clone(),
        size: None,
        blksize: super::options::DEFAULT_BLKSIZE,
        windowsize: 1,
        bytes: 0,
        blocks: 0,
        retransmits: 0,
        duration: Duration::ZERO,
        outcome: Outcome::Complete,
    };
    report.outcome = match bind_near(local).await {
        Ok(sock) => {
            let mut link = Link { sock, peer, shutdown, rx: vec![0; 2048], tx: Vec::new() };
            handle_request(&*handler, &config, &mut link, &incoming, &mut report).await
        }
        Err(e) => Outcome::Failed(format!("binding transfer socket: {e}")),
    };
    report.duration = started.elapsed();
    report.log();
    handler.finished(&report);
}

/// Binds an ephemeral port on the listening socket's IP (0.0.0.0 stays
/// unspecified).
async fn bind_near(local: SocketAddr) -> std::io::Result<UdpSocket> {
    let addr = match local {
        SocketAddr::V4(a) => SocketAddr::new((*a.ip()).into(), 0),
        SocketAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())),
    };
    UdpSocket::bind(addr).await
}

async fn handle_request<H: Handler + ?Sized>(
    handler: &H,
    config: &TftpConfig,
    link: &mut Link,
    incoming: &Incoming,
    report: &mut TransferReport,
) -> Outcome {
    let req = match incoming {
        Incoming::Write(_) => return link.refuse(TftpError::access_violation("write not supported")).await,
        Incoming::Read(r) => r,
    };
    match req.mode {
        // netascii is served as the stored bytes, unconverted (like most
        // boot servers): our content is binary or already has the line
        // endings the client expects.
        Mode::Octet | Mode::NetAscii => {}
        Mode::Mail | Mode::Other(_) => {
            return link.refuse(TftpError::illegal_operation("unsupported transfer mode")).await
        }
    }
    let content = match handler.read(&ReadRequest { path: req.filename.clone(), peer: link.peer, local: report.local })
    {
        Ok(c) => c,
        Err(e) => return link.refuse(e).await,
    };
    let neg = negotiate(&req.options, content.len(), config);
    report.size = Some(content.len());
    report.blksize = neg.blksize;
    report.windowsize = neg.windowsize;
    let mut source = Source::new(content, neg.blksize, neg.windowsize);
    if *link.shutdown.borrow() {
        return link.abort_shutdown().await;
    }
    let sender = DataSender::new(link.peer, neg.blksize, neg.windowsize, &source);
    let mut session = Session { sender, link, timeout: neg.timeout, max_retries: config.max_retries, report };
    let result = async {
        if !neg.oack.is_empty() {
            if let Some(end) = session.negotiate(&neg.oack).await? {
                return Ok(end);
            }
        }
        session.send_file(&mut source, neg.blksize, neg.windowsize).await
    }
    .await;
    match result {
        Ok(Outcome::Shutdown) => session.link.abort_shutdown().await,
        Ok(outcome) => outcome,
        Err(e) => {
            session.link.send_error(&TftpError::undefined("server error")).await;
            Outcome::Failed(e.to_string())
        }
    }
}

impl Link {
    async fn send_error(&mut self, err: &TftpError) {
        self.tx.clear();
        packet::encode_error(&mut self.tx, err.code, &err.message);
        if let Err(e) = self.sock.send_to(&self.tx, self.peer).await {
            debug!(peer = %self.peer, "tftp: sending ERROR failed: {e}");
        }
    }

    async fn refuse(&mut self, err: TftpError) -> Outcome {
        self.send_error(&err).await;
        Outcome::Refused(err)
    }

    async fn abort_shutdown(&mut self) -> Outcome {
        self.send_error(&TftpError::undefined("server shutting down")).await;
        Outcome::Shutdown
    }

    /// Waits for an ACK or ERROR from the peer until `deadline`. Datagrams
    /// from other addresses get ERROR 5; junk from the peer is ignored.
    async fn next_event(&mut self, deadline: Instant) -> std::io::Result<Event> {
        loop {
            let (n, from) = tokio::select! {
                biased;
                r = self.sock.recv_from(&mut self.rx) => r?,
                _ = tokio::time::sleep_until(deadline) => return Ok(Event::Timeout),
                _ = self.shutdown.changed() => return Ok(Event::Shutdown),
            };
            let datagram = &self.rx[..n];
            if from != self.peer {
                debug!(peer = %self.peer, stranger = %from, "tftp: datagram from unknown TID");
                let is_error = datagram.len() >= 2 && datagram[..2] == OP_ERROR.to_be_bytes();
                if !is_error {
                    let mut out = Vec::with_capacity(32);
                    let e = TftpError::unknown_tid();
                    packet::encode_error(&mut out, e.code, &e.message);
                    let _ = self.sock.send_to(&out, from).await;
                }
                continue;
            }
            match Packet::decode(datagram) {
                Ok(Packet::Ack { block }) => return Ok(Event::Ack(block)),
                Ok(Packet::Error { code, message }) => return Ok(Event::Error { code, message: message.into_owned() }),
                Ok(other) => debug!(peer = %self.peer, kind = other.kind(), "tftp: ignoring unexpected packet"),
                Err(e) => debug!(peer = %self.peer, "tftp: ignoring malformed datagram: {e}"),
            }
        }
    }
}

struct Session<'a> {
    sender: DataSender,
    link: &'a mut Link,
    timeout: Duration,
    max_retries: u32,
    report: &'a mut TransferReport,
}

impl Session<'_> {
    /// Sends the OACK and waits for ACK 0. `Some(outcome)` ends the transfer.
    async fn negotiate(&mut self, oack: &[(&'static str, String)]) -> std::io::Result<Option<Outcome>> {
        let mut pkt = Vec::with_capacity(64);
        packet::encode_oack(&mut pkt, oack.iter().map(|(n, v)| (*n, v.as_str())));
        let mut retries = 0;
        loop {
            self.link.sock.send_to(&pkt, self.link.peer).await?;
            let deadline = Instant::now() + self.timeout;
            loop {
                match self.link.next_event(deadline).await? {
                    Event::Ack(0) => return Ok(None),
                    Event::Ack(_) => continue,
                    Event::Error { code, message } => return Ok(Some(Outcome::ClientError { code, message })),
                    Event::Shutdown => return Ok(Some(Outcome::Shutdown)),
                    Event::Timeout => break,
                }
            }
            retries += 1;
            if retries > self.max_retries {
                return Ok(Some(Outcome::TimedOut));
            }
            self.report.retransmits += 1;
        }
    }

    /// The data phase: windows of DATA until the last block is acknowledged.
    async fn send_file(&mut self, source: &mut Source, blksize: u16, windowsize: u16) -> std::io::Result<Outcome> {
        let len = source.len();
        let blk = u64::from(blksize);
        let window = u64::from(windowsize);
        // Always one more block than full blocks: the last one is short
        // (possibly empty) and marks the end.
        let total = len / blk + 1;
        let mut acked = 0u64; // highest block the client acknowledged
        let mut sent_hi = 0u64; // highest block ever sent
        let mut next = 1u64; // first block of the next burst (set on every wake-up)
        let mut retries = 0u32;
        // One early resend per progress step on a duplicate ACK (RFC 7440
        // gap signal); never in lockstep mode (sorcerer's apprentice).
        let mut dup_resend_armed = true;
        loop {
            let hi = (acked + window).min(total);
            if next <= hi {
                self.sender.send(&self.link.sock, source, next, hi).await?;
                if next <= sent_hi {
                    self.report.retransmits += sent_hi.min(hi) - next + 1;
                }
                sent_hi = sent_hi.max(hi);
            }
            let deadline = Instant::now() + self.timeout;
            loop {
                match self.link.next_event(deadline).await? {
                    Event::Ack(n) => {
                        // Map the 16-bit number into [acked, acked + window].
                        let delta = u64::from(n.wrapping_sub(acked as u16));
                        if delta > window || acked + delta > sent_hi {
                            continue; // stale or bogus
                        }
                        if delta == 0 {
                            if window > 1 && dup_resend_armed {
                                dup_resend_armed = false;
                                next = acked + 1;
                                break;
                            }
                            continue;
                        }
                        acked += delta;
                        retries = 0;
                        dup_resend_armed = true;
                        self.report.blocks = acked;
                        self.report.bytes = (acked * blk).min(len);
                        if acked == total {
                            return Ok(Outcome::Complete);
                        }
                        // Resume right after the acknowledged block: a short
                        // ACK inside the window means the rest was lost.
                        next = acked + 1;
                        break;
                    }
                    Event::Error { code, message } => return Ok(Outcome::ClientError { code, message }),
                    Event::Shutdown => return Ok(Outcome::Shutdown),
                    Event::Timeout => {
                        retries += 1;
                        if retries > self.max_retries {
                            return Ok(Outcome::TimedOut);
                        }
                        next = acked + 1;
                        break;
                    }
                }
            }
        }
    }
}
