//! The DHCP service loop: receives on port 67 (and 4011), hands each request to the pure
//! `exchange`, and does what it returns: sends the reply, persists the lease table, records the
//! client in `Shared`, writes one log line.
//!
//! Lease writes are a group commit: the loop hands the newest table to a writer task and goes
//! on with the next request; a reply that confirms a lease change (an ACK) is sent only once a
//! write that includes the change is on disk, so a crash can lose only leases nobody was told
//! about. When that write fails, the ACK is not sent at all (ARCHITECTURE.md, "No ACK without
//! a durable lease"): the client retransmits, and is answered once the disk takes the lease. Writing inside the loop, every ACK held up every other client for a file rewrite and
//! two fsyncs (a USB stick's fsync can take tens of milliseconds, times every machine of a
//! boot storm); now one write covers all the changes made while the previous one ran. The
//! table is encoded only when the writer is ready for it, once per write, not once per change.
//!
//! Architecture invariant: no policy here. What a machine gets is `decide`'s (through
//! `exchange`); this loop only moves bytes and state. It never dies on a packet: malformed
//! datagrams are logged at debug and dropped, send errors are logged and the loop goes on.

use super::socket::{AsyncSocket, DhcpSocket, Egress, Received};
use super::store::{self, LeaseStore};
use crate::state::Shared;
use appliance_core::catalog::DhcpMode;
use appliance_core::client;
use appliance_core::decide::Rule;
use appliance_core::dhcp::exchange::{self, Context, Handled, State};
use appliance_core::dhcp::reply::Port;
use appliance_core::dhcp::wire;
use appliance_core::rate_limit::{Rate, RateLimiter, Verdict};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// Receive buffer: larger than any Ethernet datagram, so a truncated read means junk.
const RECV_BUF: usize = 4096;
/// How often the lease gauges are brought up to date (counting walks the lease table, so not
/// per packet).
const LEASE_USAGE_EVERY: Duration = Duration::from_secs(2);

/// Sets the lease gauges from the table (server mode only: elsewhere nothing is leased).
fn count_leases(shared: &Shared, opts: &DhcpOptions, state: &State) {
    let catalog = shared.catalog();
    if opts.mode.unwrap_or(catalog.settings().dhcp.mode) != DhcpMode::Server {
        return;
    }
    let pool = appliance_core::dhcp::leases::Pool::new(
        &catalog.settings().dhcp,
        catalog.fixed_addresses(),
        shared.server().address,
    );
    if let Some(pool) = pool {
        shared.telemetry.metrics.set_leases(&state.leases.usage(&pool, unix_now()));
    }
}

/// Warnings (no address left, ...) per source address: a flood of DISCOVERs from 0.0.0.0
/// with made-up MACs gets a few lines a minute, each saying how many were left out.
const WARNINGS: Rate = Rate { lines: 5, per: Duration::from_secs(60) };
/// Sources whose warnings are counted separately.
const WARNING_SOURCES: usize = 4096;

/// The rate limit of warnings, and the epoch its clock counts from.
struct Warnings {
    limiter: RateLimiter<Ipv4Addr>,
    epoch: Instant,
}

impl Warnings {
    fn new() -> Self {
        Warnings { limiter: RateLimiter::new(WARNINGS, WARNING_SOURCES), epoch: Instant::now() }
    }

    /// Logs `warning` about the client with `mac` from `source`, unless that source has had
    /// its share of lines this minute.
    fn warn(&mut self, source: Ipv4Addr, mac: &str, warning: &str) {
        if let Verdict::Log { suppressed } = self.limiter.check(&source, self.epoch.elapsed()) {
            warn!(mac, %source, suppressed, "dhcp: {warning}");
        }
    }
}

/// The sockets the service answers on.
pub struct DhcpSockets {
    /// Port 67 (DHCP and ProxyDHCP offers).
    pub dhcp: DhcpSocket,
    /// Port 4011 (PXE boot-server requests), when served.
    pub pxe: Option<DhcpSocket>,
}

