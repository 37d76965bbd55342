//! Install state: which machines reported `installed`, the events each reported, and the
//! transitions between "netboot the installer" and "boot the installed disk".
//!
//! A machine whose entry, vendor rule or the unknown-machine policy says `after_install:
//! local` boots from its disk once it reported `installed`, until it is re-armed: by the
//! operator (`appliance rearm`, the admin API), or by a change to that machine's own entry in
//! the config. For the last, an `installed` record keeps the digest of the entry it was made
//! under ([`entry_digest`]); a record whose digest differs from the entry in force is void, and
//! the daemon removes it when it sees a new config (a reverted edit does not bring it back).
//!
//! Pure: times arrive as Unix seconds; the daemon's store keeps the log on disk.

pub use crate::calendar::utc;
use crate::catalog::{Catalog, Digest, Machine, Target};
use crate::events::{EventKind, Report};
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Events kept per machine (the oldest go first).
pub const EVENTS_PER_MACHINE: usize = 64;
/// Machines kept in the log; beyond it, the machine that was heard from least recently and is
/// not installed is forgotten (an installed machine's record is never dropped to make room).
pub const MAX_MACHINES: usize = 65_536;

/// What a machine does after it reported `installed`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AfterInstall {
    /// Nothing changes: it netboots what its target says (an installer reinstalls).
    #[default]
    Netboot,
    /// Boot from the local disk until re-armed.
    Local,
}

impl fmt::Display for AfterInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterInstall::Netboot => "netboot",
            AfterInstall::Local => "local",
        })
    }
}

/// The last `installed` report, kept until the machine is re-armed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Installed {
    /// Unix seconds.
    pub at: u64,
    /// [`entry_digest`] of the machine's entry when it reported.
    #[serde(with = "hex_digest")]
    pub entry: Digest,
}

/// Who re-armed a machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RearmedBy {
    /// `appliance rearm` on the appliance.
    Command,
    /// `POST /admin/rearm/<mac>`.
    Admin,
    /// The machine's entry in the config changed.
    Config,
}

impl fmt::Display for RearmedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RearmedBy::Command => "re-armed by `appliance rearm`",
            RearmedBy::Admin => "re-armed through the admin API",
            RearmedBy::Config => "re-armed: its entry in the config changed",
        })
    }
}

/// One line of a machine's history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Unix seconds.
    pub at: u64,
    #[serde(flatten)]
    pub what: What,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// The installer reported this.
    Event(EventKind),
    Rearmed(RearmedBy),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  ", utc(self.at))?;
        match &self.what {
            What::Event(k) => write!(f, "{k}")?,
            What::Rearmed(by) => write!(f, "{by}")?,
        }
        match &self.message {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

/// One machine's state and history.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct MachineLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<Installed>,
    /// Oldest first, at most [`EVENTS_PER_MACHINE`].
    #[serde(default)]
    pub events: VecDeque<Entry>,
}

impl MachineLog {
    fn push(&mut self, entry: Entry) {
        if self.events.len() >= EVENTS_PER_MACHINE {
            self.events.pop_front();
        }
        self.events.push_back(entry);
    }

    fn last_at(&self) -> u64 {
        self.events.back().map_or(0, |e| e.at)
    }
}

/// The install log of every machine that reported.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallLog {
    machines: BTreeMap<MacAddr, MachineLog>,
}

/// What recording a report did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recorded {
    /// Kept in the machine's history.
    Kept,
    /// Kept, and the machine is now installed.
    Installed,
    /// The log is full of installed machines: nothing was kept.
    Full,
}

impl InstallLog {
    pub fn new() -> InstallLog {
        InstallLog::default()
    }

    pub fn machine(&self, mac: MacAddr) -> Option<&MachineLog> {
        self.machines.get(&mac)
    }

    pub fn machines(&self) -> impl Iterator<Item = (MacAddr, &MachineLog)> {
        self.machines.iter().map(|(m, l)| (*m, l))
    }

    /// The machine's `installed` record, if it has one.
    pub fn installed(&self, mac: MacAddr) -> Option<&Installed> {
        self.machines.get(&mac).and_then(|l| l.installed.as_ref())
    }

