//! IPv6 router advertisements on the boot interface, so iPXE stops waiting for one.
//!
//! iPXE 2019 waits ~13 s for an IPv6 router advertisement after DHCPv4 at every iPXE stage
//! (docs/firmware.md#ipxe-wait-times). An RA from us that says "no default router (lifetime 0), no prefixes, no
//! DHCPv6 (M and O clear)" ends the wait at once and configures nothing. We answer router
//! solicitations and repeat the advertisement every few seconds.
//!
//! Needs a raw ICMPv6 socket (CAP_NET_RAW). Without one, or without IPv6 on the interface,
//! `advertise` logs why and returns: the boot still works, only slower. No policy here.

use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

/// ICMPv6 message types (RFC 4861).
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Unsolicited advertisements this often: short, because a client that missed the last one
/// waits until the next; the boot network is ours, so the traffic is negligible.
pub const INTERVAL: Duration = Duration::from_secs(3);
/// Solicitations are answered at most this often, so a flood of them is not amplified.
const MIN_GAP: Duration = Duration::from_millis(200);

/// The advertisement: type 134, code 0, checksum (filled in by the kernel for ICMPv6 raw
/// sockets, RFC 3542 §3.1), current hop limit 0 (unspecified), M and O flags clear, router
/// lifetime 0 (not a default router), reachable time and retransmission timer 0
/// (unspecified), and no options: no prefix, no link-layer address (RFC 4861 §4.2 lets a
/// router omit it).
pub fn router_advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra
}

/// Sends router advertisements on `interface` until `shutdown` resolves. Returns at once,
/// after logging why, when the socket cannot be opened or the interface does not exist.
pub async fn advertise(interface: &str, shutdown: impl Future<Output = ()>) {
    let socket = match open(interface) {
        Ok(s) => s,
        Err(e) => {
            warn!(%interface, "ipv6 router advertisements disabled (iPXE will wait ~13 s per stage for one): {e}");
            return;
        }
    };
    info!(%interface, "ipv6: advertising a router-less network so iPXE does not wait");
    let ra = router_advertisement();
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, socket.1);
    let mut tick = tokio::time::interval(INTERVAL);
    let mut buf = [0u8; 1500];
    let mut last_answer = tokio::time::Instant::now() - MIN_GAP;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => send(&socket.0, &ra, to).await,
            got = socket.0.recv_from(&mut buf) => match got {
                Ok((n, from)) if n >= 4 && buf[0] == ROUTER_SOLICITATION && buf[1] == 0 => {
                    if last_answer.elapsed() >= MIN_GAP {
                        debug!(%from, "ipv6: router solicitation answered");
                        last_answer = tokio::time::Instant::now();
                        send(&socket.0, &ra, to).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!("ipv6: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn send(socket: &UdpSocket, ra: &[u8], to: SocketAddrV6) {
    if let Err(e) = socket.send_to(ra, to).await {
        debug!("ipv6: sending the router advertisement failed: {e}");
    }
}

/// A raw ICMPv6 socket on `interface`, hop limit 255 as RFC 4861 requires of RAs, joined to
/// all-routers to hear solicitations. Tokio's UDP type only supplies readiness and
/// `sendto`/`recvfrom` here, which work the same on a raw datagram socket.
fn open(interface: &str) -> io::Result<(UdpSocket, u32)> {
    let index = nix::net::if_::if_nametoindex(interface)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("interface {interface:?}: {e}")))?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_multicast_if_v6(index)?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_loop_v6(false)?;
    socket.join_multicast_v6(&ALL_ROUTERS, index)?;
    socket.set_nonblocking(true)?;
    let std_socket: std::net::UdpSocket = socket.into();
    Ok((UdpSocket::from_std(std_socket)?, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_is_routerless_and_stateless() {
        let ra = router_advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(ra[1], 0, "code");
        assert_eq!(ra[5], 0, "M and O flags clear");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(ra.len(), 16, "no options, no prefix");
    }

    #[tokio::test]
    async fn missing_interface_logs_and_returns() {
        let done =
            tokio::time::timeout(Duration::from_secs(2), advertise("no-such-if0", std::future::pending::<()>())).await;
        assert!(done.is_ok(), "advertise must return when it cannot run");
    }
}
