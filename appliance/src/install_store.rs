//! The install log on disk: `<state>/installs.json`, which machines reported `installed` (and
//! so boot their disk under `after_install: local`) and the events each reported.
//!
//! Every change is a read-modify-write of the whole file under an exclusive `flock` on
//! `<state>/installs.lock`, written atomically (`atomic_file`), so the daemon and `appliance
//! rearm` (another process, with or without a daemon running) never lose each other's
//! changes, and a crash or `kill -9` leaves the old file or the new one. A change returns only
//! once it is durable on disk: `POST /events` answers 200 after that.
//!
//! Reads are served from a copy in memory, checked against the file's identity (device, inode,
//! size, modification time) on every read: each write renames a new file into place, so a
//! change made by another process is seen at the next read, with one `stat` per read and no
//! signal or polling. The daemon reads on each boot-config request.
//!
//! A file that does not decode is moved aside (`installs.json.corrupt-<unix seconds>`) and
//! the log starts empty; that is logged.
//!
//! Blocking calls: async code runs `update` on the blocking pool.

use appliance_core::catalog::Catalog;
use appliance_core::install::{InstallLog, Installed, MachineLog};
use appliance_core::mac::MacAddr;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

pub const FILE_NAME: &str = "installs.json";
const LOCK_NAME: &str = "installs.lock";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    version: u32,
    machines: InstallLog,
}

/// What identifies one version of the file: a write renames a new inode into place.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

#[derive(Default)]
struct Cached {
    /// `None`: no file (an empty log).
    id: Option<FileId>,
    log: InstallLog,
}

