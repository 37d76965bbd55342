//! Minimal async TFTP read client (RRQ with blksize, tsize, timeout and
//! windowsize options), used by tests and benchmarks.
//!
//! This module owns the client side of one download into memory. It is not a
//! general-purpose client: no WRQ, no netascii conversion, and no dallying
//! after the final ACK (if that ACK is lost the server retransmits and gives
//! up on its own). It must not be used by the server, and it speaks the wire
//! through the core's codec only, so it is an independent check of the
//! daemon's transfer machine.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use appliance_core::tftp::packet::{self, Mode, Packet, Request};
use appliance_core::tftp::{TftpError, DEFAULT_BLKSIZE};
use tokio::net::UdpSocket;

/// What to ask the server for.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `blksize` option to request (RFC 2348).
    pub blksize: Option<u16>,
    /// `windowsize` option to request (RFC 7440).
    pub windowsize: Option<u16>,
    /// Send `tsize=0` (RFC 2349) to learn the size up front.
    pub tsize: bool,
    /// `timeout` option (seconds) to send (RFC 2349).
    pub timeout_option: Option<u8>,
    /// Our own retransmission timer.
    pub retry_timeout: Duration,
    /// Retransmissions without progress before giving up.
    pub max_retries: u32,
    /// Loss simulation for tests: the first arrival of each listed absolute
    /// block number (1-based, counting past rollover) is discarded.
    pub simulate_loss: Vec<u64>,
    /// The address to send from (a machine's own, on loopback `127.0.0.x`); the wildcard
    /// address by default.
    pub local: Option<std::net::IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            blksize: None,
            windowsize: None,
            tsize: false,
            timeout_option: None,
            retry_timeout: Duration::from_secs(1),
            max_retries: 5,
            simulate_loss: Vec::new(),
            local: None,
        }
    }
}

/// Facts about a finished download.
#[derive(Debug, Clone)]
pub struct ClientStats {
    /// Options the server acknowledged (empty without OACK).
    pub oack: Vec<(String, String)>,
    /// Size announced by the server's tsize, if any.
    pub tsize: Option<u64>,
    pub blksize: u16,
    pub windowsize: u16,
    /// DATA blocks accepted (in order).
    pub blocks: u64,
    /// ACKs sent (including ACK 0 for the OACK).
    pub acks: u64,
    /// Our retransmissions after a timeout.
    pub retransmits: u64,
    /// Address the server answered from (its transfer ID).
    pub server_tid: Option<SocketAddr>,
    pub duration: Duration,
}

/// Before any answer: no options, RFC 1350's block size, lockstep.
impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            oack: Vec::new(),
            tsize: None,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            blocks: 0,
            acks: 0,
            retransmits: 0,
            server_tid: None,
            duration: Duration::ZERO,
        }
    }
}

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Download {
    pub data: Vec<u8>,
    pub stats: ClientStats,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server answered with an ERROR packet.
    #[error("server sent {0}")]
    Server(TftpError),
    /// No answer after the configured retransmissions.
    #[error("timed out")]
    Timeout,
    /// The server's OACK was refused (the client told it so with ERROR 8).
    #[error("OACK refused: {0}")]
    Oack(#[from] OackError),
    /// A DATA block longer than the negotiated block size.
    #[error("DATA of {len} bytes exceeds blksize {blksize}")]
    OversizedData { len: usize, blksize: u16 },
}

/// What is wrong with a server's OACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OackError {
    /// An option value that is not a number.
    #[error("bad OACK value {name}={value}")]
    BadValue { name: String, value: String },
    /// An option we did not ask for, or a value we cannot accept (a blksize or windowsize
    /// above what we asked, a timeout other than ours).
    #[error("unexpected OACK option {name}={value}")]
    Unexpected { name: String, value: String },
}