impl DhcpSockets {
    /// Binds the wildcard address on `dhcp_port` (67) and, when given, `pxe_port` (4011), to
    /// `interface` when named (see [`bind`](super::bind)).
    pub fn bind(dhcp_port: u16, pxe_port: Option<u16>, interface: Option<&str>) -> io::Result<DhcpSockets> {
        let any = |port| SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
        let dhcp = super::bind(any(dhcp_port), interface)?;
        let pxe = pxe_port.map(|p| super::bind(any(p), interface)).transpose()?;
        Ok(DhcpSockets { dhcp, pxe })
    }
}

/// How the service runs; the defaults are the production ones.
#[derive(Clone, Debug)]
pub struct DhcpOptions {
    /// `--dhcp` override; `None` follows the catalog's `dhcp.mode`, re-read for every packet
    /// so a reload takes effect at once.
    pub mode: Option<DhcpMode>,
    /// Where `leases.json` lives; an empty path keeps leases in memory only (tests).
    pub state_dir: PathBuf,
    /// The port replies to clients go to (68; tests use an ephemeral one).
    pub client_port: u16,
    /// Sends every port-67 reply here instead of its RFC 2131 destination, so tests on
    /// loopback receive the "broadcast". Port-4011 replies always go to their source.
    pub reply_to: Option<SocketAddr>,
}

impl Default for DhcpOptions {
    fn default() -> Self {
        DhcpOptions {
            mode: None,
            state_dir: PathBuf::new(),
            client_port: appliance_core::dhcp::reply::CLIENT_PORT,
            reply_to: None,
        }
    }
}

