//! `appliance serve`: DHCP, TFTP and HTTP in one tokio process, all driven by the current
//! catalog and `decide`. `run` is the library entry point: the binary binds the real ports and
//! wires signals to it; tests start it in-process on ephemeral ports.
//!
//! Reload: a valid new config (and its published artifacts) replaces the old one atomically;
//! an invalid one is refused with every error logged, and the old one keeps serving.

pub mod files;
pub mod identify;
pub mod neighbours;
pub mod tftp_observe;
pub mod tftp_routes;
pub mod watcher;

use crate::artifacts::{self, Touches};
use crate::install_store::InstallStore;
use crate::state::Shared;
use anyhow::{Context, Result};
use appliance_core::catalog::{Catalog, DhcpMode};
use appliance_core::render::ServerInfo;
use appliance_core::token::TokenKey;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config_dir: PathBuf,
    pub overlay: Option<PathBuf>,
    /// Writable state: leases, the artifact store (`<state>/artifacts`), boot images (`<state>/boot-images`).
    pub state_dir: PathBuf,
    /// Fetched bytes of `deb`/`url` sources, one file per sha256 (`cargo xtask fetch`).
    pub blobs: PathBuf,
    /// iPXE and GRUB binaries (`cargo xtask fetch` fills `target/bootloaders`).
    pub bootloaders: Option<PathBuf>,
    /// Read-only fallback TFTP root for any other file.
    pub tftp_root: Option<PathBuf>,
    /// Overrides the config's DHCP mode.
    pub dhcp_mode: Option<DhcpMode>,
    /// Overrides the address we advertise in URLs and DHCP replies.
    pub advertise: Option<Ipv4Addr>,
    /// The boot network interface: router advertisements are sent on it.
    pub interface: Option<String>,
    pub tftp: crate::tftp::TftpConfig,
    /// How often unreferenced artifact versions are looked at.
    pub gc_interval: Duration,
    /// Overrides the config's GC grace period.
    pub gc_grace: Option<Duration>,
    /// Poll the config dir and reload on change (besides SIGHUP); `None` disables it.
    pub watch: Option<Duration>,
    /// Held while TFTP transfers and HTTP responses run (see [`crate::latency`]).
    pub cpu_latency: crate::latency::CpuLatency,
    /// The admin listener's bearer token file; `None`: `<state>/admin.token` (created once).
    pub admin_token_file: Option<PathBuf>,
    /// The boot journal (`crate::observe::journal`); its file goes to `<state>/journal`.
    pub journal: crate::observe::JournalSettings,
    /// Tests on loopback: where port-67 replies go and the client port (see `DhcpOptions`).
    pub dhcp_reply_to: Option<std::net::SocketAddr>,
    /// Fair shares of HTTP connections (TFTP's are in `tftp`).
    pub http_limits: appliance_core::fair_share::ShareLimits,
}

impl ServeOptions {
    pub fn new(config_dir: PathBuf, state_dir: PathBuf) -> Self {
        ServeOptions {
            blobs: state_dir.join("blobs"),
            config_dir,
            overlay: None,
            bootloaders: None,
            tftp_root: None,
            dhcp_mode: None,
            advertise: None,
            interface: None,
            tftp: Default::default(),
            gc_interval: Duration::from_secs(60),
            gc_grace: None,
            watch: None,
            cpu_latency: crate::latency::CpuLatency::disabled(),
            admin_token_file: None,
            journal: crate::observe::JournalSettings { dir: Some(state_dir.join("journal")), ..Default::default() },
            dhcp_reply_to: None,
            state_dir,
            http_limits: crate::http::DEFAULT_CONNECTION_LIMITS,
        }
    }

    pub fn store(&self) -> PathBuf {
        self.state_dir.join("artifacts")
    }

    /// The boot images' cache (`crate::http`'s `/boot-image/` route).
    pub fn boot_images(&self) -> PathBuf {
        self.state_dir.join(crate::http::BOOT_IMAGES_DIR)
    }
}

/// Sockets the daemon serves on, bound by the caller.
pub struct Listeners {
    pub dhcp: Option<crate::dhcp::DhcpSockets>,
    pub tftp: UdpSocket,
    pub http: TcpListener,
    /// The admin listener (`crate::admin`); `None`: no admin API.
    pub admin: Option<TcpListener>,
}

/// Loads, validates and publishes a config; on failure says everything that is wrong.
pub fn load_and_publish(opts: &ServeOptions) -> Result<(Catalog, artifacts::PublishReport)> {
    load_versioned(opts).map(|(c, r, _)| (c, r)).map_err(|r| r.error)
}