pub struct InstallStore {
    path: PathBuf,
    lock: PathBuf,
    cached: Mutex<Cached>,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl InstallStore {
    pub fn new(state_dir: &Path) -> InstallStore {
        InstallStore {
            path: state_dir.join(FILE_NAME),
            lock: state_dir.join(LOCK_NAME),
            cached: Mutex::new(Cached::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The machine's `installed` record, as the file has it now.
    pub fn installed(&self, mac: MacAddr) -> Option<Installed> {
        self.read(|log| log.installed(mac).cloned())
    }

    /// The machine's state and history, as the file has it now.
    pub fn machine(&self, mac: MacAddr) -> Option<MachineLog> {
        self.read(|log| log.machine(mac).cloned())
    }

    /// Runs `f` on the log as the file has it now.
    pub fn read<R>(&self, f: impl FnOnce(&InstallLog) -> R) -> R {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let id = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
        if id != cached.id {
            match self.load() {
                Ok((id, log)) => *cached = Cached { id, log },
                // Unreadable right now (a permission problem): keep what we had, and say so.
                Err(e) => warn!(path = %self.path.display(), "install log: cannot read, using the last copy: {e}"),
            }
        }
        f(&cached.log)
    }

    /// Applies `f` to the log under the file lock and writes the result durably before
    /// returning `f`'s result. Blocking.
    pub fn update<R>(&self, f: impl FnOnce(&mut InstallLog) -> R) -> io::Result<R> {
        let _lock = self.lock()?;
        let (_, mut log) = self.load_locked()?;
        let result = f(&mut log);
        let mut bytes = serde_json::to_vec_pretty(&FileWire { version: FORMAT_VERSION, machines: log.clone() })
            .map_err(io::Error::other)?;
        bytes.push(b'\n');
        crate::atomic_file::write(&self.path, &bytes)?;
        let id = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Cached { id, log };
        Ok(result)
    }

    /// Re-arms every installed machine whose entry in `catalog` changed since it reported
    /// (see `appliance_core::install`), logging each. Blocking.
    pub fn rearm_changed(&self, catalog: &Catalog) -> io::Result<Vec<MacAddr>> {
        // Most reloads change nothing: look before taking the lock and writing.
        let any = self.read(|log| {
            let mut probe = log.clone();
            !probe.rearm_changed(catalog, 0).is_empty()
        });
        if !any {
            return Ok(Vec::new());
        }
        let rearmed = self.update(|log| log.rearm_changed(catalog, now()))?;
        for mac in &rearmed {
            info!(%mac, "install log: re-armed, its entry in the config changed since it was installed");
        }
        Ok(rearmed)
    }

    fn lock(&self) -> io::Result<Flock<std::fs::File>> {
        if let Some(dir) = self.lock.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&self.lock)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
    }

    /// The file's identity and log; a missing file is an empty log, a corrupt one is moved
    /// aside (under the lock, so that a writer's new file is never the one moved).
    fn load(&self) -> io::Result<(Option<FileId>, InstallLog)> {
        match self.read_file()? {
            None => Ok((None, InstallLog::new())),
            Some((id, Ok(log))) => Ok((Some(id), log)),
            Some((_, Err(_))) => {
                let _lock = self.lock()?;
                self.load_locked()
            }
        }
    }

    /// `load` with the lock held.
    fn load_locked(&self) -> io::Result<(Option<FileId>, InstallLog)> {
        match self.read_file()? {
            None => Ok((None, InstallLog::new())),
            Some((id, Ok(log))) => Ok((Some(id), log)),
            Some((_, Err(e))) => {
                crate::atomic_file::set_aside(&self.path, now(), "install log", &e);
                Ok((None, InstallLog::new()))
            }
        }
    }

    /// The file's identity and what it decodes to; `None` when there is no file.
    fn read_file(&self) -> io::Result<Option<(FileId, Result<InstallLog, String>)>> {
        match std::fs::File::open(&self.path) {
            Ok(mut f) => {
                let meta = f.metadata()?;
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut f, &mut bytes)?;
                Ok(Some((FileId::of(&meta), decode(&bytes))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The log in `bytes`, or why the file is corrupt (only logged: nobody branches on it).
fn decode(bytes: &[u8]) -> Result<InstallLog, String> {
    let wire: FileWire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if wire.version != FORMAT_VERSION {
        return Err(format!("unknown format version {}", wire.version));
    }
    Ok(wire.machines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::events::{EventKind, Report};
    use appliance_core::install::RearmedBy;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn installed(store: &InstallStore, m: MacAddr, at: u64) {
        let r = Report { kind: EventKind::Installed, message: None, token: None };
        store.update(|log| log.record(m, &r, at, [3; 32])).unwrap();
    }

    #[test]
    fn changes_are_on_disk_when_update_returns_and_survive_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstallStore::new(dir.path());
        assert_eq!(store.installed(mac(1)), None);
        installed(&store, mac(1), 50);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"52:54:00:00:00:01\"") && text.contains("\"at\": 50"), "{text}");
        // A restarted daemon (a new store on the same directory) sees it.
        assert_eq!(InstallStore::new(dir.path()).installed(mac(1)).map(|i| i.at), Some(50));
    }

    #[test]
    fn a_change_by_another_process_is_seen_at_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = InstallStore::new(dir.path());
        installed(&daemon, mac(1), 50);
        assert!(daemon.installed(mac(1)).is_some());
        // `appliance rearm` is another process with its own store on the same directory.
        let cli = InstallStore::new(dir.path());
        assert!(cli.update(|log| log.rearm(mac(1), 60, RearmedBy::Command)).unwrap());
        assert_eq!(daemon.installed(mac(1)), None);
        // And the daemon's next write keeps the CLI's change.
        installed(&daemon, mac(2), 70);
        let history = cli.machine(mac(1)).unwrap().events;
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(cli.installed(mac(1)), None);
        // Removing the file is an empty log too.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(daemon.installed(mac(2)), None);
    }

    #[test]
    fn a_corrupt_log_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1, \"machines\": ").unwrap();
        let store = InstallStore::new(dir.path());
        assert_eq!(store.installed(mac(1)), None);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("installs.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        installed(&store, mac(1), 5);
        assert!(store.installed(mac(1)).is_some());
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 9, \"machines\": {}}").unwrap();
        assert_eq!(store.installed(mac(1)), None, "an unknown version is corrupt too");
    }
}
