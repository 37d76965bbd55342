//! The reload path: what swapping in a new catalog needs, shared by config directory reloads
//! (SIGHUP, the directory watch) and the git follower (`crate::follow`), so both swap the same
//! way: only after validation and publication, and with the status page and `/metrics` told.

use super::{catalog_view, load_publish_and_check, server_info, ServeOptions};
use crate::artifacts::{self, Touches};
use crate::install_store::InstallStore;
use crate::state::Shared;
use appliance_core::catalog::Catalog;
use appliance_core::token::TokenKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{error, info, warn};

pub struct Reloader {
    pub(super) opts: Arc<ServeOptions>,
    pub(super) shared: Arc<Shared>,
    pub(super) http_port: u16,
    pub(super) tokens: TokenKey,
    pub(super) installs: Arc<InstallStore>,
    pub(super) touches: Arc<Touches>,
    pub(super) started: SystemTime,
}

impl Reloader {
    /// The catalog in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog()
    }

    /// Swaps in `catalog` (configuration version `version`), whose artifact versions `report`
    /// published, and returns it.
    pub async fn apply(&self, catalog: Catalog, report: &artifacts::PublishReport, version: String) -> Arc<Catalog> {
        log_publish(report);
        let server = server_info(&catalog, &self.opts, self.http_port, &self.tokens);
        info!(
            profiles = catalog.profiles().len(),
            machines = catalog.machines().len(),
            config = %catalog.config_source(),
            "config reloaded"
        );
        self.shared.telemetry.catalog_loaded(catalog_view(&self.opts, &catalog, version), true);
        self.shared.set_server(server);
        let catalog = Arc::new(catalog);
        self.shared.replace_catalog(catalog.clone());
        rearm_changed(&self.installs, &catalog).await;
        catalog
    }

    /// A new config was refused (every error, one line each): counted in `/metrics` and listed
    /// on the status page; the catalog in force stays.
    pub fn refused(&self, errors: Vec<String>) {
        self.shared.telemetry.reload_refused(errors);
    }

    /// Reloads the config directory: loads and publishes it off the async threads, then swaps;
    /// an invalid config is refused with every error and the old one keeps serving.
    pub(super) async fn reload_dir(&self) {
        let o = self.opts.clone();
        match tokio::task::spawn_blocking(move || load_publish_and_check(&o)).await {
            Ok(Ok((catalog, report, version))) => {
                self.apply(catalog, &report, version).await;
            }
            Ok(Err(refused)) => {
                error!("reload refused, still serving the previous config: {:#}", refused.error);
                self.refused(refused.errors);
            }
            Err(e) => {
                error!("reload failed: {e}");
                self.refused(vec![e.to_string()]);
            }
        }
    }

    pub(super) async fn collect_garbage(self: &Arc<Self>) {
        let r = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || r.collect_garbage_blocking()).await {
            warn!("artifact gc failed: {e}");
        }
    }

    /// Removes the boot images and artifact versions the catalog in force no longer uses once
    /// their grace period passed, and logs what it removed.
    pub fn collect_garbage_blocking(&self) {
        let catalog = self.shared.catalog();
        let grace = self.opts.gc_grace.unwrap_or(Duration::from_secs(catalog.settings().gc_grace_secs));
        for path in crate::http::prune_boot_images(&self.opts.boot_images(), grace, SystemTime::now()) {
            info!(path = %path.display(), "removed a boot image not served within the grace period");
        }
        // Transfers are not remembered across a restart: count the start as a touch, so a
        // restart never shortens the grace period of a version a node may still be booting.
        let (t, started) = (&self.touches, self.started);
        let last = |p: &str, v: &str| Some(t.last(p, v).map_or(started, |x| x.max(started)));
        let report = artifacts::gc(&catalog, &self.opts.store(), grace, &last, SystemTime::now());
        for (profile, version) in &report.removed {
            info!(%profile, %version, "removed unreferenced artifact version");
        }
        let metrics = &self.shared.telemetry.metrics;
        metrics.gc_runs.inc();
        metrics.gc_freed_bytes.inc_by(report.freed_bytes);
    }
}

pub(super) fn log_publish(report: &artifacts::PublishReport) {
    for set in &report.published {
        info!(profile = %set.profile, arch = %set.arch, version = %set.version, "published artifact version");
    }
}

/// Re-arms the installed machines whose entry changed in `catalog` (see
/// `appliance_core::install`), so a reverted edit does not bring their record back.
pub(super) async fn rearm_changed(installs: &Arc<InstallStore>, catalog: &Catalog) {
    let (i, c) = (installs.clone(), catalog.clone());
    match tokio::task::spawn_blocking(move || i.rearm_changed(&c)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(path = %installs.path().display(), "install log: re-arming changed entries failed: {e}"),
        Err(e) => error!("install log: re-arming changed entries failed: {e}"),
    }
}
