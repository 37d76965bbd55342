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
//! ephemeral port and `connect`ed to the client (see `udp`): datagrams from
//! any other address or port (RFC 1350's "unknown TID") never reach the
//! transfer; the kernel answers them with ICMP port unreachable instead of
//! the TFTP ERROR 5 an unconnected socket would let us send. That is what
//! tftpd-hpa does too, and the connected socket's fast paths are worth about
//! 3% of a lockstep transfer's time.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::handler::{Handler, Outcome, ReadRequest, TftpError, TransferReport};
use super::lockstep;
use super::options::{negotiate, TftpConfig};
use super::packet::{self, Mode, Packet, Request};
use super::sender::DataSender;
use super::source::Source;
use super::udp::TransferSocket;

/// A request handed over by the accept loop.
pub(crate) enum Incoming {
    Read(Request),
    Write(Request),
}

/// Where a request goes once it has been answered or its options settled.
enum Step {
    Done(Outcome),
    /// A lockstep transfer that got one of the dedicated threads.
    Lockstep(lockstep::Job, OwnedSemaphorePermit),
}

/// What the peer (or the clock) did while we waited.
enum Event {
    Ack(u16),
    Error { code: u16, message: String },
    Timeout,
    Shutdown,
}

struct Link {
    sock: TransferSocket,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    /// Resolves when the server asks transfers to stop. Created once and kept
    /// registered for the whole transfer, like `timer`: re-creating either
    /// per packet costs a lock and a list or wheel update on every block.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stopped: bool,
    /// Never set later than the deadline being waited for; when it fires
    /// early the deadline has moved on (progress) and it is re-armed once, so
    /// a lockstep transfer touches the timer about once per timeout period
    /// instead of once per block.
    timer: Pin<Box<Sleep>>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

/// Runs one request to completion and reports it. Never panics on peer input.
///
/// A lockstep transfer runs on a blocking thread (see [`lockstep`]) if one of
/// `threads` is free, otherwise on this task.
pub(crate) async fn run<H: Handler + ?Sized>(
    handler: Arc<H>,
    config: Arc<TftpConfig>,
    threads: Arc<lockstep::Threads>,
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
        thread: false,
        duration: Duration::ZERO,
        outcome: Outcome::Complete,
    };
    report.outcome = match TransferSocket::connect_near(local, peer) {
        Ok(sock) => {
            let mut stop_rx = shutdown.clone();
            let stop = Box::pin(async move {
                // A dropped sender means the server is gone: stop too.
                let _ = stop_rx.changed().await;
            });
            let timer = Box::pin(tokio::time::sleep(config.timeout));
            let mut link =
                Link { sock, peer, shutdown, stop, stopped: false, timer, rx: vec![0; 2048], tx: Vec::new() };
            match handle_request(&*handler, &config, &threads, &mut link, &incoming, &mut report).await {
                Step::Done(outcome) => outcome,
                Step::Lockstep(job, permit) => on_thread(link, job, permit, &mut report).await,
            }
        }
        Err(e) => Outcome::Failed(format!("binding transfer socket: {e}")),
    };
    report.duration = started.elapsed();
    report.log();
    handler.finished(&report);
}

/// Moves the transfer socket off the runtime and runs `job` on a blocking
/// thread, holding `permit` until it ends.
async fn on_thread(
    link: Link,
    job: lockstep::Job,
    permit: OwnedSemaphorePermit,
    report: &mut TransferReport,
) -> Outcome {
    let peer = link.peer;
    report.thread = true;
    let sock = match link.sock.into_blocking(lockstep::POLL_SLICE) {
        Ok(sock) => sock,
        Err(e) => return Outcome::Failed(format!("making the transfer socket blocking: {e}")),
    };
    let thread = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut progress = lockstep::Progress::default();
        let outcome = lockstep::run(&sock, peer, job, &mut progress);
        (outcome, progress)
    });
    match thread.await {
        Ok((outcome, progress)) => {
            report.blocks = progress.blocks;
            report.bytes = progress.bytes;
            report.retransmits = progress.retransmits;
            outcome
        }
        Err(e) => Outcome::Failed(format!("lockstep transfer thread: {e}")),
    }
}

