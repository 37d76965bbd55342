//! Following the operator's git repository (`serve --config-git URL`): each new commit of the
//! followed branch is fetched into `<state>/git/repo` (bare), its config directory written to
//! `<state>/commits/<commit>/`, validated exactly as `check` does (`config_dir::load`), its
//! artifact sources obtained (`crate::obtain`) and published, and only then handed to the
//! daemon's reload path, which swaps the catalog whole.
//!
//! Architecture invariant: a commit is never swapped in before it validated and all of its
//! artifact versions are published; a refused commit changes nothing that is served (the last
//! good commit keeps serving, byte for byte), and is reported with every error and its id.
//!
//! One task runs every fetch (the poll timer, `POST /hooks/git` and SIGHUP only wake it), so
//! two fetches never run at once. Checkouts of the serving and the previously serving commit
//! are kept; older ones are removed.

pub mod git;
pub mod record;
pub mod task;

use crate::artifacts::{self, Blobs, PublishReport};
use crate::http_client::redacted;
use anyhow::Context;
use appliance_core::catalog::{Catalog, ConfigSource};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// What to follow, and how often.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub remote: git::Remote,
    pub poll: Duration,
    /// The config directory inside the repository (`profiles`; empty: the repository's root).
    pub subdir: PathBuf,
}

/// The outcome of one fetch.
#[derive(Debug)]
pub enum Cycle {
    /// The branch still points at the serving commit (or at one already refused).
    Unchanged,
    /// A new commit, validated and published, ready to be swapped in.
    Ready(Box<Ready>),
    Refused(Refusal),
}

#[derive(Debug)]
pub struct Ready {
    pub catalog: Catalog,
    pub report: PublishReport,
    /// The configuration's version (`appliance_core::version::catalog_version`).
    pub version: String,
    pub commit: String,
    pub summary: String,
}

/// Why a commit is not served (or, without a commit, why the fetch failed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub commit: Option<String>,
    /// Every problem, one line each (config errors as `FILE:LINE:COL: field: message`, the
    /// file named by its path in the repository).
    pub problems: Vec<String>,
    /// Worth trying the same commit again (a download or the network failed, space ran out);
    /// otherwise the commit itself is wrong and is not tried again.
    pub transient: bool,
}

/// What the follower reports (the admin API's `GET /admin/git`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub url: String,
    pub reference: String,
    pub serving: Option<String>,
    pub refused: Option<Refusal>,
    /// Seconds since the Unix epoch of the last fetch that reached the server.
    pub last_fetch: Option<u64>,
}

/// The follower's state between fetches; its work runs on a blocking thread.
pub struct Follower {
    source: GitSource,
    state: PathBuf,
    overlay: Option<PathBuf>,
    blobs: PathBuf,
    tls: crate::http_client::Tls,
    serving: Option<String>,
    previous: Option<String>,
    /// The last refused commit and whether trying it again may help.
    refused: Option<(String, bool)>,
    pub status: Arc<Mutex<Status>>,
}

impl Follower {
    pub fn new(source: GitSource, state: &Path, overlay: Option<PathBuf>, blobs: PathBuf) -> Follower {
        let status = Status {
            url: redacted(&source.remote.url),
            reference: source.remote.reference.clone(),
            ..Status::default()
        };
        Follower {
            tls: source.remote.tls.clone(),
            source,
            state: state.to_path_buf(),
            overlay,
            blobs,
            serving: None,
            previous: None,
            refused: None,
            status: Arc::new(Mutex::new(status)),
        }
    }

    pub fn poll(&self) -> Duration {
        self.source.poll
    }

    fn repo(&self) -> PathBuf {
        self.state.join("git").join("repo")
    }

    fn commits(&self) -> PathBuf {
        self.state.join("commits")
    }

    fn store(&self) -> PathBuf {
        self.state.join("artifacts")
    }

    fn downloads(&self) -> PathBuf {
        crate::obtain::downloads_dir(&self.state)
    }

    fn config_source(&self, commit: &str) -> ConfigSource {
        ConfigSource::Git { url: redacted(&self.source.remote.url), commit: commit.to_string() }
    }

