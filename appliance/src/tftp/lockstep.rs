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

use appliance_core::tftp::packet::{self, DATA_HEADER};
use appliance_core::tftp::{wire_block, Received, Transfer, Transmit};
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::source::Source;
use crate::fair_share::{Activity, Stop};

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
    /// The machine, before its first packet went out.
    pub transfer: Transfer,
    pub source: Source,
    pub runtime: Handle,
    pub settings: Settings,
}

/// When to stop, and whether to poll for ACKs.
pub(crate) struct Settings {
    /// Whether to go on: a server shutdown, or room needed for another request.
    pub shutdown: watch::Receiver<Stop>,
    /// Touched on every ACK that makes progress (see `crate::fair_share`).
    pub activity: Activity,
    /// How long to poll for an ACK before sleeping (zero: never poll); no
    /// polling either while `threads` is crowded.
    pub spin: Duration,
    pub threads: Arc<Threads>,
}

impl Settings {
    /// What the server asked, if it asked to stop (a server that is gone counts as a shutdown).
    fn stop_requested(&self) -> Option<Stop> {
        match *self.shutdown.borrow() {
            Stop::Run if self.shutdown.has_changed().is_err() => Some(Stop::Shutdown),
            Stop::Run => None,
            stop => Some(stop),
        }
    }
}

/// Decides whether to poll for the next ACK before sleeping, from how the
/// last polls went: a client that answers within [`Settings::spin`] (same
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

/// Runs the transfer to its end on the calling (blocking) thread and returns the machine,
/// which says how it ended. `sock` is connected to the peer, blocking, with [`POLL_SLICE`]
/// as read timeout.
pub(crate) fn run(sock: &UdpSocket, peer: SocketAddr, job: Job) -> Transfer {
    let Job { mut transfer, mut source, runtime, settings } = job;
    let mut conn = Conn { sock, peer, settings: &settings, rx: [0; 2048], spinner: Spinner::default(), sent: false };
    let mut tx = Vec::with_capacity(DATA_HEADER + usize::from(transfer.blksize()));
    let epoch = Instant::now();
    let mut now = Duration::ZERO;
    loop {
        while let Some(packet) = transfer.poll_transmit(now) {
            let sent = match packet {
                Transmit::Oack(oack) => sock.send(oack).map(drop),
                Transmit::Data { first, last } => {
                    let blksize = transfer.blksize();
                    (first..=last)
                        .try_for_each(|block| send_block(sock, &mut tx, &mut source, &runtime, blksize, block))
                }
                Transmit::Error(error) => {
                    if let Err(e) = sock.send(error) {
                        debug!(%peer, "tftp: sending ERROR failed: {e}");
                    }
                    Ok(())
                }
            };
            conn.sent = true;
            if let Err(e) = sent {
                transfer.fail(e);
            }
        }
        if transfer.outcome().is_some() {
            return transfer;
        }
        match conn.receive() {
            Ok(Some(n)) => match transfer.handle(&conn.rx[..n]) {
                Received::Progress => settings.activity.touch(),
                Received::Unexpected(kind) => debug!(%peer, kind, "tftp: ignoring unexpected packet"),
                Received::Malformed(e) => debug!(%peer, "tftp: ignoring malformed datagram: {e}"),
                _ => {}
            },
            Ok(None) => {}
            Err(e) => transfer.fail(e),
        }
        if let Some(stop) = settings.stop_requested() {
            super::transfer::stop_transfer(&mut transfer, stop);
        }
        now = epoch.elapsed();
        transfer.handle_timeout(now);
    }
}

/// Builds DATA `block` in `tx` from `source` (reading the file first if the block is not
/// resident) and sends it.
fn send_block(
    sock: &UdpSocket,
    tx: &mut Vec<u8>,
    source: &mut Source,
    runtime: &Handle,
    blksize: u16,
    block: u64,
) -> io::Result<()> {
    let blk = u64::from(blksize);
    let offset = (block - 1) * blk;
    if !source.is_resident(offset, offset + blk) {
        runtime.block_on(source.prepare(offset, offset + blk))?;
    }
    tx.clear();
    tx.extend_from_slice(&[0; DATA_HEADER]);
    packet::write_data_header(tx, wire_block(block));
    tx.extend_from_slice(source.get(offset, usize::from(blksize)));
    sock.send(tx)?;
    Ok(())
}

/// The transfer's side of the conversation.
struct Conn<'a> {
    sock: &'a UdpSocket,
    peer: SocketAddr,
    settings: &'a Settings,
    rx: [u8; 2048],
    spinner: Spinner,
    /// A packet went out since the last receive: the next one may be polled for.
    sent: bool,
}