    /// Records a report from `mac` at `at`; an `installed` report also records the machine as
    /// installed under `entry` (its [`entry_digest`] now).
    pub fn record(&mut self, mac: MacAddr, report: &Report, at: u64, entry: Digest) -> Recorded {
        if !self.machines.contains_key(&mac) && self.machines.len() >= MAX_MACHINES && !self.make_room() {
            return Recorded::Full;
        }
        let log = self.machines.entry(mac).or_default();
        log.push(Entry { at, what: What::Event(report.kind), message: report.message.clone() });
        if report.kind == EventKind::Installed {
            log.installed = Some(Installed { at, entry });
            Recorded::Installed
        } else {
            Recorded::Kept
        }
    }

    /// Forgets the least recently heard machine that is not installed.
    fn make_room(&mut self) -> bool {
        let victim = self
            .machines
            .iter()
            .filter(|(_, l)| l.installed.is_none())
            .min_by_key(|(_, l)| l.last_at())
            .map(|(m, _)| *m);
        victim.is_some_and(|m| self.machines.remove(&m).is_some())
    }

    /// Re-arms `mac`: its next netboot is decided by its target again. Returns whether it was
    /// installed (re-arming a machine that is not is recorded all the same).
    pub fn rearm(&mut self, mac: MacAddr, at: u64, by: RearmedBy) -> bool {
        let log = self.machines.entry(mac).or_default();
        let was = log.installed.take().is_some();
        log.push(Entry { at, what: What::Rearmed(by), message: None });
        was
    }

    /// Re-arms every installed machine whose entry in `catalog` is no longer the one it was
    /// installed under. Returns the machines re-armed.
    pub fn rearm_changed(&mut self, catalog: &Catalog, at: u64) -> Vec<MacAddr> {
        let changed: Vec<MacAddr> = self
            .machines
            .iter()
            .filter(|(mac, l)| l.installed.as_ref().is_some_and(|i| i.entry != entry_digest(catalog.machine(**mac))))
            .map(|(m, _)| *m)
            .collect();
        for mac in &changed {
            self.rearm(*mac, at, RearmedBy::Config);
        }
        changed
    }
}

/// Where a machine stands, as `decide` and `explain` read it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Standing {
    /// No `installed` record: it netboots what its target says.
    NotInstalled,
    /// Installed under the entry in force: with `after_install: local` it boots its disk.
    Installed { at: u64 },
    /// Installed, but its entry changed since: re-armed (the daemon removes the record).
    EntryChanged { at: u64 },
}

/// The standing of the machine `entry` (its entry in the MAC database, if any) with the
/// `installed` record `record`.
pub fn standing(record: Option<&Installed>, entry: Option<&Machine>) -> Standing {
    match record {
        None => Standing::NotInstalled,
        Some(i) if i.entry == entry_digest(entry) => Standing::Installed { at: i.at },
        Some(i) => Standing::EntryChanged { at: i.at },
    }
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Standing::NotInstalled => f.write_str("not installed"),
            Standing::Installed { at } => write!(f, "installed {}", utc(*at)),
            Standing::EntryChanged { at } => {
                write!(f, "installed {}, but its entry changed since: re-armed", utc(*at))
            }
        }
    }
}

/// A digest of what a machine's own entry says (hostname, architecture, target, address,
/// `chain_ipxe`, vars, `after_install`); a machine without an entry has a fixed digest, so
/// adding an entry for it re-arms it too. Field order and key order in the YAML do not count.
pub fn entry_digest(machine: Option<&Machine>) -> Digest {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(b"appliance-machine-entry-v1");
    let Some(m) = machine else {
        field(b"no entry");
        return h.finalize().into();
    };
    field(m.hostname.as_bytes());
    field(m.arch.map_or("", |a| a.as_str()).as_bytes());
    let target = match &m.target {
        None => String::new(),
        Some(Target::Profile(p)) => format!("profile {}", p.name),
        Some(Target::Menu(menu)) => format!("menu {}", menu.name),
        Some(Target::Local) => "local".into(),
        Some(Target::Ignore) => "ignore".into(),
    };
    field(target.as_bytes());
    field(m.address.map(|a| a.to_string()).unwrap_or_default().as_bytes());
    field(&[u8::from(m.chain_ipxe)]);
    let mut vars = String::new();
    canonical_json(&m.vars, &mut vars);
    field(vars.as_bytes());
    field(m.after_install.map(|a| a.to_string()).unwrap_or_default().as_bytes());
    h.finalize().into()
}

