//! A lockstep transfer (windowsize 1) on a thread of its own, with blocking
//! socket calls.
//!
//! In lockstep the client's next ACK is the only thing a transfer can wait
//! for, so the shortest path from that ACK to the next DATA is a thread
//! sleeping in `recv` on its socket: the kernel wakes it with the ACK already
//! copied out, and it answers with one `send`. Two system calls per block,
//! where the async engine needs three (`epoll_wait`, `recv`, `send`) plus a
//! trip through the runtime's scheduler, and tftpd-hpa five. `transfer`
//! hands a lockstep transfer here once its options are settled, if one of the
//! [`Threads`] is free (see [`super::TftpConfig::lockstep_threads`]); every
//! other transfer, and every windowed one, stays on the async engine in
//! `transfer`, which has the same protocol behaviour. Before sleeping, the
//! thread may poll for the ACK briefly (see [`Spinner`]).
//!
//! This module owns the blocking send-wait-resend loop and the pool of
//! threads; it does not negotiate options or answer requests. Retransmission
//! timeouts are checked every [`POLL_SLICE`] (the socket's receive timeout),
//! which is also how soon a server shutdown is noticed.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::handler::{Outcome, TftpError};
use super::packet::{self, Packet, DATA_HEADER};
use super::source::Source;

/// Longest a blocked `recv` sleeps before the loop looks at the clock and
/// the shutdown flag.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(50);

/// After a spin that found nothing, spinning pauses for 1, 3, 7, ... blocks,
/// up to `2^MAX_BACKOFF - 1`.
const MAX_BACKOFF: u32 = 10;

/// The lockstep threads, shared by the accept loop and every transfer: how
/// many are free, and how many transfers run (on either engine).
#[derive(Debug)]
pub(crate) struct Threads {
    free: Arc<Semaphore>,
    limit: usize,
    running: AtomicUsize,
}

/// Counts one running transfer until dropped.
pub(crate) struct Running(Arc<Threads>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Threads {
    /// `limit` dedicated threads (see [`super::TftpConfig::lockstep_threads`]).
    pub fn new(limit: usize) -> Arc<Threads> {
        Arc::new(Threads { free: Arc::new(Semaphore::new(limit)), limit, running: AtomicUsize::new(0) })
    }

    /// Counts a transfer the accept loop starts, on whichever engine.
    pub fn started(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(Arc::clone(self))
    }

    /// A thread for a lockstep transfer, if one is free.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.free).try_acquire_owned().ok()
    }

    /// More transfers run than there are lockstep threads (one per CPU by
    /// default): a spinning thread would take a CPU another transfer needs.
    fn crowded(&self) -> bool {
        self.running.load(Ordering::Relaxed) > self.limit
    }
}

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
    /// How long to poll for an ACK before sleeping (zero: never poll); no
    /// polling either while `threads` is crowded.
    pub spin: Duration,
    pub threads: Arc<Threads>,
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

/// Decides whether to poll for the next ACK before sleeping, from how the
/// last polls went: a client that answers within [`Limits::spin`] (same
/// host, fast LAN) is polled for every block; one that does not (firmware
/// on a real network, an emulated NIC) costs one fruitless spin every
/// `2^MAX_BACKOFF` blocks.
#[derive(Debug, Default)]
struct Spinner {
    /// Blocks to wait without spinning.
    skip: u32,
    /// Current backoff exponent.
    shift: u32,
}

