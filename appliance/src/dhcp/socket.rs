//! DHCP sockets: binding with the options a DHCP server needs, and datagram I/O that learns
//! the interface and local address each request arrived on (IP_PKTINFO) and sends the reply
//! out of that interface from that address.
//!
//! No protocol and no policy here: bytes in, bytes out.

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A bound, non-blocking IPv4 UDP socket for DHCP (port 67) or PXE (port 4011).
#[derive(Debug)]
pub struct DhcpSocket {
    socket: Socket,
    local: SocketAddrV4,
}

/// Binds a DHCP socket: SO_REUSEADDR (a restart must not wait), SO_BROADCAST (replies go to
/// 255.255.255.255), IP_PKTINFO (learn the ingress interface), and SO_BINDTODEVICE when
/// `interface` is named (needs CAP_NET_RAW).
///
/// Broadcast requests reach only sockets bound to the wildcard address, so the daemon binds
/// `0.0.0.0:67` and names the boot interface; tests bind `127.0.0.1:0`.
pub fn bind(addr: SocketAddr, interface: Option<&str>) -> io::Result<DhcpSocket> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "DHCP sockets are IPv4"));
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    if let Some(name) = interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to interface {name:?} (SO_BINDTODEVICE): {e}")))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(v4).into())?;
    let local = match socket.local_addr()?.as_socket() {
        Some(SocketAddr::V4(a)) => a,
        _ => v4,
    };
    Ok(DhcpSocket { socket, local })
}

impl DhcpSocket {
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    pub(super) fn into_async(self) -> io::Result<AsyncSocket> {
        // tokio's UdpSocket gives readiness; the datagrams themselves go through recvmsg and
        // sendmsg, which it does not expose with control messages.
        let std_socket: std::net::UdpSocket = self.socket.into();
        Ok(AsyncSocket { socket: UdpSocket::from_std(std_socket)?, local: self.local })
    }
}

/// A received datagram's metadata.
#[derive(Clone, Copy, Debug)]
pub(super) struct Received {
    pub len: usize,
    pub source: SocketAddrV4,
    /// Ingress interface (IP_PKTINFO), when the kernel said.
    pub ifindex: Option<u32>,
    /// Our address on that interface, the right source for the reply.
    pub local: Option<Ipv4Addr>,
    /// The datagram did not fit the buffer.
    pub truncated: bool,
}

/// Where a reply leaves from.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Egress {
    pub ifindex: Option<u32>,
    pub local: Option<Ipv4Addr>,
}

pub(super) struct AsyncSocket {
    socket: UdpSocket,
    pub local: SocketAddrV4,
}

impl AsyncSocket {
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        self.socket.async_io(Interest::READABLE, || recv_with_info(fd, buf)).await
    }

    /// Sends `bytes` to `dest` out of `egress`'s interface and address; if the kernel refuses
    /// that (the address is not ours on that interface, say), sends without them.
    pub async fn send(&self, bytes: &[u8], dest: SocketAddrV4, egress: Egress) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let pinned = egress.ifindex.is_some() || egress.local.is_some();
        self.socket
            .async_io(Interest::WRITABLE, || match send_with_info(fd, bytes, dest, egress) {
                Err(e) if pinned && e.kind() != io::ErrorKind::WouldBlock => {
                    tracing::debug!(%dest, "dhcp: sending with IP_PKTINFO failed ({e}); sending without");
                    send_with_info(fd, bytes, dest, Egress::default())
                }
                other => other,
            })
            .await
    }
}

fn recv_with_info(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    let source =
        msg.address.map(|a| SocketAddrV4::new(a.ip(), a.port())).unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut out = Received {
        len: msg.bytes,
        source,
        ifindex: None,
        local: None,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                out.ifindex = u32::try_from(info.ipi_ifindex).ok().filter(|i| *i != 0);
                let local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                out.local = (!local.is_unspecified()).then_some(local);
            }
        }
    }
    Ok(out)
}

fn send_with_info(fd: RawFd, bytes: &[u8], dest: SocketAddrV4, egress: Egress) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let addr = SockaddrIn::from(dest);
    let info = libc::in_pktinfo {
        ipi_ifindex: egress.ifindex.and_then(|i| i32::try_from(i).ok()).unwrap_or(0),
        ipi_spec_dst: libc::in_addr { s_addr: u32::from(egress.local.unwrap_or(Ipv4Addr::UNSPECIFIED)).to_be() },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let with_info = [ControlMessage::Ipv4PacketInfo(&info)];
    let cmsgs: &[ControlMessage<'_>] =
        if egress.ifindex.is_some() || egress.local.is_some() { &with_info } else { &[] };
    sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
}
