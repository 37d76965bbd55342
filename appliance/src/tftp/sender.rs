//! Puts runs of DATA blocks on the wire with as few system calls as possible.
//!
//! This module owns the DATA send path of a transfer. A run of two or more
//! blocks (a window, or part of one) goes out as a single `sendmsg` with UDP
//! generic segmentation offload (`UDP_SEGMENT`, Linux >= 4.18): one iovec
//! pair (4-byte header, payload borrowed from the [`Source`]) per block, cut
//! by the kernel into one datagram per block, so there is neither a copy nor
//! a syscall per block. If the kernel or route refuses GSO (old kernel,
//! datagrams above the path MTU, IPsec, ...), the transfer falls back for good
//! to one `send_to` per block from a reused buffer. Single blocks (lockstep
//! transfers) always take that plain path.
//!
//! It must not decide which blocks to send (the transfer machine does) nor
//! look at what comes back.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use appliance_core::tftp::packet::{self, DATA_HEADER};
use appliance_core::tftp::wire_block;
use nix::errno::Errno;
use nix::sys::socket::ControlMessage;
use tracing::debug;

use super::source::Source;
use super::udp::TransferSocket;

/// Kernel limit on segments per GSO send (UDP_MAX_SEGMENTS on older kernels).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload of the (pre-segmentation) GSO datagram over IPv4.
const MAX_GSO_BYTES: usize = 65_507;

pub(crate) struct DataSender {
    peer: SocketAddr,
    blksize: usize,
    /// Blocks per GSO send; below 2 means GSO is off.
    gso_batch: usize,
    headers: Vec<[u8; DATA_HEADER]>,
    /// Header + payload of one block, for the plain path.
    packet: Vec<u8>,
    /// The block `packet` already holds (built ahead by [`Self::prepare`]),
    /// and its length.
    prepared: Option<(u64, usize)>,
}

impl DataSender {
    pub fn new(peer: SocketAddr, blksize: u16, windowsize: u16, source: &Source) -> Self {
        let blksize = usize::from(blksize);
        let segment = blksize + DATA_HEADER;
        let gso_batch = MAX_GSO_SEGMENTS
            .min(MAX_GSO_BYTES / segment)
            .min(usize::from(windowsize))
            .min(source.max_resident() / blksize);
        DataSender {
            peer,
            blksize,
            gso_batch,
            headers: vec![[0; DATA_HEADER]; gso_batch.max(1)],
            packet: Vec::new(),
            prepared: None,
        }
    }

    /// Sends blocks `from..=to` (absolute, 1-based; wire numbers wrap).
    pub async fn send(&mut self, sock: &TransferSocket, source: &mut Source, from: u64, to: u64) -> io::Result<()> {
        let mut block = from;
        while block <= to {
            let n = usize::try_from(to - block + 1).unwrap_or(usize::MAX).min(self.gso_batch);
            if n >= 2 {
                match self.send_gso(sock, source, block, n).await {
                    Ok(()) => {
                        block += n as u64;
                        continue;
                    }
                    Err(e) if gso_refused(&e) => {
                        debug!(peer = %self.peer, "tftp: UDP GSO unavailable ({e}), sending per block");
                        self.gso_batch = 0;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.send_one(sock, source, block).await?;
            block += 1;
        }
        Ok(())
    }

    /// Builds the packet for `block` ahead of time, so that sending it when
    /// the ACK before it arrives is a bare `send`: a lockstep transfer calls
    /// this while it waits, taking the file read and copy off the round trip.
    pub async fn prepare(&mut self, source: &mut Source, block: u64) -> io::Result<()> {
        if self.prepared.map(|(b, _)| b) == Some(block) {
            return Ok(());
        }
        let data = source.slice((block - 1) * self.blksize as u64, self.blksize).await?;
        let n = data.len();
        if self.packet.len() < DATA_HEADER + self.blksize {
            self.packet.resize(DATA_HEADER + self.blksize, 0);
        }
        self.packet[DATA_HEADER..DATA_HEADER + n].copy_from_slice(data);
        packet::write_data_header(&mut self.packet, wire_block(block));
        self.prepared = Some((block, DATA_HEADER + n));
        Ok(())
    }

    async fn send_one(&mut self, sock: &TransferSocket, source: &mut Source, block: u64) -> io::Result<()> {
        self.prepare(source, block).await?;
        let len = self.prepared.map_or(0, |(_, len)| len);
        sock.send(&self.packet[..len]).await?;
        Ok(())
    }

    /// One `sendmsg` carrying `n` blocks starting at `first`, segmented by
    /// the kernel. Every block but the last of the content is exactly
    /// `blksize` long, as GSO requires of all segments but the last.
    async fn send_gso(&mut self, sock: &TransferSocket, source: &mut Source, first: u64, n: usize) -> io::Result<()> {
        let blk = self.blksize as u64;
        let start = (first - 1) * blk;
        source.prepare(start, start + n as u64 * blk).await?;
        for (i, header) in self.headers[..n].iter_mut().enumerate() {
            packet::write_data_header(header, wire_block(first + i as u64));
        }
        let source = &*source;
        let mut iov = Vec::with_capacity(2 * n);
        for (i, header) in self.headers[..n].iter().enumerate() {
            iov.push(IoSlice::new(header));
            iov.push(IoSlice::new(source.get(start + i as u64 * blk, self.blksize)));
        }
        let segment = (self.blksize + DATA_HEADER) as u16;
        let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
        sock.sendmsg(&iov, &cmsgs).await?;
        Ok(())
    }
}

/// Errors meaning "this kernel/route cannot do UDP GSO", as opposed to real
/// send failures.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::EIO | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP | Errno::EMSGSIZE)
    )
}
