//! Keeping the lease table across restarts: `<state dir>/leases.json`, written atomically
//! (`atomic_file`: a temporary file in the same directory, fsync, rename over the old file,
//! fsync the directory) so a crash leaves either the old table or the new one, never a torn file.
//!
//! A file that cannot be read as a lease table is logged, moved aside (`leases.json.corrupt-<unix
//! seconds>`) and replaced by an empty table: losing leases is better than not serving. The
//! allocation rules are `leases`'; this module only moves the table to and from disk.

use appliance_core::dhcp::leases::{Lease, Leases, State};
use appliance_core::mac::{BadMac, MacAddr};
use serde::{Deserialize, Serialize};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

pub const FILE_NAME: &str = "leases.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    version: u32,
    leases: Vec<LeaseWire>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseWire {
    ip: Ipv4Addr,
    mac: String,
    state: StateWire,
    /// Unix seconds.
    expires: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum StateWire {
    Offered,
    Bound,
    Declined,
}

/// Where the lease table lives.
#[derive(Clone, Debug)]
pub struct LeaseStore {
    path: PathBuf,
}

impl LeaseStore {
    pub fn new(state_dir: &Path) -> Self {
        LeaseStore { path: state_dir.join(FILE_NAME) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the table; a missing file is an empty table, a corrupt one is moved aside. Temporary
    /// files that a write killed half-way left behind are removed first.
    pub fn load(&self, now: u64) -> Leases {
        self.remove_stale_temps();
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Leases::new(),
            Err(e) => {
                warn!(path = %self.path.display(), "dhcp: cannot read the lease file, starting empty: {e}");
                return Leases::new();
            }
        };
        match decode(&text) {
            Ok(leases) => {
                info!(path = %self.path.display(), count = leases.iter().count(), "dhcp: leases loaded");
                leases
            }
            Err(e) => {
                crate::atomic_file::set_aside(&self.path, now, "dhcp: lease file", &e);
                Leases::new()
            }
        }
    }

    /// Removes lease writes a kill left unfinished (see [`crate::atomic_file::remove_stale_temps`]).
    fn remove_stale_temps(&self) {
        crate::atomic_file::remove_stale_temps(&self.path, "dhcp: lease write");
    }

    /// Writes `bytes` (from [`encode`]) over the lease file atomically. Blocking: call it from
    /// `spawn_blocking` in async code.
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        crate::atomic_file::write(&self.path, bytes)
    }
}

/// The lease file's bytes for `leases`.
pub fn encode(leases: &Leases) -> Vec<u8> {
    let wire = FileWire {
        version: FORMAT_VERSION,
        leases: leases
            .iter()
            .map(|l| LeaseWire {
                ip: l.ip,
                mac: l.mac.to_string(),
                state: match l.state {
                    State::Offered => StateWire::Offered,
                    State::Bound => StateWire::Bound,
                    State::Declined => StateWire::Declined,
                },
                expires: l.expires,
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&wire).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Why a lease file is corrupt (it is then moved aside).
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown format version {0}")]
    Version(u32),
    #[error("{0}")]
    Mac(#[from] BadMac),
}

fn decode(bytes: &[u8]) -> Result<Leases, DecodeError> {
    let wire: FileWire = serde_json::from_slice(bytes)?;
    if wire.version != FORMAT_VERSION {
        return Err(DecodeError::Version(wire.version));
    }
    let entries = wire
        .leases
        .into_iter()
        .map(|l| {
            let mac = MacAddr::parse(&l.mac)?;
            let state = match l.state {
                StateWire::Offered => State::Offered,
                StateWire::Bound => State::Bound,
                StateWire::Declined => State::Declined,
            };
            Ok(Lease { ip: l.ip, mac, state, expires: l.expires })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(Leases::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Leases {
        Leases::from_entries([
            Lease {
                ip: "10.0.0.100".parse().unwrap(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                state: State::Bound,
                expires: 99,
            },
            Lease {
                ip: "10.0.0.101".parse().unwrap(),
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                state: State::Declined,
                expires: 7,
            },
        ])
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        assert_eq!(store.load(0), Leases::new());
        store.write(&encode(&table())).unwrap();
        assert_eq!(store.load(0), table());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        std::fs::write(store.path(), b"{ not json").unwrap();
        assert_eq!(store.load(1234), Leases::new());
        assert!(!store.path().exists());
        assert_eq!(std::fs::read(dir.path().join("leases.json.corrupt-1234")).unwrap(), b"{ not json");
        // A bad MAC inside well-formed JSON is corrupt too.
        std::fs::write(
            store.path(),
            br#"{"version":1,"leases":[{"ip":"10.0.0.1","mac":"zz","state":"bound","expires":1}]}"#,
        )
        .unwrap();
        assert_eq!(store.load(1235), Leases::new());
        assert!(dir.path().join("leases.json.corrupt-1235").exists());
    }

    #[test]
    fn writes_a_kill_left_unfinished_are_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(dir.path());
        store.write(&encode(&table())).unwrap();
        // What kill -9 between create and rename leaves: a temporary file of another process.
        std::fs::write(dir.path().join(".leases.json.tmp-4242"), b"{ half").unwrap();
        std::fs::write(dir.path().join("keep.tmp-1"), b"not ours").unwrap();
        assert_eq!(store.load(0), table());
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["keep.tmp-1", FILE_NAME]);
    }
}