    fn blobs_with(&self, serving: Option<&Catalog>) -> Blobs {
        let mut blobs = Blobs { dirs: vec![self.blobs.clone(), self.downloads()], copies: Default::default() };
        if let Some(c) = serving {
            blobs.add_published(c, &self.store());
        }
        blobs
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The daemon runs unprivileged by now: a state directory it cannot write would show only
    /// at the first fetch, checkout or download, so it is found out at the start.
    fn check_writable(&self) -> anyhow::Result<()> {
        let git = self.repo().parent().map(Path::to_path_buf).unwrap_or_else(|| self.state.clone());
        for dir in [git, self.commits(), self.downloads()] {
            let probe = dir.join(".writable");
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&probe, b""))
                .and_then(|()| std::fs::remove_file(&probe))
                .with_context(|| format!("the git follower cannot write {}", dir.display()))?;
        }
        Ok(())
    }

    /// The catalog to start with: the last good commit recorded in the state directory (when
    /// it was fetched from the same URL), else `fallback` (the image's baked-in config), else
    /// the branch's commit, fetched now.
    pub fn startup(&mut self, fallback: Option<&Path>) -> anyhow::Result<(Catalog, PublishReport, String)> {
        self.check_writable()?;
        if let Some(commit) = record::read(&self.state, &redacted(&self.source.remote.url)) {
            let dir = self.commits().join(&commit);
            match self.load_published(&dir, &commit) {
                Ok(loaded) => {
                    info!(commit = %commit, "serving the last good commit until the first fetch");
                    self.serving = Some(commit.clone());
                    self.set_status(|s| s.serving = Some(commit));
                    return Ok(loaded);
                }
                Err(e) => warn!(commit = %commit, "the last good commit cannot be served again: {e:#}"),
            }
        }
        if let Some(dir) = fallback.filter(|d| d.is_dir()) {
            info!(config = %dir.display(), "serving the local config directory until the first good commit");
            let (catalog, version) = crate::config_dir::load_versioned(dir, self.overlay.as_deref())
                .map_err(|errs| anyhow::anyhow!("{} config error(s):\n{errs}", errs.0.len()))?;
            let report = self.publish(&catalog, None)?;
            return Ok((catalog, report, version));
        }
        match self.cycle(None, &|| {}) {
            Cycle::Ready(r) => {
                self.applied(&r.commit, &r.catalog);
                Ok((r.catalog, r.report, r.version))
            }
            Cycle::Refused(r) => anyhow::bail!(
                "nothing to serve: {}{}",
                r.commit.map(|c| format!("commit {c} refused:\n  ")).unwrap_or_default(),
                r.problems.join("\n  ")
            ),
            Cycle::Unchanged => anyhow::bail!("nothing to serve"),
        }
    }

    fn load_published(&self, dir: &Path, commit: &str) -> anyhow::Result<(Catalog, PublishReport, String)> {
        let (catalog, version) = crate::config_dir::load_versioned(dir, self.overlay.as_deref())
            .map_err(|errs| anyhow::anyhow!("{errs}"))?;
        let catalog = catalog.with_config_source(self.config_source(commit));
        let report = self.publish(&catalog, None)?;
        Ok((catalog, report, version))
    }

    fn publish(&self, catalog: &Catalog, serving: Option<&Catalog>) -> anyhow::Result<PublishReport> {
        let store = self.store();
        std::fs::create_dir_all(&store)?;
        artifacts::publish_from(catalog, &store, &self.blobs_with(serving)).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// One fetch: the branch's commit, and if it is new, everything short of the swap.
    /// `collect_garbage` runs the artifact store's GC before anything is downloaded.
    pub fn cycle(&mut self, serving: Option<&Catalog>, collect_garbage: &dyn Fn()) -> Cycle {
        let commit = match git::fetch(&self.repo(), &self.source.remote) {
            Ok(c) => c,
            Err(e) => return Cycle::Refused(Refusal { commit: None, problems: vec![e.to_string()], transient: true }),
        };
        self.set_status(|s| {
            s.last_fetch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
        });
        if self.serving.as_deref() == Some(commit.as_str()) {
            return Cycle::Unchanged;
        }
        if matches!(&self.refused, Some((c, false)) if *c == commit) {
            return Cycle::Unchanged;
        }
        let refuse = |problems: Vec<String>, transient: bool| {
            Cycle::Refused(Refusal { commit: Some(commit.clone()), problems, transient })
        };
        let dir = match self.checkout(&commit) {
            Ok(d) => d,
            Err(e) => return refuse(vec![e.to_string()], false),
        };
        let (catalog, version) = match crate::config_dir::load_versioned(&dir, self.overlay.as_deref()) {
            Ok((c, v)) => (c.with_config_source(self.config_source(&commit)), v),
            Err(errs) => return refuse(errs.0.iter().map(|e| self.in_repo(&dir, &e.to_string())).collect(), false),
        };
        collect_garbage();
        let mut keep = vec![&catalog];
        keep.extend(serving);
        for name in crate::obtain::collect(&self.downloads(), &keep) {
            info!(file = %name, "removed a download no catalog uses");
        }
        let blobs = self.blobs_with(serving);
        let obtained = self
            .tls
            .client()
            .map_err(crate::obtain::ObtainError::from)
            .and_then(|client| crate::obtain::obtain(&client, &catalog, &self.store(), &blobs, &self.downloads()));
        if let Err(e) = obtained {
            use crate::obtain::download::DownloadError as D;
            use crate::obtain::ObtainError as O;
            let transient = matches!(
                e,
                O::NoSpace { .. }
                    | O::Client(_)
                    | O::Download(D::Transfer { .. } | D::Status { .. } | D::Io { .. } | D::NoSpace { .. })
            );
            return refuse(e.to_string().lines().map(str::to_string).collect(), transient);
        }
        let report = match self.publish(&catalog, serving) {
            Ok(r) => r,
            Err(e) => return refuse(vec![format!("{e:#}")], false),
        };
        let summary = git::summary(&self.repo(), &commit).unwrap_or_default();
        Cycle::Ready(Box::new(Ready { catalog, report, version, commit, summary }))
    }

    /// A config error's file as its path in the repository (`profiles/machines.yaml`).
    fn in_repo(&self, checkout: &Path, message: &str) -> String {
        let prefix = format!("{}/", checkout.display());
        let subdir = self.source.subdir.display().to_string();
        let replacement = if subdir.is_empty() { String::new() } else { format!("{subdir}/") };
        message.replace(&prefix, &replacement)
    }

    /// `<state>/commits/<commit>`, written from the repository unless it is there already.
    fn checkout(&self, commit: &str) -> Result<PathBuf, git::GitError> {
        let dir = self.commits().join(commit);
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.commits().join(format!(".tmp-{commit}"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| git::GitError::Io { path, error }
        };
        std::fs::create_dir_all(self.commits()).map_err(io(&self.commits()))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        git::checkout(&self.repo(), commit, &self.source.subdir, &tmp)?;
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Records a refusal (and says whether it is news, to be logged).
    pub fn refused(&mut self, r: &Refusal) -> bool {
        let news = {
            let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.refused.as_ref() != Some(r)
        };
        if let Some(c) = &r.commit {
            self.refused = Some((c.clone(), r.transient));
        }
        self.set_status(|s| s.refused = Some(r.clone()));
        news
    }

    /// After the swap: remember the commit on disk, remove older checkouts and unused downloads.
    pub fn applied(&mut self, commit: &str, catalog: &Catalog) {
        if let Err(e) = record::write(&self.state, &redacted(&self.source.remote.url), commit) {
            warn!("recording the serving commit: {e}");
        }
        if self.serving.as_deref() != Some(commit) {
            self.previous = self.serving.replace(commit.to_string());
        }
        self.refused = None;
        self.set_status(|s| {
            s.serving = Some(commit.to_string());
            s.refused = None;
        });
        let keep: Vec<&str> = [self.serving.as_deref(), self.previous.as_deref()].into_iter().flatten().collect();
        if let Ok(entries) = std::fs::read_dir(self.commits()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name.as_str()) && std::fs::remove_dir_all(e.path()).is_ok() {
                    info!(commit = %name, "removed an old checkout");
                }
            }
        }
        for name in crate::obtain::collect(&self.downloads(), &[catalog]) {
            info!(file = %name, "removed a download no catalog uses");
        }
    }
}