/// JSON with object keys sorted, whatever order the map keeps them in.
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A digest as 64 hex digits in the store file.
mod hex_digest {
    use crate::catalog::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        crate::config::values::parse_sha256(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn report(kind: EventKind) -> Report {
        Report { kind, message: Some(format!("{kind} now")), token: None }
    }

    #[test]
    fn installed_until_rearmed() {
        let mut log = InstallLog::new();
        let entry = entry_digest(None);
        assert_eq!(log.record(mac(1), &report(EventKind::Started), 10, entry), Recorded::Kept);
        assert_eq!(log.installed(mac(1)), None);
        assert_eq!(log.record(mac(1), &report(EventKind::Installed), 20, entry), Recorded::Installed);
        assert_eq!(log.installed(mac(1)), Some(&Installed { at: 20, entry }));
        assert_eq!(standing(log.installed(mac(1)), None), Standing::Installed { at: 20 });
        // Later reports do not undo it; only a re-arm does.
        log.record(mac(1), &report(EventKind::Failed), 30, entry);
        assert!(log.installed(mac(1)).is_some());
        assert!(log.rearm(mac(1), 40, RearmedBy::Command));
        assert_eq!(log.installed(mac(1)), None);
        assert!(!log.rearm(mac(1), 41, RearmedBy::Admin), "was not installed any more");
        let history: Vec<String> = log.machine(mac(1)).unwrap().events.iter().map(|e| e.to_string()).collect();
        assert_eq!(history[1], "1970-01-01 00:00:20 UTC  installed: installed now");
        assert_eq!(history[3], "1970-01-01 00:00:40 UTC  re-armed by `appliance rearm`");
        assert_eq!(history.len(), 5);
    }

    #[test]
    fn history_and_machines_are_bounded() {
        let mut log = InstallLog::new();
        for i in 0..EVENTS_PER_MACHINE as u64 + 5 {
            log.record(mac(1), &report(EventKind::Progress), i, entry_digest(None));
        }
        let events = &log.machine(mac(1)).unwrap().events;
        assert_eq!(events.len(), EVENTS_PER_MACHINE);
        assert_eq!(events.front().unwrap().at, 5);
    }

    #[test]
    fn a_full_log_forgets_the_stalest_machine_that_is_not_installed() {
        let mut log = InstallLog::new();
        let e = entry_digest(None);
        for i in 0..MAX_MACHINES as u32 {
            let b = i.to_be_bytes();
            let m = MacAddr([2, 0, b[0], b[1], b[2], b[3]]);
            let kind = if i == 0 { EventKind::Installed } else { EventKind::Progress };
            log.record(m, &report(kind), 1000 + u64::from(i), e);
        }
        assert_eq!(log.record(mac(1), &report(EventKind::Started), 99_999, e), Recorded::Kept);
        assert!(log.installed(MacAddr([2, 0, 0, 0, 0, 0])).is_some(), "the installed machine stays");
        assert!(log.machine(MacAddr([2, 0, 0, 0, 0, 1])).is_none(), "the stalest other one went");
        assert_eq!(log.machines().count(), MAX_MACHINES);
    }

    #[test]
    fn a_machine_without_an_entry_has_a_fixed_digest() {
        assert_eq!(entry_digest(None), entry_digest(None));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":"s"}}"#).unwrap();
        let mut out = String::new();
        canonical_json(&v, &mut out);
        assert_eq!(out, r#"{"a":{"c":"s","d":[{"x":2,"y":1}]},"b":1}"#);
    }

    #[test]
    fn the_log_round_trips_through_json() {
        let mut log = InstallLog::new();
        log.record(mac(3), &report(EventKind::Installed), 77, [9; 32]);
        log.rearm(mac(4), 78, RearmedBy::Config);
        let text = serde_json::to_string(&log).unwrap();
        assert!(text.contains(r#""52:54:00:00:00:03":{"installed":{"at":77,"entry":"0909"#), "{text}");
        assert!(text.contains(r#"{"at":78,"rearmed":"config"}"#), "{text}");
        assert_eq!(serde_json::from_str::<InstallLog>(&text).unwrap(), log);
    }
}
