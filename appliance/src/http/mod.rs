//! The HTTP server (hyper, HTTP/1.1): the iPXE entry script, per-machine iPXE scripts and
//! menus, versioned artifacts and boot programs.
//!
//! Routes (`routes`): `GET|HEAD /boot.ipxe`, `/ipxe/script?mac=..&buildarch=..&platform=..`,
//! `/artifacts/<profile>/<version>/<file>` and `/<boot program>` (`ipxe.efi`, `snponly.efi`,
//! `undionly.kpxe`, `grubnetx64.efi`, `grubnetaa64.efi`). Files (`files`, `body`) are streamed
//! in large chunks with exact `Content-Length`, single `Range` requests, `ETag` and
//! `Last-Modified`.
//!
//! Architecture invariant: no boot policy here. Which script a machine gets is `decide` +
//! `render`; this module parses requests, calls them and streams bytes. It never redirects
//! (UEFI HTTP Boot fails on a 301) and never serves a file outside the artifact store or the
//! fixed list of boot programs.

mod body;
mod files;
mod routes;
#[cfg(test)]
mod tests;

use crate::artifacts::Touches;
use crate::state::Shared;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long `serve` waits, once told to stop, for responses in flight.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the HTTP server needs from the rest of the daemon.
pub struct HttpContext {
    pub shared: Arc<Shared>,
    /// The versioned artifact store (`<store>/<profile>/<version>/<file>`).
    pub store: PathBuf,
    /// Where the boot programs (`ipxe.efi`, …) are; `None`: they are not served over HTTP.
    pub bootloaders: Option<PathBuf>,
    /// Artifact transfers, for garbage collection; shared with the TFTP server.
    pub touches: Arc<Touches>,
    /// How long shutdown waits for responses in flight before cutting them off.
    pub shutdown_grace: Duration,
}

impl HttpContext {
    pub fn new(shared: Arc<Shared>, store: PathBuf, bootloaders: Option<PathBuf>, touches: Arc<Touches>) -> Self {
        HttpContext { shared, store, bootloaders, touches, shutdown_grace: DEFAULT_SHUTDOWN_GRACE }
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, ctx.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!("http connection task failed: {e}");
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(ctx.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = connections.len(), "http shutdown: cutting off transfers still running");
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<HttpContext>, mut stop: watch::Receiver<bool>) {
    // Scripts are small single writes; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(routes::handle(&ctx, req, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
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
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
