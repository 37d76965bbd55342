//! The HTTP server (hyper, HTTP/1.1): the iPXE entry script, per-machine iPXE scripts and
//! menus, versioned artifacts and boot programs.
//!
//! Routes (`routes`): `GET|HEAD /boot.ipxe`, `/ipxe/script?mac=..&buildarch=..&platform=..`,
//! `/artifacts/<profile>/<version>/<file>`, `/<boot program>` (`ipxe.efi`, `snponly.efi`,
//! `undionly.kpxe`, `grubnetx64.efi`, `grubnetaa64.efi`, and the signed `shimx64.efi`,
//! `shimaa64.efi`, `grubx64.efi`, `grubaa64.efi`, which shim fetches as `//grubx64.efi`),
//! `/grub/grub.cfg` (also under `/debian-installer/<arch>/`) for the machine at the source
//! address; for installers (`provisioning`) `GET|HEAD /answers/<mac>/<name>` and
//! `POST /events/<mac>`. Files (`files`, `body`) are streamed
//! in large chunks with exact `Content-Length`, single `Range` requests, `ETag` and
//! `Last-Modified`.
//!
//! Architecture invariant: no boot policy here. Which script a machine gets is `decide` +
//! `render`; this module parses requests, calls them and streams bytes. It never redirects
//! (UEFI HTTP Boot fails on a 301) and never serves a file outside the artifact store or the
//! fixed list of boot programs.

mod body;
mod boot_image;
pub use boot_image::{prune as prune_boot_images, CACHE_DIR as BOOT_IMAGES_DIR};
mod files;
mod observe;
mod provisioning;
mod routes;
mod sendfile;
#[cfg(test)]
mod tests;

use crate::artifacts::Touches;
use crate::fair_share::{Activity, Occupancy, Slot, Stop};
use crate::install_store::InstallStore;
use crate::state::Shared;
use appliance_core::fair_share::ShareLimits;
use appliance_core::rate_limit::{Rate, RateLimiter, Verdict};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Connections per source address and in total; past either, a new connection takes the place
/// of the one idle longest (no byte read or written for `evict_after`), or is closed at once
/// (see `appliance_core::fair_share`). A booting machine holds one or two; an idle keep-alive
/// connection of a client that reads a menu is worth less than a new client.
pub const DEFAULT_CONNECTION_LIMITS: ShareLimits =
    ShareLimits { per_source: 64, total: 1024, evict_after: Duration::from_secs(5) };
/// Warnings about one source (connections refused or closed to make room): a few per minute,
/// then a count of what was left out.
const WARNINGS: Rate = Rate { lines: 5, per: Duration::from_secs(60) };

/// How long `serve` waits, once told to stop, for responses in flight.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A response write that makes no progress for this long ends the connection: the client
/// stopped reading (crashed firmware, a stuck VM), and would otherwise hold its connection and
/// the chunk being sent forever. Firmware under TCG still reads many times a second.
pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(60);

/// What the HTTP server needs from the rest of the daemon.
pub struct HttpContext {
    pub shared: Arc<Shared>,
    /// The versioned artifact store (`<store>/<profile>/<version>/<file>`).
    pub store: PathBuf,
    /// Where the boot programs (`ipxe.efi`, …) are; `None`: they are not served over HTTP.
    pub bootloaders: Option<PathBuf>,
    /// The cache of boot images (`boot_image`), one per machine, rebuilt when what is in it changes.
    pub boot_images: PathBuf,
    /// Artifact transfers, for garbage collection; shared with the TFTP server.
    pub touches: Arc<Touches>,
    /// How long shutdown waits for responses in flight before cutting them off.
    pub shutdown_grace: Duration,
    /// How long a response write may make no progress before the connection is dropped.
    pub write_stall: Duration,
    /// Held from each request until its response body is sent or dropped.
    pub cpu_latency: crate::latency::CpuLatency,
    /// Installer events are recorded here; installed machines are looked up here.
    pub installs: Arc<InstallStore>,
    /// Fair shares of connections between source addresses.
    pub limits: ShareLimits,
}

impl HttpContext {
    pub fn new(
        shared: Arc<Shared>,
        store: PathBuf,
        bootloaders: Option<PathBuf>,
        touches: Arc<Touches>,
        installs: Arc<InstallStore>,
    ) -> Self {
        HttpContext {
            shared,
            // Beside the store, in the state directory: `<state>/boot-images`.
            boot_images: store.with_file_name(BOOT_IMAGES_DIR),
            store,
            bootloaders,
            touches,
            installs,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            write_stall: DEFAULT_WRITE_STALL,
            cpu_latency: crate::latency::CpuLatency::disabled(),
            limits: DEFAULT_CONNECTION_LIMITS,
        }
    }
}

