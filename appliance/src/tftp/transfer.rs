//! One request, from its arrival to its report, on its own UDP socket: the answer (an ERROR,
//! or a transfer on a lockstep thread or here), and the async driver of the transfer machine.
//!
//! This module owns answering a request (WRQ and unsupported modes refused, the handler
//! asked, where a lockstep transfer runs) and the async driver: a short loop that hands the
//! socket's datagrams, the clock and a server shutdown to [`Transfer`] and sends what it asks
//! for. It must not decide anything about the protocol (the machine does), parse wire bytes
//! (`packet`), read files (`source`) or interpret the requested path (the [`Handler`] does).
//!
//! What the driver keeps of the engine's tuning (see ARCHITECTURE.md, "The lockstep path,
//! block by block"): the socket is registered for read readiness only (`udp`), and in lockstep
//! the readiness is dropped after an ACK without a syscall; the retransmission timer and the
//! shutdown watch are created once per transfer and the timer is re-armed lazily; windows go
//! out in GSO batches (`sender`), and in lockstep the next block is built while the client
//! works.
//!
//! The transfer socket is bound to the listening socket's IP with an
//! ephemeral port and `connect`ed to the client (see `udp`): datagrams from
//! any other address or port (RFC 1350's "unknown TID") never reach the
//! transfer; the kernel answers them with ICMP port unreachable instead of
//! the TFTP ERROR 5 an unconnected socket would let us send. That is what
//! tftpd-hpa does too, and the connected socket's fast paths are worth about
//! 3% of a lockstep transfer's time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::fair_share::{Activity, Slot, Stop};
use appliance_core::tftp::packet::{Mode, Request};
use appliance_core::tftp::{Outcome, Progress, Received, TftpError, Transfer, Transmit};
use bytes::Bytes;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::config::TftpConfig;
use super::handler::{Content, Handler, ReadRequest, TransferReport};
use super::lockstep;
use super::sender::DataSender;
use super::source::Source;
use super::udp::TransferSocket;

/// A request handed over by the accept loop.
pub(crate) enum Incoming {
    Read(Request),
    Write(Request),
}

/// What woke the driver.
enum Event {
    Datagram(usize),
    Timeout,
    Shutdown,
}

struct Link {
    sock: TransferSocket,
    peer: SocketAddr,
    /// Whether to go on: a server shutdown, or room needed for another request.
    shutdown: watch::Receiver<Stop>,
    /// Touched on every ACK that makes progress: how the fair share tells a stalled
    /// transfer from a working one.
    activity: Activity,
    /// Resolves when the server asks this transfer to stop. Created once and kept
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
    slot: Slot,
) {
    let shutdown = slot.stop.clone();
    let started = std::time::Instant::now();
    let req = match &incoming {
        Incoming::Read(r) | Incoming::Write(r) => r,
    };
    let mut report = TransferReport {
        peer,
        local,
        path: req.filename.clone(),
        size: None,
        blksize: appliance_core::tftp::DEFAULT_BLKSIZE,
        windowsize: 1,
        bytes: 0,
        blocks: 0,
        retransmits: 0,
        thread: false,
        duration: Duration::ZERO,
        outcome: Outcome::Complete,
    };
    let (outcome, progress) = match TransferSocket::connect_near(local, peer) {
        Ok(sock) => {
            let mut stop_rx = shutdown.clone();
            let stop = Box::pin(async move {
                // A dropped sender means the server is gone: stop too.
                let _ = stop_rx.changed().await;
            });
            let timer = Box::pin(tokio::time::sleep(config.timeout));
            let activity = slot.activity();
            let link = Link { sock, peer, shutdown, activity, stop, stopped: false, timer, rx: vec![0; 2048] };
            handle_request(&*handler, &config, &threads, link, &incoming, &mut report).await
        }
        Err(e) => (Outcome::Failed(format!("binding transfer socket: {e}")), Progress::default()),
    };
    report.outcome = outcome;
    report.blocks = progress.blocks;
    report.bytes = progress.bytes;
    report.retransmits = progress.retransmits;
    report.duration = started.elapsed();
    report.log();
    handler.finished(&report);
    drop(slot);
}