/// Why a config was not taken: every config error, or the failure to publish it.
#[derive(Debug)]
pub struct Refused {
    pub errors: Vec<String>,
    pub error: anyhow::Error,
}

/// [`load_and_publish`], with the config's version, and a refusal that lists each error.
fn load_versioned(opts: &ServeOptions) -> Result<(Catalog, artifacts::PublishReport, String), Refused> {
    let (catalog, version) =
        crate::config_dir::load_versioned(&opts.config_dir, opts.overlay.as_deref()).map_err(|errs| Refused {
            errors: errs.0.iter().map(|e| e.to_string()).collect(),
            error: anyhow::anyhow!("{} config error(s):\n{errs}", errs.0.len()),
        })?;
    let publish = || -> Result<artifacts::PublishReport> {
        let store = opts.store();
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        artifacts::publish(&catalog, &store, &opts.blobs).map_err(|e| anyhow::anyhow!("{e}"))
    };
    match publish() {
        Ok(report) => Ok((catalog, report, version)),
        Err(error) => Err(Refused { errors: vec![format!("{error:#}")], error }),
    }
}

/// What the status page says about a catalog that was just loaded.
fn catalog_view(opts: &ServeOptions, catalog: &Catalog, version: String) -> appliance_core::status::CatalogView {
    appliance_core::status::CatalogView {
        source: opts.config_dir.display().to_string(),
        overlay: opts.overlay.as_ref().map(|o| o.display().to_string()),
        version,
        loaded_at: crate::observe::now_ms(),
        profiles: catalog.profiles().len(),
        machines: catalog.machines().len(),
        dhcp_mode: opts.dhcp_mode.unwrap_or(catalog.settings().dhcp.mode).to_string(),
        reloads: Vec::new(),
    }
}

/// [`load_versioned`], then the Secure Boot warnings of the new config, logged.
fn load_publish_and_check(opts: &ServeOptions) -> Result<(Catalog, artifacts::PublishReport, String), Refused> {
    let (catalog, report, version) = load_versioned(opts)?;
    for w in crate::kernel_signatures::warnings(&catalog, Some(&opts.blobs)) {
        warn!("{w}");
    }
    Ok((catalog, report, version))
}

fn server_info(catalog: &Catalog, opts: &ServeOptions, http_port: u16, tokens: &TokenKey) -> ServerInfo {
    let s = catalog.settings();
    let address = opts.advertise.unwrap_or(s.address);
    let http_base = if opts.advertise.is_none() && http_port == s.http_port {
        s.http_base.clone()
    } else if http_port == 80 {
        format!("http://{address}")
    } else {
        format!("http://{address}:{http_port}")
    };
    ServerInfo { tokens: tokens.clone(), ..ServerInfo::new(address, http_base) }
}

