//! The transfer's UDP socket, registered with the runtime for *read* readiness only.
//!
//! tokio's `UdpSocket` registers every socket for read and write readiness
//! (edge-triggered). A UDP socket becomes writable again each time the
//! kernel frees a datagram we sent, which on loopback, veth and tap happens
//! during or right after the `send` itself. So every DATA block cost a
//! second, useless trip through `epoll_wait` (it returned the write edge,
//! nobody was waiting for it, and the runtime parked again): measured as
//! about 1.9 `epoll_wait` calls per lockstep block. Registered for reads
//! only, a block costs one `epoll_wait`, one `recv` and one `send`.
//!
//! Sends therefore never wait for readiness: they go straight to the
//! non-blocking socket. A UDP send fails with `EAGAIN` only when the socket
//! send buffer is full of datagrams the device has not taken yet; then the
//! send is retried after a short sleep, which is what a write-readiness wait
//! would have cost anyway on that rare path.
//!
//! This module owns only the socket plumbing; it knows nothing of TFTP.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV6, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Wait before retrying a send the kernel refused with `EAGAIN`.
const SEND_RETRY: Duration = Duration::from_millis(1);

pub(crate) struct TransferSocket {
    fd: AsyncFd<StdUdpSocket>,
}

impl TransferSocket {
    /// Binds an ephemeral port on `local`'s IP (an unspecified IP stays
    /// unspecified), connects it to `peer` and registers it with the current
    /// runtime.
    ///
    /// Connected, the socket takes the kernel's fast paths (UDP early demux
    /// and a cached route on receive, no route lookup per send), and the
    /// kernel itself keeps other senders out: a datagram from any other
    /// address or port finds no socket and is answered with ICMP port
    /// unreachable, while the transfer goes on undisturbed.
    pub fn connect_near(local: SocketAddr, peer: SocketAddr) -> io::Result<TransferSocket> {
        let addr = match local {
            SocketAddr::V4(a) => SocketAddr::new((*a.ip()).into(), 0),
            SocketAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())),
        };
        let sock = StdUdpSocket::bind(addr)?;
        sock.connect(peer)?;
        sock.set_nonblocking(true)?;
        // Deprecated in tokio 1.54 because an arbitrary `AsRawFd` type may close or swap its
        // fd while registered; the safe replacement is `unsafe`. Here the `AsyncFd` owns the
        // std socket and nothing else can reach its fd, so the registration cannot outlive it.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(sock, Interest::READABLE)?;
        Ok(TransferSocket { fd })
    }

    /// Takes the socket off the runtime (deregistered, so datagrams no longer
    /// wake it) and makes it blocking, with `read_timeout` on receives.
    pub fn into_blocking(self, read_timeout: Duration) -> io::Result<StdUdpSocket> {
        let sock = self.fd.into_inner();
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(read_timeout))?;
        Ok(sock)
    }

    /// Receives one datagram from the peer, waiting for it.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| s.get_ref().recv(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Forgets that the socket was readable, without a system call.
    ///
    /// For lockstep transfers, called after an ACK was read and before the
    /// next block goes out: the ACK for that block cannot be queued yet, so
    /// the `recv` that would only return `EAGAIN` is skipped. A stray
    /// datagram that arrived in between (a duplicate ACK, a stranger) is not
    /// lost: it is read before the next ACK, whose arrival wakes us.
    pub fn forget_readable(&self) {
        // `try_io` clears the readiness it observed when the closure reports
        // `WouldBlock`; a readiness event delivered after that observation is kept.
        let _ = self.fd.try_io(Interest::READABLE, |_| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
    }

    /// Sends one datagram to the peer.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.fd.get_ref().send(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(SEND_RETRY).await,
                result => return result,
            }
        }
    }

    /// `sendmsg` to the peer with ancillary data (UDP GSO), retried like
    /// [`Self::send`].
    pub async fn sendmsg(&self, iov: &[IoSlice<'_>], cmsgs: &[ControlMessage<'_>]) -> io::Result<usize> {
        let fd = self.fd.get_ref().as_raw_fd();
        loop {
            match sendmsg::<SockaddrStorage>(fd, iov, cmsgs, MsgFlags::empty(), None).map_err(io::Error::from) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(SEND_RETRY).await,
                result => return result,
            }
        }
    }
}