/// How a transfer the machine ran ended, for the report.
fn ended(transfer: &Transfer) -> (Outcome, Progress) {
    let outcome = transfer.outcome().cloned().unwrap_or_else(|| Outcome::Failed("transfer left unfinished".into()));
    (outcome, transfer.progress())
}

/// The content a read request gets, or the ERROR that refuses it.
fn lookup<H: Handler + ?Sized>(handler: &H, incoming: &Incoming, req: ReadRequest) -> Result<Content, TftpError> {
    match incoming {
        Incoming::Write(_) => Err(TftpError::access_violation("write not supported")),
        // netascii is served as the stored bytes, unconverted (like most
        // boot servers): our content is binary or already has the line
        // endings the client expects.
        Incoming::Read(r) if !matches!(r.mode, Mode::Octet | Mode::NetAscii) => {
            Err(TftpError::illegal_operation("unsupported transfer mode"))
        }
        Incoming::Read(_) => handler.read(&req),
    }
}

async fn handle_request<H: Handler + ?Sized>(
    handler: &H,
    config: &TftpConfig,
    threads: &Arc<lockstep::Threads>,
    mut link: Link,
    incoming: &Incoming,
    report: &mut TransferReport,
) -> (Outcome, Progress) {
    let (Incoming::Read(req) | Incoming::Write(req)) = incoming;
    let request = ReadRequest { path: req.filename.clone(), peer: link.peer, local: report.local };
    let content = match lookup(handler, incoming, request) {
        Ok(content) => content,
        Err(refusal) => {
            let mut transfer = Transfer::refused(refusal);
            let mut nothing = Source::new(Content::Bytes(Bytes::new()), transfer.blksize(), 1);
            drive(&mut link, &mut transfer, &mut nothing).await;
            return ended(&transfer);
        }
    };
    let mut transfer = Transfer::new(&req.options, content.len(), &config.limits());
    report.size = Some(content.len());
    report.blksize = transfer.blksize();
    report.windowsize = transfer.windowsize();
    let mut source = Source::new(content, transfer.blksize(), transfer.windowsize());
    let stop = *link.shutdown.borrow();
    if stop != Stop::Run {
        stop_transfer(&mut transfer, stop);
    } else if transfer.windowsize() == 1 {
        if let Some(permit) = threads.take() {
            let settings = lockstep::Settings {
                shutdown: link.shutdown.clone(),
                activity: link.activity.clone(),
                spin: config.lockstep_spin,
                threads: Arc::clone(threads),
            };
            let job = lockstep::Job { transfer, source, runtime: tokio::runtime::Handle::current(), settings };
            report.thread = true;
            return on_thread(link, job, permit).await;
        }
    }
    drive(&mut link, &mut transfer, &mut source).await;
    ended(&transfer)
}

/// Moves the transfer socket off the runtime and runs `job` on a blocking
/// thread, holding `permit` until it ends.
async fn on_thread(link: Link, mut job: lockstep::Job, permit: OwnedSemaphorePermit) -> (Outcome, Progress) {
    let peer = link.peer;
    let sock = match link.sock.into_blocking(lockstep::POLL_SLICE) {
        Ok(sock) => sock,
        Err(e) => {
            job.transfer.fail(format!("making the transfer socket blocking: {e}"));
            return ended(&job.transfer);
        }
    };
    let thread = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        ended(&lockstep::run(&sock, peer, job))
    });
    match thread.await {
        Ok(end) => end,
        Err(e) => (Outcome::Failed(format!("lockstep transfer thread: {e}")), Progress::default()),
    }
}