/// Runs the daemon until `shutdown` resolves. Every `reload.notify_one()` re-reads the config.
pub async fn run(
    opts: ServeOptions,
    listeners: Listeners,
    reload: Arc<Notify>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let opts = Arc::new(opts);
    // Taken before the config is read, so an edit made while it loads still triggers a reload.
    let before_load = opts.watch.map(|_| watcher::fingerprint(&opts.config_dir, opts.overlay.as_deref()));
    let (catalog, report, version) = {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || load_publish_and_check(&o)).await?.map_err(|r| r.error)?
    };
    log_publish(&report);
    let telemetry = start_telemetry(&opts).await?;
    telemetry.catalog_loaded(catalog_view(&opts, &catalog, version), false);
    let state_dir = opts.state_dir.clone();
    let tokens = tokio::task::spawn_blocking(move || crate::secret_files::token_key(&state_dir))
        .await?
        .with_context(|| format!("the machine token key in {}", opts.state_dir.display()))?;
    let installs = Arc::new(InstallStore::new(&opts.state_dir));
    rearm_changed(&installs, &catalog).await;
    let http_port = listeners.http.local_addr()?.port();
    let server = server_info(&catalog, &opts, http_port, &tokens);
    info!(
        config = %opts.config_dir.display(),
        profiles = catalog.profiles().len(),
        machines = catalog.machines().len(),
        dhcp = %opts.dhcp_mode.unwrap_or(catalog.settings().dhcp.mode),
        http = %server.http_base,
        tftp = %listeners.tftp.local_addr()?,
        "serving"
    );
    let started = SystemTime::now();
    let shared = Shared::with_telemetry(Arc::new(catalog), server, telemetry);
    let touches = Arc::new(Touches::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    let routes = Arc::new(tftp_routes::TftpRoutes {
        shared: shared.clone(),
        store: opts.store(),
        bootloaders: opts.bootloaders.clone(),
        root: opts.tftp_root.clone(),
        touches: touches.clone(),
        mode: opts.dhcp_mode,
        grub_images: Default::default(),
        installs: installs.clone(),
        pending: Default::default(),
    });
    let tftp_stop = stopped(stop_rx.clone());
    let (tftp_cfg, tftp_latency) = (opts.tftp.clone(), opts.cpu_latency.clone());
    tasks.spawn(async move {
        crate::tftp::serve(listeners.tftp, routes, tftp_cfg, tftp_latency, tftp_stop).await.context("tftp")
    });
    let http_ctx = Arc::new(crate::http::HttpContext {
        shared: shared.clone(),
        store: opts.store(),
        bootloaders: opts.bootloaders.clone(),
        boot_images: opts.boot_images(),
        touches: touches.clone(),
        shutdown_grace: Duration::from_secs(5),
        write_stall: crate::http::DEFAULT_WRITE_STALL,
        cpu_latency: opts.cpu_latency.clone(),
        installs: installs.clone(),
        limits: opts.http_limits,
    });
    let http_stop = stopped(stop_rx.clone());
    tasks.spawn(async move { crate::http::serve(listeners.http, http_ctx, http_stop).await.context("http") });
    if let Some(admin) = listeners.admin {
        let (state, file) = (opts.state_dir.clone(), opts.admin_token_file.clone());
        let token = tokio::task::spawn_blocking(move || crate::secret_files::admin_token(&state, file.as_deref()))
            .await?
            .context("the admin token")?;
        if let Some(f) = opts.admin_token_file.as_deref().filter(|f| crate::secret_files::readable_by_others(f)) {
            warn!(file = %f.display(), "the admin token file is readable by other users");
        }
        info!(admin = %admin.local_addr()?, "admin API listening");
        let ctx = Arc::new(crate::admin::AdminContext { installs: installs.clone(), shared: shared.clone(), token });
        let admin_stop = stopped(stop_rx.clone());
        tasks.spawn(async move { crate::admin::serve(admin, ctx, admin_stop).await.context("admin") });
    }
    if let Some(sockets) = listeners.dhcp {
        let mut dhcp_opts =
            crate::dhcp::DhcpOptions { mode: opts.dhcp_mode, state_dir: opts.state_dir.clone(), ..Default::default() };
        if let Some(to) = opts.dhcp_reply_to {
            dhcp_opts.reply_to = Some(to);
            dhcp_opts.client_port = to.port();
        }
        let dhcp_stop = stopped(stop_rx.clone());
        let sh = shared.clone();
        tasks.spawn(async move { crate::dhcp::run(sh, sockets, dhcp_opts, dhcp_stop).await.context("dhcp") });
    }
    // IPv6 router advertisements on the boot interface save iPXE ~13 s per stage
    // (docs/firmware.md#ipxe-wait-times).
    if let Some(iface) = &opts.interface {
        let (ra_stop, ra_done) = (stopped(stop_rx.clone()), stopped(stop_rx.clone()));
        let iface = iface.clone();
        tasks.spawn(async move {
            crate::dhcp::ra::advertise(&iface, ra_stop).await;
            // Without a raw socket (no root) it returns at once; that must not end the daemon.
            ra_done.await;
            Ok(())
        });
    }

    if let (Some(interval), Some(applied)) = (opts.watch, before_load) {
        let (dir, overlay, r) = (opts.config_dir.clone(), opts.overlay.clone(), reload.clone());
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = watcher::run(dir, overlay, interval, applied, move || {
                    info!("config directory changed: reloading");
                    r.notify_one();
                }) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            Ok(())
        });
    }

    // Free heap pages handed back after load (a burst of connections, a DHCP flood).
    let trim_stop = stop_rx.clone();
    tasks.spawn(async move {
        crate::memory::trim_periodically(crate::memory::TRIM_INTERVAL, trim_stop).await;
        Ok(())
    });

    tokio::pin!(shutdown);
    let mut gc_tick = tokio::time::interval(opts.gc_interval);
    gc_tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload.notified() => reload_config(&opts, &shared, http_port, &tokens, &installs).await,
            _ = gc_tick.tick() => collect_garbage(&opts, &shared, &touches, started).await,
            Some(done) = tasks.join_next() => {
                // A server task only ends on shutdown; anything else is fatal for the daemon.
                let err = match done {
                    Ok(Ok(())) => anyhow::anyhow!("a server task ended unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("a server task panicked: {e}"),
                };
                error!("{err:#}");
                let _ = stop_tx.send(true);
                while tasks.join_next().await.is_some() {}
                return Err(err);
            }
        }
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!("some transfers did not finish within 10 s of shutdown");
    }
    Ok(())
}