/// Serves DHCP on `sockets` until `shutdown` resolves.
///
/// Loads the lease table from `opts.state_dir` first (a corrupt file is moved aside, not
/// fatal) and writes it back atomically after every change. Returns an error only when a
/// socket cannot be registered with the runtime; per-packet errors are logged.
pub async fn run(
    shared: Arc<Shared>,
    sockets: DhcpSockets,
    opts: DhcpOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let store = (!opts.state_dir.as_os_str().is_empty()).then(|| LeaseStore::new(&opts.state_dir));
    let leases = match &store {
        Some(s) => {
            let s = s.clone();
            let now = unix_now();
            tokio::task::spawn_blocking(move || s.load(now)).await.map_err(io::Error::other)?
        }
        None => Default::default(),
    };
    let mut state = State::new(leases);
    let mut writer = store.map(|s| LeaseWriter::start(s, shared.clone()));
    let dhcp = Arc::new(sockets.dhcp.into_async()?);
    let pxe = sockets.pxe.map(DhcpSocket::into_async).transpose()?.map(Arc::new);
    info!(
        dhcp = %dhcp.local,
        pxe = ?pxe.as_ref().map(|p| p.local),
        mode = %opts.mode.map_or("from config".to_string(), |m| m.to_string()),
        "dhcp: serving"
    );
    let mut buf_dhcp = vec![0u8; RECV_BUF];
    let mut buf_pxe = vec![0u8; RECV_BUF];
    let mut usage_tick = tokio::time::interval(LEASE_USAGE_EVERY);
    usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warnings = Warnings::new();
    tokio::pin!(shutdown);
    loop {
        let (port, received) = tokio::select! {
            _ = &mut shutdown => break,
            _ = usage_tick.tick() => {
                count_leases(&shared, &opts, &state);
                continue;
            }
            () = writer_ready(writer.as_mut()) => {
                if let Some(w) = writer.as_mut() {
                    w.hand_over(&state.leases);
                }
                continue;
            }
            r = dhcp.recv(&mut buf_dhcp) => (Port::Dhcp, r),
            r = recv_optional(pxe.as_deref(), &mut buf_pxe) => (Port::Pxe, r),
        };
        let (socket, buf) = match port {
            Port::Dhcp => (&dhcp, &buf_dhcp),
            Port::Pxe => match pxe.as_ref() {
                Some(p) => (p, &buf_pxe),
                None => continue,
            },
        };
        match received {
            Ok(rx) => {
                let one = (writer.as_mut(), &mut state, &mut warnings);
                serve_one(&shared, &opts, one, socket, port, &buf[..rx.len], rx).await
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving without spinning.
                warn!(socket = %socket.local, "dhcp: receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    if let Some(w) = writer {
        w.finish(&state.leases).await;
    }
    info!("dhcp: stopped");
    Ok(())
}

/// The lease file's writer task and the loop's side of it. Lease changes are counted; a table
/// handed to the writer is numbered with the count it includes, and the writer reports the
/// number of the last table it finished and of the last one it put on disk ([`Written`]).
struct LeaseWriter {
    to_writer: watch::Sender<Option<(u64, Arc<Vec<u8>>)>>,
    written: watch::Receiver<Written>,
    /// Changes so far, and how many of them the last table handed over includes.
    changes: u64,
    handed: u64,
    task: tokio::task::JoinHandle<()>,
}

/// The writer's progress: tables are numbered by the lease changes they include.
#[derive(Clone, Copy, Debug, Default)]
struct Written {
    /// The last table the writer finished with, on disk or not.
    settled: u64,
    /// The last table that is on disk: every change up to it survives a crash.
    durable: u64,
}

impl LeaseWriter {
    fn start(store: LeaseStore, shared: Arc<Shared>) -> LeaseWriter {
        let (latest, mut pending) = watch::channel(None::<(u64, Arc<Vec<u8>>)>);
        let (written_tx, written) = watch::channel(Written::default());
        let task = tokio::spawn(async move {
            let metrics = &shared.telemetry.metrics;
            // While writes fail: the withheld-ACK count when the first one failed.
            let mut failing: Option<u64> = None;
            // Also after the loop dropped its sender, the last table is written first.
            while pending.changed().await.is_ok() {
                let Some((seq, bytes)) = pending.borrow_and_update().clone() else { continue };
                let s = store.clone();
                let result = match tokio::task::spawn_blocking(move || s.write(&bytes)).await {
                    Ok(r) => r,
                    Err(e) => Err(io::Error::other(format!("lease writer thread: {e}"))),
                };
                let mut w = *written_tx.borrow();
                w.settled = seq;
                match result {
                    Ok(()) => {
                        w.durable = seq;
                        if let Some(before) = failing.take() {
                            let withheld = metrics.dhcp_acks_withheld.get() - before;
                            info!(path = %store.path().display(), withheld, "dhcp: the lease file is written again, ACKs resume");
                        }
                    }
                    Err(e) => {
                        metrics.lease_write_failures.inc();
                        // An ACK promises the address to the client; one the disk does not
                        // hold would be lost on a restart and given to another client. So
                        // no ACK goes out until the write succeeds (ARCHITECTURE.md, "No ACK
                        // without a durable lease"); said once per episode, not per write.
                        if failing.is_none() {
                            failing = Some(metrics.dhcp_acks_withheld.get());
                            error!(
                                path = %store.path().display(),
                                "dhcp: cannot write the lease file, withholding ACKs until it can be written: {e}"
                            );
                        } else {
                            debug!(path = %store.path().display(), "dhcp: the lease file still cannot be written: {e}");
                        }
                    }
                }
                written_tx.send_replace(w);
            }
        });
        LeaseWriter { to_writer: latest, written, changes: 0, handed: 0, task }
    }

    /// Counts a change of the table; returns what to wait for before confirming it.
    fn note_change(&mut self) -> Durable {
        self.changes += 1;
        Durable { seq: self.changes, written: self.written.clone() }
    }

    /// Changes wait for a table, and the writer has finished the last one it was handed.
    fn wants_table(&self) -> bool {
        self.changes > self.handed && self.written.borrow().settled >= self.handed
    }

    /// Encodes the table as it is now and hands it to the writer.
    fn hand_over(&mut self, leases: &appliance_core::dhcp::leases::Leases) {
        self.handed = self.changes;
        self.to_writer.send_replace(Some((self.handed, Arc::new(store::encode(leases)))));
    }

    /// Resolves once [`Self::wants_table`] holds.
    async fn ready(&mut self) {
        while !self.wants_table() {
            if self.written.changed().await.is_err() {
                // The writer is gone; nothing will be written any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Writes the changes still waiting and stops the writer.
    async fn finish(mut self, leases: &appliance_core::dhcp::leases::Leases) {
        if self.changes > self.handed {
            let handed = self.handed;
            let _ = self.written.wait_for(|w| w.settled >= handed).await;
            self.hand_over(leases);
        }
        drop(self.to_writer);
        if let Err(e) = self.task.await {
            warn!("dhcp: lease writer failed: {e}");
        }
    }
}

async fn writer_ready(writer: Option<&mut LeaseWriter>) {
    match writer {
        Some(w) => w.ready().await,
        None => std::future::pending().await,
    }
}

/// A submitted table: says, once the writer is done with it, whether it is on disk.
struct Durable {
    seq: u64,
    written: watch::Receiver<Written>,
}

impl Durable {
    /// Whether the change is on disk: false when the write that included it failed. A later
    /// write may still succeed, but the reply waiting here is not sent; the client's
    /// retransmission makes a new change and a new write.
    async fn on_disk(mut self) -> bool {
        let seq = self.seq;
        // An error means the writer is gone (shutdown after its last write): what it last
        // reported decides.
        let _ = self.written.wait_for(|w| w.settled >= seq).await;
        let on_disk = self.written.borrow().durable >= seq;
        on_disk
    }
}

async fn recv_optional(socket: Option<&AsyncSocket>, buf: &mut [u8]) -> io::Result<Received> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[allow(clippy::too_many_arguments)]
async fn serve_one(
    shared: &Arc<Shared>,
    opts: &DhcpOptions,
    (writer, state, warnings): (Option<&mut LeaseWriter>, &mut State, &mut Warnings),
    socket: &Arc<AsyncSocket>,
    port: Port,
    bytes: &[u8],
    rx: Received,
) {
    if rx.truncated {
        debug!(source = %rx.source, "dhcp: dropping oversized datagram");
        return;
    }
    let req = match wire::decode_request(bytes) {
        Ok(m) => m,
        Err(e) => {
            debug!(source = %rx.source, len = bytes.len(), "dhcp: dropping malformed packet: {e}");
            return;
        }
    };
    let now = Instant::now();
    let mut client = client::from_dhcp(&req);
    if let Some(mac) = client.mac {
        client.ipxe_chained = shared.chained(mac, now);
    }
    // Every valid request is remembered, in every mode: TFTP and HTTP read it later.
    shared.remember_dhcp(&client, now);
    // One catalog for the whole packet, so a reload cannot mix two configurations.
    let catalog = shared.catalog();
    let server = shared.server();
    let ctx = Context {
        catalog: &catalog,
        mode: opts.mode.unwrap_or(catalog.settings().dhcp.mode),
        port,
        server: &server,
        source: rx.source,
        client_port: opts.client_port,
        now: unix_now(),
    };
    let handled = exchange::handle(state, &ctx, &req, &client);
    if let Some(mac) = client.mac {
        if handled.chained {
            shared.mark_chained(mac, now);
        }
        if let Some(ip) = handled.bound {
            shared.remember_ip(mac, ip);
        }
    }
    let durable = match writer {
        Some(w) if handled.leases_changed => Some(w.note_change()),
        _ => None,
    };
    if let Some(w) = &handled.warning {
        warnings.warn(*rx.source.ip(), &fmt_mac(&client), w);
    }
    let mode = ctx.mode;
    let reply_to = opts.reply_to;
    let confirms = handled.reply.is_some();
    let egress = Egress { ifindex: rx.ifindex, local: rx.local };
    let socket = socket.clone();
    let shared = shared.clone();
    let finish = move |mut handled: Handled, on_disk: bool| async move {
        if !on_disk {
            // Silence rather than a NAK: the client retransmits its REQUEST and is answered
            // once the disk takes the lease (ARCHITECTURE.md, "No ACK without a durable lease").
            shared.telemetry.metrics.dhcp_acks_withheld.inc();
            handled.reply = None;
            handled.note = Some("ACK withheld: the lease could not be written to disk".into());
        }
        let mut sent = true;
        if let Some((reply, dest)) = &handled.reply {
            let dest = match (port, reply_to) {
                (Port::Dhcp, Some(SocketAddr::V4(to))) => to,
                _ => *dest,
            };
            if let Err(e) = socket.send(&reply.encode(), dest, egress).await {
                sent = false;
                warn!(mac = %fmt_mac(&client), %dest, "dhcp: sending {:?} failed: {e}", reply.kind);
            }
        }
        log_exchange(&client, &req, port, mode, &handled);
        super::observe::exchange(&shared.telemetry, &client, port, mode, &handled, sent);
    };
    match durable {
        // The reply confirms a lease change: it waits for the write, the loop does not.
        Some(d) if confirms => {
            tokio::spawn(async move {
                let on_disk = d.on_disk().await;
                finish(handled, on_disk).await;
            });
        }
        _ => finish(handled, true).await,
    }
}

fn fmt_mac(client: &client::Client) -> String {
    client.mac.map_or_else(|| "-".to_string(), |m| m.to_string())
}

fn fmt_rule(r: &Rule) -> String {
    r.to_string()
}

/// One line per exchange. Requests we neither answer nor care about (a plain OS client in
/// proxy or off mode) are logged at debug only, to keep a shared network's chatter out.
fn log_exchange(client: &client::Client, req: &dhcproto::v4::Message, port: Port, mode: DhcpMode, h: &Handled) {
    let out = h.reply.as_ref().map_or_else(|| "-".to_string(), |(r, _)| format!("{:?}", r.kind));
    let dest = h.reply.as_ref().map_or_else(|| "-".to_string(), |(_, d)| d.to_string());
    let address = h.reply.as_ref().map(|(r, _)| r.message.yiaddr()).filter(|a| !a.is_unspecified());
    let boot = h.reply.as_ref().and_then(|(r, _)| r.boot.as_ref()).map(|b| b.name().to_string());
    let (arch_rule, target_rule) = h
        .decision
        .as_ref()
        .map_or_else(|| ("-".into(), "-".into()), |d| (fmt_rule(&d.arch_rule), fmt_rule(&d.target_rule)));
    let uefi_chain = h.decision.as_ref().and_then(|d| d.uefi_chain.as_ref());
    let uefi_chain = uefi_chain.map_or_else(|| "-".to_string(), |c| format!("{} by {}", c.chain, c.rule));
    let dropped = h.reply.as_ref().map(|(r, _)| r.dropped.clone()).filter(|d| !d.is_empty());
    let boot_client = client.firmware != appliance_core::arch::Firmware::Unknown;
    let interesting = h.reply.is_some() || h.leases_changed || boot_client || mode == DhcpMode::Server;
    macro_rules! line {
        ($level:ident) => {
            $level!(
                mac = %fmt_mac(client),
                firmware = %client.firmware,
                xid = format_args!("{:#010x}", req.xid()),
                port = ?port,
                mode = %mode,
                request = ?h.kind,
                reply = %out,
                to = %dest,
                address = ?address,
                boot = ?boot,
                arch_rule = %arch_rule,
                target_rule = %target_rule,
                uefi_chain = %uefi_chain,
                chained = h.chained,
                dropped = ?dropped,
                why = h.note.as_deref().unwrap_or("-"),
                "dhcp exchange"
            )
        };
    }
    if interesting {
        line!(info);
    } else {
        line!(debug);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects what a `tracing` subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn warnings_from_one_source_are_limited_and_the_rest_counted() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        // Another dispatcher alive makes tracing ask each thread's default (see http::tests).
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        tracing::callsite::rebuild_interest_cache();

        let mut w = Warnings::new();
        let (flood, other) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 0, 0, 7));
        for i in 0..20 {
            w.warn(flood, &format!("52:54:00:00:00:{i:02x}"), "no address: the pool is exhausted");
        }
        w.warn(other, "52:54:00:00:01:00", "no address: the pool is exhausted");
        // A minute later the flood's next line says how many were left out.
        w.epoch -= WARNINGS.per;
        w.warn(flood, "52:54:00:00:00:ff", "no address: the pool is exhausted");

        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let from = |source: &str| log.lines().filter(|l| l.contains(&format!("source={source}"))).count();
        assert_eq!((from("0.0.0.0"), from("10.0.0.7")), (6, 1), "{log}");
        assert!(log.lines().last().unwrap().contains("suppressed=15"), "{log}");
    }
}