/// The async driver: runs `transfer` until it has an outcome and its last packet is out.
async fn drive(link: &mut Link, transfer: &mut Transfer, source: &mut Source) {
    let epoch = Instant::now();
    let mut sender = DataSender::new(link.peer, transfer.blksize(), transfer.windowsize(), source);
    let lockstep = transfer.windowsize() == 1;
    loop {
        if let Err(e) = transmit(&link.sock, link.peer, transfer, &mut sender, source, epoch.elapsed()).await {
            transfer.fail(e);
            continue; // sends the ERROR that says so
        }
        if transfer.outcome().is_some() {
            return;
        }
        // Always set while the transfer runs; the fallback only keeps a broken promise from
        // spinning.
        let deadline = epoch + transfer.poll_timeout().unwrap_or(Duration::from_secs(3600));
        match link.next_event(deadline).await {
            Ok(Event::Datagram(n)) => match transfer.handle(&link.rx[..n]) {
                Received::Progress => {
                    link.activity.touch();
                    // The next ACK cannot be queued before the next block is sent.
                    if lockstep {
                        link.sock.forget_readable();
                    }
                }
                Received::Unexpected(kind) => debug!(peer = %link.peer, kind, "tftp: ignoring unexpected packet"),
                Received::Malformed(e) => debug!(peer = %link.peer, "tftp: ignoring malformed datagram: {e}"),
                _ => {}
            },
            Ok(Event::Timeout) => transfer.handle_timeout(epoch.elapsed()),
            Ok(Event::Shutdown) => stop_transfer(transfer, *link.shutdown.borrow()),
            Err(e) => transfer.fail(e),
        }
    }
}

/// Ends `transfer` as `stop` asks: evicted, or (also when the server is gone) shut down.
pub(crate) fn stop_transfer(transfer: &mut Transfer, stop: Stop) {
    match stop {
        Stop::Evict => transfer.evict(),
        Stop::Run | Stop::Shutdown => transfer.shutdown(),
    }
}

/// Sends everything the machine asks for now.
async fn transmit(
    sock: &TransferSocket,
    peer: SocketAddr,
    transfer: &mut Transfer,
    sender: &mut DataSender,
    source: &mut Source,
    now: Duration,
) -> io::Result<()> {
    let (total, lockstep) = (transfer.total_blocks(), transfer.windowsize() == 1);
    while let Some(packet) = transfer.poll_transmit(now) {
        match packet {
            Transmit::Oack(oack) => {
                sock.send(oack).await?;
            }
            Transmit::Data { first, last } => {
                sender.send(sock, source, first, last).await?;
                if lockstep && last < total {
                    // Build the next block while the client works on this one.
                    sender.prepare(source, last + 1).await?;
                }
            }
            Transmit::Error(error) => {
                if let Err(e) = sock.send(error).await {
                    debug!(%peer, "tftp: sending ERROR failed: {e}");
                }
            }
        }
    }
    Ok(())
}

impl Link {
    /// Waits for a datagram from the peer until `deadline`.
    async fn next_event(&mut self, deadline: Instant) -> io::Result<Event> {
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        loop {
            if self.stopped {
                return Ok(Event::Shutdown);
            }
            tokio::select! {
                biased;
                r = self.sock.recv(&mut self.rx) => match r {
                    Ok(n) => return Ok(Event::Datagram(n)),
                    // An ICMP error the peer's host sent about an earlier DATA
                    // (e.g. port unreachable after the client gave up) is
                    // reported on the next receive; the timeout decides.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        debug!(peer = %self.peer, "tftp: peer reports port unreachable");
                    }
                    Err(e) => return Err(e),
                },
                () = &mut self.timer => {
                    if Instant::now() >= deadline {
                        return Ok(Event::Timeout);
                    }
                    self.timer.as_mut().reset(deadline);
                }
                () = &mut self.stop => {
                    self.stopped = true;
                    return Ok(Event::Shutdown);
                }
            }
        }
    }
}
