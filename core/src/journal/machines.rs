//! The journal in memory: the last `records` records of each of the last `machines` machines
//! (a ring per MAC, machines evicted least recently heard from first), and a ring of records
//! that name no machine. Both bounds are settings, so a flood of made-up MACs costs at most
//! `machines × records` records.
//!
//! Pure: records arrive with their time; the daemon's writer thread is the only caller of
//! [`Machines::push`].

use super::record::{Event, Record, Severity, Step};
use crate::mac::MacAddr;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How much the journal keeps in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub machines: usize,
    /// Per machine, and for the records that name none.
    pub records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { machines: 4096, records: 200 }
    }
}

struct Ring {
    records: VecDeque<Record>,
    /// Position in the recency order (`Machines::recent`).
    seq: u64,
}

/// The bounded per-machine journal. See the module documentation.
pub struct Machines {
    limits: Limits,
    by_mac: HashMap<MacAddr, Ring>,
    /// Sequence number of each machine's last record → the machine; the first is the stalest.
    recent: BTreeMap<u64, MacAddr>,
    seq: u64,
    unattributed: VecDeque<Record>,
}

impl Machines {
    pub fn new(limits: Limits) -> Machines {
        let limits = Limits { machines: limits.machines.max(1), records: limits.records.max(1) };
        Machines { limits, by_mac: HashMap::new(), recent: BTreeMap::new(), seq: 0, unattributed: VecDeque::new() }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Adds a record at the end of its machine's ring (or the ring of records without one).
    pub fn push(&mut self, record: Record) {
        let Some(mac) = record.mac else {
            bounded_push(&mut self.unattributed, record, self.limits.records);
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        if !self.by_mac.contains_key(&mac) && self.by_mac.len() >= self.limits.machines {
            if let Some((_, stalest)) = self.recent.pop_first() {
                self.by_mac.remove(&stalest);
            }
        }
        let ring = self.by_mac.entry(mac).or_insert_with(|| Ring { records: VecDeque::new(), seq });
        self.recent.remove(&ring.seq);
        ring.seq = seq;
        self.recent.insert(seq, mac);
        bounded_push(&mut ring.records, record, self.limits.records);
    }

    /// A machine's records, oldest first.
    pub fn timeline(&self, mac: MacAddr) -> Option<&VecDeque<Record>> {
        self.by_mac.get(&mac).map(|r| &r.records)
    }

    /// Every machine with its records, the one heard from last first.
    pub fn machines(&self) -> impl Iterator<Item = (MacAddr, &VecDeque<Record>)> {
        self.recent.values().rev().filter_map(|mac| self.by_mac.get(mac).map(|r| (*mac, &r.records)))
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Records that name no machine, oldest first.
    pub fn unattributed(&self) -> &VecDeque<Record> {
        &self.unattributed
    }
}

fn bounded_push(ring: &mut VecDeque<Record>, record: Record, limit: usize) {
    while ring.len() >= limit {
        ring.pop_front();
    }
    ring.push_back(record);
}

/// One row of the machines table: what the records say about a machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub arch: Option<String>,
    pub firmware: Option<String>,
    /// The last record's step and what it was.
    pub step: Step,
    pub last_stage: String,
    pub profile: Option<String>,
    pub version: Option<String>,
    /// `installed <time>`, `installing (progress)`, `install failed`, `re-armed`, or `-`.
    pub install: String,
    /// Unix milliseconds.
    pub last_seen: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub records: usize,
}

/// The summary of `mac` from its records (oldest first). `installed` is the install log's
/// `installed` time (Unix seconds) when it has one: the log, not the journal, is what boot
/// decisions follow.
pub fn summarize(mac: MacAddr, records: &VecDeque<Record>, installed: Option<u64>) -> Summary {
    let newest = records.iter().rev();
    let decided = newest.clone().find_map(|r| r.decision());
    let last = records.back();
    let firmware = newest.clone().find_map(|r| match &r.event {
        Event::Dhcp(d) if d.firmware != "unknown" => Some(d.firmware.to_string()),
        _ => None,
    });
    let (profile, version) = newest.clone().find_map(|r| r.profile_version()).unzip();
    let error = newest.clone().find(|r| r.severity() == Severity::Error);
    let install = match installed {
        Some(at) => format!("installed {}", crate::calendar::utc(at)),
        None => newest
            .clone()
            .find_map(|r| match &r.event {
                Event::Rearm(_) => Some("re-armed".to_string()),
                Event::Installer(i) if i.status < 300 => i.event.map(|k| match k {
                    crate::events::EventKind::Installed => "installed, then re-armed".to_string(),
                    crate::events::EventKind::Failed => "install failed".to_string(),
                    k => format!("installing ({k})"),
                }),
                _ => None,
            })
            .unwrap_or_else(|| "-".into()),
    };
    Summary {
        mac,
        hostname: decided.map(|d| d.hostname.clone()),
        arch: newest.clone().find_map(|r| r.decision().and_then(|d| d.arch.as_deref().map(str::to_string))),
        firmware,
        step: last.map_or(Step::Other, Record::step),
        last_stage: last.map_or_else(|| "-".into(), Record::what),
        profile,
        version,
        install,
        last_seen: last.map_or(0, |r| r.at),
        last_error: error.map(|r| format!("{}: {}", r.what(), error_words(r))),
        last_error_at: error.map(|r| r.at),
        records: records.len(),
    }
}

/// Why an error record is one: the ignore reason where `decide` refused, else its result.
fn error_words(r: &Record) -> String {
    match r.decision().and_then(|d| d.ignored.as_ref()) {
        Some(why) => format!("not served: {why}"),
        None => r.result(),
    }
}