async fn handle_request<H: Handler + ?Sized>(
    handler: &H,
    config: &TftpConfig,
    threads: &Arc<lockstep::Threads>,
    link: &mut Link,
    incoming: &Incoming,
    report: &mut TransferReport,
) -> Step {
    let req = match incoming {
        Incoming::Write(_) => return Step::Done(link.refuse(TftpError::access_violation("write not supported")).await),
        Incoming::Read(r) => r,
    };
    match req.mode {
        // netascii is served as the stored bytes, unconverted (like most
        // boot servers): our content is binary or already has the line
        // endings the client expects.
        Mode::Octet | Mode::NetAscii => {}
        Mode::Mail | Mode::Other(_) => {
            return Step::Done(link.refuse(TftpError::illegal_operation("unsupported transfer mode")).await)
        }
    }
    let content = match handler.read(&ReadRequest { path: req.filename.clone(), peer: link.peer, local: report.local })
    {
        Ok(c) => c,
        Err(e) => return Step::Done(link.refuse(e).await),
    };
    let neg = negotiate(&req.options, content.len(), config);
    report.size = Some(content.len());
    report.blksize = neg.blksize;
    report.windowsize = neg.windowsize;
    let mut source = Source::new(content, neg.blksize, neg.windowsize);
    if *link.shutdown.borrow() {
        return Step::Done(link.abort_shutdown().await);
    }
    if neg.windowsize == 1 {
        if let Some(permit) = threads.take() {
            let mut oack = Vec::new();
            if !neg.oack.is_empty() {
                packet::encode_oack(&mut oack, neg.oack.iter().map(|(n, v)| (*n, v.as_str())));
            }
            let limits = lockstep::Limits {
                timeout: neg.timeout,
                max_retries: config.max_retries,
                shutdown: link.shutdown.clone(),
                spin: config.lockstep_spin,
                threads: Arc::clone(threads),
            };
            let job = lockstep::Job {
                source,
                oack,
                blksize: neg.blksize,
                runtime: tokio::runtime::Handle::current(),
                limits,
            };
            return Step::Lockstep(job, permit);
        }
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
    Step::Done(match result {
        Ok(Outcome::Shutdown) => session.link.abort_shutdown().await,
        Ok(outcome) => outcome,
        Err(e) => {
            session.link.send_error(&TftpError::undefined("server error")).await;
            Outcome::Failed(e.to_string())
        }
    })
}

impl Link {
    async fn send_error(&mut self, err: &TftpError) {
        self.tx.clear();
        packet::encode_error(&mut self.tx, err.code, &err.message);
        if let Err(e) = self.sock.send(&self.tx).await {
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

    /// Waits for an ACK or ERROR from the peer until `deadline`; junk from
    /// the peer is ignored.
    async fn next_event(&mut self, deadline: Instant) -> std::io::Result<Event> {
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        loop {
            if self.stopped {
                return Ok(Event::Shutdown);
            }
            let n = tokio::select! {
                biased;
                r = self.sock.recv(&mut self.rx) => match r {
                    Ok(n) => n,
                    // An ICMP error the peer's host sent about an earlier DATA
                    // (e.g. port unreachable after the client gave up) is
                    // reported on the next receive; the timeout decides.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        debug!(peer = %self.peer, "tftp: peer reports port unreachable");
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                () = &mut self.timer => {
                    if Instant::now() >= deadline {
                        return Ok(Event::Timeout);
                    }
                    self.timer.as_mut().reset(deadline);
                    continue;
                }
                () = &mut self.stop => {
                    self.stopped = true;
                    return Ok(Event::Shutdown);
                }
            };
            let datagram = &self.rx[..n];
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
            self.link.sock.send(&pkt).await?;
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
            if window == 1 && sent_hi < total {
                // Lockstep: build the next block while the client works on this one.
                self.sender.prepare(source, sent_hi + 1).await?;
            }
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
                        if window == 1 {
                            // The next ACK cannot be queued before the next block is sent.
                            self.link.sock.forget_readable();
                        }
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