impl Conn<'_> {
    /// Receives one datagram into `rx`: its length, or `None` when a receive timeout
    /// ([`POLL_SLICE`]) passed or the call was interrupted. The first receive after a send
    /// may poll before it sleeps (see [`Spinner`]).
    fn receive(&mut self) -> io::Result<Option<usize>> {
        let spin = std::mem::take(&mut self.sent)
            && !self.settings.spin.is_zero()
            && !self.settings.threads.crowded()
            && self.spinner.should_spin();
        let received = if spin {
            let polled = self.poll(Instant::now() + self.settings.spin);
            self.spinner.spun(polled.is_some());
            match polled {
                Some(r) => r,
                None => self.sock.recv(&mut self.rx),
            }
        } else {
            self.sock.recv(&mut self.rx)
        };
        match received {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            // An ICMP error about an earlier DATA: the timeout decides.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(peer = %self.peer, "tftp: peer reports port unreachable");
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::handler::Content;
    use appliance_core::tftp::{Limits, Outcome};

    /// A connected pair: (server side, blocking with a short read timeout; client side).
    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        server.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        (server, client)
    }

    fn settings(spin: Duration) -> (watch::Sender<Stop>, Settings) {
        let (tx, shutdown) = watch::channel(Stop::Run);
        (tx, Settings { shutdown, activity: Activity::default(), spin, threads: Threads::new(1) })
    }

    fn conn<'a>(server: &'a UdpSocket, settings: &'a Settings, spinner: Spinner) -> Conn<'a> {
        let peer = server.peer_addr().unwrap();
        Conn { sock: server, peer, settings, rx: [0; 2048], spinner, sent: true }
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut v = Vec::new();
        packet::encode_ack(&mut v, block);
        v
    }

    /// Receives until a datagram comes (each call waits at most one receive timeout).
    fn next_datagram(conn: &mut Conn<'_>) -> Vec<u8> {
        for _ in 0..200 {
            if let Some(n) = conn.receive().unwrap() {
                return conn.rx[..n].to_vec();
            }
        }
        panic!("nothing arrived within 2 s");
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
    fn a_datagram_that_is_already_there_is_taken_by_the_spin() {
        let (server, client) = pair();
        let (_stop, settings) = settings(Duration::from_millis(5));
        let mut conn = conn(&server, &settings, Spinner { skip: 0, shift: 3 });
        client.send(&ack(4)).unwrap();
        client.send(&ack(5)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(next_datagram(&mut conn), ack(4));
        // A hit resets the backoff; a receive without a spin would have left it at 3.
        assert_eq!((conn.spinner.skip, conn.spinner.shift), (0, 0), "the spin found the datagram");
        // Only the first receive after a send spins.
        conn.spinner.shift = 3;
        assert_eq!(next_datagram(&mut conn), ack(5));
        assert_eq!(conn.spinner.shift, 3, "spun without a send");
    }

    #[test]
    fn no_spin_while_more_transfers_run_than_there_are_threads() {
        let (server, client) = pair();
        let (_stop, settings) = settings(Duration::from_millis(5));
        let _one = settings.threads.started();
        let two = settings.threads.started();
        let mut conn = conn(&server, &settings, Spinner { skip: 0, shift: 3 });
        client.send(&ack(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(next_datagram(&mut conn), ack(1));
        assert_eq!(conn.spinner.shift, 3, "spun although crowded");
        drop(two);
        client.send(&ack(2)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        conn.sent = true;
        assert_eq!(next_datagram(&mut conn), ack(2));
        assert_eq!(conn.spinner.shift, 0, "one transfer per thread again: spins");
    }

    #[test]
    fn a_fruitless_spin_backs_off_and_the_datagram_still_arrives() {
        let (server, client) = pair();
        let (_stop, settings) = settings(Duration::from_micros(200));
        let mut conn = conn(&server, &settings, Spinner::default());
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            client.send(&ack(1)).unwrap();
        });
        assert_eq!(next_datagram(&mut conn), ack(1));
        assert_eq!((conn.spinner.skip, conn.spinner.shift), (1, 1), "the spin found nothing");
        late.join().unwrap();
        // The next receive after a send does not spin (skip 1 -> 0); a timeout is `None`.
        conn.sent = true;
        assert_eq!(conn.receive().unwrap(), None);
        assert_eq!((conn.spinner.skip, conn.spinner.shift), (0, 1));
    }

    /// Runs a lockstep transfer of `len` bytes on this thread against `client`.
    fn job(len: usize, settings: Settings, runtime: &tokio::runtime::Runtime) -> Job {
        let transfer = Transfer::new(&[], len as u64, &Limits { timeout: Duration::from_secs(5), ..Limits::default() });
        let source = Source::new(Content::Bytes(vec![7; len].into()), transfer.blksize(), 1);
        Job { transfer, source, runtime: runtime.handle().clone(), settings }
    }

    #[test]
    fn runs_a_transfer_to_its_end() {
        let (server, client) = pair();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (_stop, settings) = settings(Duration::ZERO);
        let acker = std::thread::spawn(move || {
            let mut buf = [0u8; 600];
            let mut sizes = Vec::new();
            loop {
                let n = client.recv(&mut buf).unwrap();
                sizes.push(n - DATA_HEADER);
                client.send(&[0, 4, buf[2], buf[3]]).unwrap();
                if n - DATA_HEADER < 512 {
                    return sizes;
                }
            }
        });
        let peer = server.peer_addr().unwrap();
        let t = run(&server, peer, job(1100, settings, &rt));
        assert_eq!(acker.join().unwrap(), [512, 512, 76]);
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
        assert_eq!((t.progress().blocks, t.progress().bytes), (3, 1100));
    }

    #[test]
    fn shutdown_ends_a_transfer_within_a_receive_timeout() {
        let (server, client) = pair();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let peer = server.peer_addr().unwrap();
        let mut buf = [0u8; 600];
        for gone in [false, true] {
            let (stop, settings) = settings(Duration::ZERO);
            // A server that is gone counts as a shutdown too.
            let stopper = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                if gone {
                    drop(stop);
                } else {
                    stop.send(Stop::Shutdown).unwrap();
                }
            });
            let started = Instant::now();
            let t = run(&server, peer, job(5000, settings, &rt));
            assert!(started.elapsed() < Duration::from_secs(1), "{gone}");
            assert_eq!(t.outcome(), Some(&Outcome::Shutdown), "{gone}");
            stopper.join().unwrap();
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..4], [0, 3, 0, 1], "DATA 1 first");
            let n2 = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..4], [0, 5, 0, 0], "then ERROR 0 ({n}, {n2})");
        }
    }
}