/// Serves HTTP on `listener` until `shutdown` completes; then stops accepting, lets responses
/// in flight finish (closing idle keep-alive connections at once) for at most
/// `ctx.shutdown_grace`, and returns. A failing connection is logged and never stops the server.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let (grace, limits) = (ctx.shutdown_grace, ctx.limits);
    accept_until(listener, "http", limits, grace, shutdown, move |stream, peer, slot| {
        connection(stream, peer, ctx.clone(), slot)
    })
    .await
}

/// The accept loop of an HTTP listener (the boot port's, the admin API's): admits each client
/// within the fair shares `limits` (a source over its share, or a full table with nobody idle
/// enough to close, is refused; the stalest idle connection makes room), runs
/// `connection(stream, peer, slot)` for it until `shutdown`, then tells every connection to stop
/// (its `slot.stop` turns `Shutdown`), waits up to `grace` for them, and cuts off the rest.
pub(crate) async fn accept_until<F>(
    listener: TcpListener,
    what: &'static str,
    limits: ShareLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
    connection: impl Fn(TcpStream, SocketAddr, Slot) -> F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let occupancy = Occupancy::new(limits);
    let epoch = std::time::Instant::now();
    let mut warnings = RateLimiter::new(WARNINGS, 4096);
    let mut accept_failures = RateLimiter::new(WARNINGS, 1);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match occupancy.admit(peer.ip()) {
                    Ok((slot, evicted)) => {
                        if let Some(gone) = evicted {
                            if let Verdict::Log { suppressed } = warnings.check(&gone.source, epoch.elapsed()) {
                                tracing::warn!(
                                    source = %gone.source,
                                    idle_ms = gone.idle.as_millis() as u64,
                                    for_peer = %peer,
                                    suppressed,
                                    "{what}: closing an idle connection to make room"
                                );
                            }
                        }
                        connections.spawn(connection(stream, peer, slot));
                    }
                    Err(refusal) => {
                        if let Verdict::Log { suppressed } = warnings.check(&peer.ip(), epoch.elapsed()) {
                            tracing::warn!(%peer, suppressed, "{what}: connection refused: {refusal}");
                        }
                        drop(stream);
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // say so a few times a minute, not ten times a second.
                    if let Verdict::Log { suppressed } = accept_failures.check(&(), epoch.elapsed()) {
                        tracing::warn!(suppressed, "{what} accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!("{what} connection task failed: {e}");
                }
            }
        }
    }
    drop(listener);
    occupancy.stop_all();
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = connections.len(), "{what} shutdown: cutting off transfers still running");
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<HttpContext>, slot: Slot) {
    // Scripts are small single writes; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let mut stop = slot.stop.clone();
    let io = TokioIo::new(StallGuard::new(stream, ctx.write_stall, slot.activity()));
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(routes::handle(&ctx, req, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "http connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => match *stop.borrow() {
                // Idle long enough to make room for another client: closed at once.
                Stop::Evict => return,
                Stop::Run | Stop::Shutdown => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            },
        }
    }
}

/// The connection's socket, failing a write that has made no progress for `stall`, and
/// touching the connection's fair-share activity whenever a byte moves.
struct StallGuard {
    stream: TcpStream,
    activity: Activity,
    stall: Duration,
    /// Armed when a write starts to wait (one allocation per connection, not per wait).
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether `timer` runs for the write now pending; cleared on any progress.
    waiting: bool,
}

impl StallGuard {
    fn new(stream: TcpStream, stall: Duration, activity: Activity) -> StallGuard {
        StallGuard { stream, activity, stall, timer: Box::pin(tokio::time::sleep(stall)), waiting: false }
    }

    /// Turns a pending write into an error once it has been pending for `stall`.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.waiting = false;
                self.activity.touch();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let deadline = tokio::time::Instant::now() + self.stall;
                    self.timer.as_mut().reset(deadline);
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.waiting = false;
                    let secs = self.stall.as_secs_f64();
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("client read nothing for {secs:.0} s"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = sendfile::poll_write_vectored(&mut self.stream, cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
