//! The accept loop: receives requests on the listening socket and spawns one
//! transfer task per RRQ/WRQ.
//!
//! This module owns the listening socket, task bookkeeping and shutdown. It
//! must never die on peer input (malformed datagrams are logged at debug and
//! dropped) and must not answer anything itself: every reply, including
//! ERRORs for refused requests, comes from the transfer's own socket.

use crate::latency::CpuLatency;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fair_share::Occupancy;
use appliance_core::rate_limit::{Rate, RateLimiter, Verdict};
use appliance_core::tftp::packet::Packet;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::config::TftpConfig;
use super::handler::Handler;
use super::lockstep::Threads;
use super::transfer::{self, Incoming};

/// Largest UDP payload; requests are tiny but we must not truncate junk into
/// something that parses.
const RECV_BUF: usize = 65536;

/// Warnings about one source (its requests refused, its transfers evicted): a few per
/// minute, then a count of what was left out.
const WARNINGS: Rate = Rate { lines: 5, per: Duration::from_secs(60) };
/// Sources whose warnings are counted separately.
const WARNING_SOURCES: usize = 4096;

/// Serves TFTP read requests arriving on `socket` until `shutdown` resolves.
///
/// Each request runs on its own task and ephemeral socket bound to the
/// listening socket's IP, within the fair shares of `config` (per source and
/// in total; a stalled transfer makes room for a new request, see
/// `appliance_core::fair_share`). On shutdown the loop stops accepting, tells running
/// transfers to stop (they send ERROR 0 and report [`Outcome::Shutdown`]),
/// waits for them and returns. Only a failure to read the socket's own local
/// address is returned as an error; receive errors are logged and retried.
///
/// Every transfer holds `cpu_latency` while it runs (see [`crate::latency`]).
///
/// [`Outcome::Shutdown`]: super::Outcome::Shutdown
pub async fn serve<H, F>(
    socket: UdpSocket,
    handler: Arc<H>,
    config: TftpConfig,
    cpu_latency: CpuLatency,
    shutdown: F,
) -> io::Result<()>
where
    H: Handler + ?Sized,
    F: Future<Output = ()>,
{
    let local = socket.local_addr()?;
    let config = Arc::new(config);
    let occupancy = Occupancy::new(config.shares());
    let threads = Threads::new(config.lockstep_threads);
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; RECV_BUF];
    let epoch = Instant::now();
    let mut warnings = RateLimiter::new(WARNINGS, WARNING_SOURCES);
    tokio::pin!(shutdown);
    debug!(%local, "tftp: serving");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    warn!("tftp: transfer task failed: {e}");
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    let incoming = match Packet::decode(&buf[..n]) {
                        Ok(Packet::Rrq(req)) => Incoming::Read(req),
                        Ok(Packet::Wrq(req)) => Incoming::Write(req),
                        Ok(other) => {
                            debug!(%peer, kind = other.kind(), "tftp: ignoring non-request on listening socket");
                            continue;
                        }
                        Err(e) => {
                            debug!(%peer, len = n, "tftp: dropping malformed request: {e}");
                            continue;
                        }
                    };
                    let slot = match occupancy.admit(peer.ip()) {
                        Ok((slot, evicted)) => {
                            if let Some(gone) = evicted {
                                if let Verdict::Log { suppressed } = warnings.check(&gone.source, epoch.elapsed()) {
                                    warn!(
                                        source = %gone.source,
                                        idle_ms = gone.idle.as_millis() as u64,
                                        for_peer = %peer,
                                        suppressed,
                                        "tftp: ending a stalled transfer to make room"
                                    );
                                }
                            }
                            slot
                        }
                        Err(refusal) => {
                            if let Verdict::Log { suppressed } = warnings.check(&peer.ip(), epoch.elapsed()) {
                                warn!(%peer, suppressed, "tftp: request dropped: {refusal}");
                            }
                            continue;
                        }
                    };
                    let transfer = transfer::run(
                        Arc::clone(&handler),
                        Arc::clone(&config),
                        Arc::clone(&threads),
                        local,
                        peer,
                        incoming,
                        slot,
                    );
                    let hold = cpu_latency.hold();
                    let running = threads.started();
                    tasks.spawn(async move {
                        transfer.await;
                        drop((hold, running));
                    });
                }
                Err(e) => {
                    // E.g. ICMP-induced errors or ENOMEM: keep serving, but
                    // do not spin if the error persists.
                    warn!(%local, "tftp: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    occupancy.stop_all();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            warn!("tftp: transfer task failed: {e}");
        }
    }
    debug!(%local, "tftp: stopped");
    Ok(())
}