fn log_publish(report: &artifacts::PublishReport) {
    for set in &report.published {
        info!(profile = %set.profile, arch = %set.arch, version = %set.version, "published artifact version");
    }
}

async fn reload_config(
    opts: &Arc<ServeOptions>,
    shared: &Arc<Shared>,
    http_port: u16,
    tokens: &TokenKey,
    installs: &Arc<InstallStore>,
) {
    let o = opts.clone();
    match tokio::task::spawn_blocking(move || load_publish_and_check(&o)).await {
        Ok(Ok((catalog, report, version))) => {
            log_publish(&report);
            let server = server_info(&catalog, opts, http_port, tokens);
            info!(profiles = catalog.profiles().len(), machines = catalog.machines().len(), "config reloaded");
            shared.telemetry.catalog_loaded(catalog_view(opts, &catalog, version), true);
            shared.set_server(server);
            let catalog = Arc::new(catalog);
            shared.replace_catalog(catalog.clone());
            rearm_changed(installs, &catalog).await;
        }
        Ok(Err(refused)) => {
            error!("reload refused, still serving the previous config: {:#}", refused.error);
            shared.telemetry.reload_refused(refused.errors);
        }
        Err(e) => {
            error!("reload failed: {e}");
            shared.telemetry.reload_refused(vec![e.to_string()]);
        }
    }
}

/// The journal (its recent records read back) and the metrics.
async fn start_telemetry(opts: &ServeOptions) -> Result<Arc<crate::observe::Telemetry>> {
    let metrics = crate::observe::Metrics::new();
    let dropped = metrics.journal_dropped.clone();
    let settings = opts.journal.clone();
    let journal = tokio::task::spawn_blocking(move || {
        crate::observe::Journal::start(&settings, move || {
            dropped.inc();
        })
    })
    .await?
    .with_context(|| format!("starting the journal in {:?}", opts.journal.dir))?;
    if let Some(file) = journal.file() {
        info!(file = %file.display(), "journal: appending records");
    }
    Ok(Arc::new(crate::observe::Telemetry::new(journal, metrics)))
}

/// Re-arms the installed machines whose entry changed in `catalog` (see
/// `appliance_core::install`), so a reverted edit does not bring their record back.
async fn rearm_changed(installs: &Arc<InstallStore>, catalog: &Catalog) {
    let (i, c) = (installs.clone(), catalog.clone());
    match tokio::task::spawn_blocking(move || i.rearm_changed(&c)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(path = %installs.path().display(), "install log: re-arming changed entries failed: {e}"),
        Err(e) => error!("install log: re-arming changed entries failed: {e}"),
    }
}

async fn collect_garbage(opts: &Arc<ServeOptions>, shared: &Arc<Shared>, touches: &Arc<Touches>, started: SystemTime) {
    let catalog = shared.catalog();
    let grace = opts.gc_grace.unwrap_or(Duration::from_secs(catalog.settings().gc_grace_secs));
    let store = opts.store();
    let t = touches.clone();
    let images = opts.boot_images();
    let pruned = tokio::task::spawn_blocking(move || crate::http::prune_boot_images(&images, grace, SystemTime::now()));
    for path in pruned.await.unwrap_or_default() {
        info!(path = %path.display(), "removed a boot image not served within the grace period");
    }
    let result = tokio::task::spawn_blocking(move || {
        // Transfers are not remembered across a restart: count the start as a touch, so a
        // restart never shortens the grace period of a version a node may still be booting.
        let last = |p: &str, v: &str| Some(t.last(p, v).map_or(started, |x| x.max(started)));
        artifacts::gc(&catalog, &store, grace, &last, SystemTime::now())
    })
    .await;
    match result {
        Ok(report) => {
            for (profile, version) in &report.removed {
                info!(%profile, %version, "removed unreferenced artifact version");
            }
            let metrics = &shared.telemetry.metrics;
            metrics.gc_runs.inc();
            metrics.gc_freed_bytes.inc_by(report.freed_bytes);
        }
        Err(e) => warn!("artifact gc failed: {e}"),
    }
}

/// Where `serve` keeps its state by default.
pub fn default_state_dir() -> &'static Path {
    Path::new("/var/lib/appliance")
}