/// Binds an ephemeral UDP socket of the right family with a large receive
/// buffer (windows of big blocks arrive in bursts).
fn bind_for(server: SocketAddr, local: Option<std::net::IpAddr>) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let any: SocketAddr = match (local, server) {
        (Some(ip), _) => (ip, 0).into(),
        (None, SocketAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (None, SocketAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = Socket::new(Domain::for_address(any), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&any.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Applies a server's OACK to `stats`, checking it against what we asked for in `opts`.
fn parse_oack(options: &[(String, String)], opts: &ClientOptions, stats: &mut ClientStats) -> Result<(), OackError> {
    for (name, value) in options {
        let num: u64 = value.parse().map_err(|_| OackError::BadValue { name: name.clone(), value: value.clone() })?;
        match name.to_ascii_lowercase().as_str() {
            "blksize" if opts.blksize.is_some_and(|b| (8..=u64::from(b)).contains(&num)) => {
                stats.blksize = num as u16;
            }
            "windowsize" if opts.windowsize.is_some_and(|w| (1..=u64::from(w)).contains(&num)) => {
                stats.windowsize = num as u16;
            }
            "tsize" if opts.tsize => stats.tsize = Some(num),
            "timeout" if opts.timeout_option == Some(num as u8) && num <= 255 => {}
            _ => return Err(OackError::Unexpected { name: name.clone(), value: value.clone() }),
        }
    }
    stats.oack = options.to_vec();
    Ok(())
}

/// Downloads `path` from `server` into memory.
pub async fn get(server: SocketAddr, path: &str, opts: &ClientOptions) -> Result<Download, ClientError> {
    let started = Instant::now();
    let sock = bind_for(server, opts.local)?;
    let mut options = Vec::new();
    if let Some(b) = opts.blksize {
        options.push(("blksize".to_string(), b.to_string()));
    }
    if opts.tsize {
        options.push(("tsize".to_string(), "0".to_string()));
    }
    if let Some(t) = opts.timeout_option {
        options.push(("timeout".to_string(), t.to_string()));
    }
    if let Some(w) = opts.windowsize {
        options.push(("windowsize".to_string(), w.to_string()));
    }
    let mut last = Vec::new();
    Packet::Rrq(Request { filename: path.to_string(), mode: Mode::Octet, options }).encode(&mut last);
    let mut last_dest = server;
    sock.send_to(&last, last_dest).await?;

    let mut stats = ClientStats::default();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut expected: u64 = 1; // absolute number of the next block we need
    let mut in_window: u16 = 0; // blocks accepted since our last ACK
    let mut reacked = false; // already answered a gap/duplicate since progress
    let mut retries = 0;
    let mut loss = opts.simulate_loss.clone();
    loop {
        let (n, from) = match tokio::time::timeout(opts.retry_timeout, sock.recv_from(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                retries += 1;
                if retries > opts.max_retries {
                    return Err(ClientError::Timeout);
                }
                stats.retransmits += 1;
                if expected > 1 {
                    // RFC 7440: on timeout, acknowledge the last block
                    // received in order (the tail of a window may be lost).
                    last.clear();
                    packet::encode_ack(&mut last, (expected - 1) as u16);
                    in_window = 0;
                }
                sock.send_to(&last, last_dest).await?;
                continue;
            }
        };
        match stats.server_tid {
            None => stats.server_tid = Some(from),
            Some(tid) if tid != from => {
                let e = TftpError::unknown_tid();
                let mut out = Vec::new();
                packet::encode_error(&mut out, e.code, &e.message);
                sock.send_to(&out, from).await?;
                continue;
            }
            Some(_) => {}
        }
        let ack = match Packet::decode(&buf[..n]) {
            Ok(Packet::Oack { options }) if expected == 1 => {
                if let Err(e) = parse_oack(&options, opts, &mut stats) {
                    let mut out = Vec::new();
                    packet::encode_error(&mut out, TftpError::OPTION_REFUSED, &e.to_string());
                    sock.send_to(&out, from).await?;
                    return Err(e.into());
                }
                if let Some(size) = stats.tsize {
                    data.reserve(size.min(1 << 30) as usize);
                }
                retries = 0;
                0
            }
            Ok(Packet::Data { block, data: payload }) => {
                if let Some(i) = loss.iter().position(|&b| b == expected) {
                    if block == expected as u16 {
                        loss.swap_remove(i);
                        continue;
                    }
                }
                if block != expected as u16 {
                    // A gap (lost block) or a duplicate window: tell the
                    // server where we are, once per progress step.
                    if reacked {
                        continue;
                    }
                    reacked = true;
                    (expected - 1) as u16
                } else {
                    if payload.len() > usize::from(stats.blksize) {
                        return Err(ClientError::OversizedData { len: payload.len(), blksize: stats.blksize });
                    }
                    data.extend_from_slice(payload);
                    expected += 1;
                    in_window += 1;
                    reacked = false;
                    retries = 0;
                    let done = payload.len() < usize::from(stats.blksize);
                    if done {
                        last.clear();
                        packet::encode_ack(&mut last, block);
                        sock.send_to(&last, from).await?;
                        stats.acks += 1;
                        stats.blocks = expected - 1;
                        stats.duration = started.elapsed();
                        return Ok(Download { data, stats });
                    }
                    if in_window < stats.windowsize {
                        continue;
                    }
                    block
                }
            }
            Ok(Packet::Error { code, message }) => return Err(ClientError::Server(TftpError::new(code, message))),
            _ => continue,
        };
        in_window = 0;
        last.clear();
        packet::encode_ack(&mut last, ack);
        last_dest = from;
        sock.send_to(&last, last_dest).await?;
        stats.acks += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> ClientStats {
        ClientStats::default()
    }

    fn oack(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn oack_within_what_was_asked_is_taken() {
        let opts = ClientOptions { blksize: Some(1468), windowsize: Some(8), tsize: true, ..Default::default() };
        let mut s = stats();
        parse_oack(&oack(&[("BLKSIZE", "1024"), ("windowsize", "4"), ("tsize", "99")]), &opts, &mut s).unwrap();
        assert_eq!((s.blksize, s.windowsize, s.tsize), (1024, 4, Some(99)));
        assert_eq!(s.oack.len(), 3);
    }

    #[test]
    fn oack_beyond_what_was_asked_is_refused() {
        let opts = ClientOptions { blksize: Some(1024), ..Default::default() };
        let unexpected = |n: &str, v: &str| OackError::Unexpected { name: n.into(), value: v.into() };
        for (list, want) in [
            (oack(&[("blksize", "1468")]), unexpected("blksize", "1468")),
            (oack(&[("blksize", "7")]), unexpected("blksize", "7")),
            (oack(&[("tsize", "5")]), unexpected("tsize", "5")),
            (oack(&[("windowsize", "2")]), unexpected("windowsize", "2")),
            (oack(&[("blksize", "big")]), OackError::BadValue { name: "blksize".into(), value: "big".into() }),
        ] {
            assert_eq!(parse_oack(&list, &opts, &mut stats()), Err(want.clone()), "{list:?}");
        }
    }
}