impl Spinner {
    fn should_spin(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    fn spun(&mut self, found: bool) {
        if found {
            self.shift = 0;
        } else {
            self.shift = (self.shift + 1).min(MAX_BACKOFF);
            self.skip = (1 << self.shift) - 1;
        }
    }
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
    let mut conn = Conn { sock, peer, limits: &job.limits, rx: [0; 2048], spinner: Spinner::default() };
    let mut tx = vec![0u8; DATA_HEADER + usize::from(job.blksize)];
    let len = job.source.len();
    let blk = u64::from(job.blksize);
    let total = len / blk + 1;
    let result = (|| -> io::Result<Outcome> {
        if !job.oack.is_empty() {
            if let Some(end) = conn.exchange(0, &job.oack, report)? {
                return Ok(end);
            }
        }
        for block in 1..=total {
            if conn.limits.stop_requested() {
                return Ok(Outcome::Shutdown);
            }
            let offset = (block - 1) * blk;
            if !job.source.is_resident(offset, offset + blk) {
                job.runtime.block_on(job.source.prepare(offset, offset + blk))?;
            }
            tx.truncate(DATA_HEADER);
            packet::write_data_header(&mut tx, block as u16);
            tx.extend_from_slice(job.source.get(offset, blk as usize));
            if let Some(end) = conn.exchange(block, &tx, report)? {
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

/// The transfer's side of the conversation.
struct Conn<'a> {
    sock: &'a UdpSocket,
    peer: SocketAddr,
    limits: &'a Limits,
    rx: [u8; 2048],
    spinner: Spinner,
}

impl Conn<'_> {
    /// Sends `packet` (block `block`, or the OACK as block 0) until its ACK
    /// comes; `Some` ends the transfer.
    fn exchange(&mut self, block: u64, packet: &[u8], report: &mut Progress) -> io::Result<Option<Outcome>> {
        let mut retries = 0;
        loop {
            self.sock.send(packet)?;
            match self.wait_ack(block as u16, Instant::now() + self.limits.timeout)? {
                Wait::Acked => return Ok(None),
                Wait::End(outcome) => return Ok(Some(outcome)),
                Wait::Timeout => {
                    retries += 1;
                    if retries > self.limits.max_retries {
                        return Ok(Some(Outcome::TimedOut));
                    }
                    report.retransmits += 1;
                }
            }
        }
    }

    /// Waits for ACK `want` until `deadline`. Duplicate and stale ACKs are
    /// ignored, never answered (sorcerer's apprentice), as is junk.
    fn wait_ack(&mut self, want: u16, deadline: Instant) -> io::Result<Wait> {
        let mut spin = !self.limits.spin.is_zero() && !self.limits.threads.crowded() && self.spinner.should_spin();
        loop {
            let received = if spin {
                spin = false;
                let polled = self.poll(Instant::now() + self.limits.spin);
                self.spinner.spun(polled.is_some());
                match polled {
                    Some(r) => r,
                    None => self.sock.recv(&mut self.rx),
                }
            } else {
                self.sock.recv(&mut self.rx)
            };
            match received {
                Ok(n) => match Packet::decode(&self.rx[..n]) {
                    Ok(Packet::Ack { block }) if block == want => return Ok(Wait::Acked),
                    Ok(Packet::Ack { .. }) => {}
                    Ok(Packet::Error { code, message }) => {
                        return Ok(Wait::End(Outcome::ClientError { code, message: message.into_owned() }))
                    }
                    Ok(other) => debug!(peer = %self.peer, kind = other.kind(), "tftp: ignoring unexpected packet"),
                    Err(e) => debug!(peer = %self.peer, "tftp: ignoring malformed datagram: {e}"),
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                // An ICMP error about an earlier DATA: the timeout decides.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    debug!(peer = %self.peer, "tftp: peer reports port unreachable");
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if self.limits.stop_requested() {
                return Ok(Wait::End(Outcome::Shutdown));
            }
            if Instant::now() >= deadline {
                return Ok(Wait::Timeout);
            }
        }
    }

    /// Polls the socket without sleeping until `until`: `None` if nothing
    /// (not even an error) arrived.
    fn poll(&mut self, until: Instant) -> Option<io::Result<usize>> {
        loop {
            match recv(self.sock.as_raw_fd(), &mut self.rx, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Some(Ok(n)),
                Err(Errno::EAGAIN) => {}
                Err(e) => return Some(Err(e.into())),
            }
            if Instant::now() >= until {
                return None;
            }
            std::hint::spin_loop();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: (server side, blocking with a short read timeout; client side).
    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        server.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        (server, client)
    }

    fn limits(spin: Duration) -> (watch::Sender<bool>, Limits) {
        let (tx, shutdown) = watch::channel(false);
        (tx, Limits { timeout: Duration::from_millis(100), max_retries: 1, shutdown, spin, threads: Threads::new(1) })
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut v = Vec::new();
        packet::encode_ack(&mut v, block);
        v
    }

    #[test]
    fn spinner_backs_off_exponentially_and_resets_on_a_hit() {
        let mut s = Spinner::default();
        assert!(s.should_spin());
        let mut skipped = Vec::new();
        for _ in 0..12 {
            s.spun(false);
            let mut n = 0;
            while !s.should_spin() {
                n += 1;
            }
            skipped.push(n);
        }
        assert_eq!(skipped, [1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 1023, 1023]);
        s.spun(true);
        assert_eq!((s.skip, s.shift), (0, 0));
        assert!(s.should_spin());
    }

    #[test]
    fn an_ack_that_is_already_there_is_taken_by_the_spin() {
        let (server, client) = pair();
        let (_stop, limits) = limits(Duration::from_millis(5));
        let peer = client.local_addr().unwrap();
        let mut conn =
            Conn { sock: &server, peer, limits: &limits, rx: [0; 2048], spinner: Spinner { skip: 0, shift: 3 } };
        client.send(&ack(4)).unwrap(); // stale: ignored
        client.send(&ack(5)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(conn.wait_ack(5, Instant::now() + Duration::from_secs(1)).unwrap(), Wait::Acked));
        // A hit resets the backoff; a wait without a spin would have left it at 3.
        assert_eq!((conn.spinner.skip, conn.spinner.shift), (0, 0), "the spin found the datagram");
    }

    #[test]
    fn no_spin_while_more_transfers_run_than_there_are_threads() {
        let (server, client) = pair();
        let (_stop, limits) = limits(Duration::from_millis(5));
        let peer = client.local_addr().unwrap();
        let _one = limits.threads.started();
        let two = limits.threads.started();
        let mut conn =
            Conn { sock: &server, peer, limits: &limits, rx: [0; 2048], spinner: Spinner { skip: 0, shift: 3 } };
        client.send(&ack(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(conn.wait_ack(1, Instant::now() + Duration::from_secs(1)).unwrap(), Wait::Acked));
        assert_eq!(conn.spinner.shift, 3, "spun although crowded");
        drop(two);
        client.send(&ack(2)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(conn.wait_ack(2, Instant::now() + Duration::from_secs(1)).unwrap(), Wait::Acked));
        assert_eq!(conn.spinner.shift, 0, "one transfer per thread again: spins");
    }

    #[test]
    fn a_fruitless_spin_backs_off_and_the_ack_still_arrives() {
        let (server, client) = pair();
        let (_stop, limits) = limits(Duration::from_micros(200));
        let peer = client.local_addr().unwrap();
        let mut conn = Conn { sock: &server, peer, limits: &limits, rx: [0; 2048], spinner: Spinner::default() };
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            client.send(&ack(1)).unwrap();
            client
        });
        assert!(matches!(conn.wait_ack(1, Instant::now() + Duration::from_secs(2)).unwrap(), Wait::Acked));
        assert_eq!((conn.spinner.skip, conn.spinner.shift), (1, 1), "the spin found nothing");
        let client = late.join().unwrap();
        // The next wait does not spin (skip 1 -> 0), and a timeout is a timeout.
        assert!(matches!(conn.wait_ack(2, Instant::now() + Duration::from_millis(30)).unwrap(), Wait::Timeout));
        assert_eq!(conn.spinner.skip, 0);
        // A client ERROR ends the wait.
        let mut err = Vec::new();
        packet::encode_error(&mut err, 0, "stop");
        client.send(&err).unwrap();
        assert!(matches!(conn.wait_ack(2, Instant::now() + Duration::from_secs(1)).unwrap(), Wait::End(_)));
    }

    #[test]
    fn shutdown_ends_a_wait_within_a_receive_timeout() {
        let (server, client) = pair();
        let (stop, limits) = limits(Duration::ZERO);
        let peer = client.local_addr().unwrap();
        let mut conn = Conn { sock: &server, peer, limits: &limits, rx: [0; 2048], spinner: Spinner::default() };
        stop.send(true).unwrap();
        let started = Instant::now();
        assert!(matches!(
            conn.wait_ack(1, Instant::now() + Duration::from_secs(5)).unwrap(),
            Wait::End(Outcome::Shutdown)
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(stop);
        // A server that is gone counts as a shutdown too.
        let (stop, limits) = self::limits(Duration::ZERO);
        drop(stop);
        let mut conn = Conn { sock: &server, peer, limits: &limits, rx: [0; 2048], spinner: Spinner::default() };
        assert!(matches!(
            conn.wait_ack(1, Instant::now() + Duration::from_secs(5)).unwrap(),
            Wait::End(Outcome::Shutdown)
        ));
    }
}
