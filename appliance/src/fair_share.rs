//! The occupants of a limited resource (TFTP transfers, HTTP connections) and the means to end
//! one: the daemon's side of `appliance_core::fair_share`, which decides who gets in.
//!
//! Each admitted request holds a [`Slot`] until it ends (dropping it frees the place). The
//! slot's [`Activity`] is touched by whoever sees progress (an ACK, a byte read or written),
//! lock-free; the table reads those stamps only when a limit is reached and the decision needs
//! the occupants' idle times. An occupant chosen to make room is removed from the table at
//! once (so the next arrival does not choose it again) and told through its slot's
//! [`Stop`] watch; it ends itself (a TFTP ERROR, a closed connection).
//!
//! This module owns the table and the signals; what a limit is and who goes is the core's.

use appliance_core::fair_share::{admit, Admission, Occupant, Refusal, ShareLimits};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What an occupant is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    #[default]
    Run,
    /// Make room: it stalled while someone else waited.
    Evict,
    /// The server is stopping.
    Shutdown,
}

/// When an occupant last made progress, in microseconds since its table's epoch.
#[derive(Debug, Clone)]
pub struct Activity {
    stamp: Arc<AtomicU64>,
    epoch: Instant,
}

impl Default for Activity {
    /// A stamp of its own, for an occupant outside any table.
    fn default() -> Self {
        Activity { stamp: Arc::new(AtomicU64::new(0)), epoch: Instant::now() }
    }
}

impl Activity {
    /// Progress now.
    pub fn touch(&self) {
        self.stamp.store(micros(self.epoch.elapsed()), Ordering::Relaxed);
    }

    fn idle(&self, now: Duration) -> Duration {
        now.saturating_sub(Duration::from_micros(self.stamp.load(Ordering::Relaxed)))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Entry {
    source: IpAddr,
    activity: Activity,
    stop: watch::Sender<Stop>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

/// The occupants of one resource under its [`ShareLimits`].
pub struct Occupancy {
    limits: ShareLimits,
    epoch: Instant,
    table: Mutex<Table>,
}

/// An occupant made room for an arrival: who, and how long it had been idle (for the log).
#[derive(Debug, Clone, Copy)]
pub struct Evicted {
    pub source: IpAddr,
    pub idle: Duration,
}

/// One admitted occupant's place; dropping it frees the place.
pub struct Slot {
    id: u64,
    occupancy: Arc<Occupancy>,
    activity: Activity,
    /// Changes when the occupant is asked to stop.
    pub stop: watch::Receiver<Stop>,
}

impl Slot {
    /// The handle to report progress through (cheap to clone, lock-free to touch).
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.occupancy.lock().remove(self.id);
    }
}

impl Occupancy {
    pub fn new(limits: ShareLimits) -> Arc<Occupancy> {
        Arc::new(Occupancy { limits, epoch: Instant::now(), table: Mutex::new(Table::default()) })
    }

    pub fn limits(&self) -> &ShareLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current occupants.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for an arrival from `source`, perhaps in place of a stalled occupant (which is
    /// told to stop), or the limit that refused it.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<(Slot, Option<Evicted>), Refusal> {
        let now = self.epoch.elapsed();
        let mut table = self.lock();
        let from_source = table.per_source.get(&source).copied().unwrap_or(0);
        let decision = admit(&self.limits, source, from_source, table.entries.len(), || {
            table
                .entries
                .iter()
                .map(|(&id, e)| Occupant { id, source: e.source, idle: e.activity.idle(now) })
                .collect::<Vec<_>>()
        });
        let evicted = match decision {
            Admission::Admit => None,
            Admission::Refuse(r) => return Err(r),
            Admission::Evict(victim) => {
                if let Some(entry) = table.remove(victim.id) {
                    entry.stop.send_replace(Stop::Evict);
                }
                Some(Evicted { source: victim.source, idle: victim.idle })
            }
        };
        let id = table.next_id;
        table.next_id += 1;
        let activity = Activity { stamp: Arc::new(AtomicU64::new(micros(now))), epoch: self.epoch };
        let (stop_tx, stop) = watch::channel(Stop::Run);
        table.entries.insert(id, Entry { source, activity: activity.clone(), stop: stop_tx });
        *table.per_source.entry(source).or_default() += 1;
        drop(table);
        Ok((Slot { id, occupancy: Arc::clone(self), activity, stop }, evicted))
    }

    /// Tells every occupant the server stops.
    pub fn stop_all(&self) {
        for entry in self.lock().entries.values() {
            entry.stop.send_replace(Stop::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ShareLimits {
        ShareLimits { per_source: 2, total: 3, evict_after: Duration::from_millis(30) }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn slots_free_their_place_when_dropped() {
        let o = Occupancy::new(limits());
        let a = o.admit(ip(1)).unwrap().0;
        let _b = o.admit(ip(1)).unwrap().0;
        assert_eq!(o.admit(ip(1)).err(), Some(Refusal::SourceFull));
        drop(a);
        assert!(o.admit(ip(1)).is_ok());
    }

    #[test]
    fn a_stalled_occupant_is_told_to_make_room_and_leaves_the_table_at_once() {
        let o = Occupancy::new(limits());
        let (stalled, _) = o.admit(ip(1)).unwrap();
        let (busy, _) = o.admit(ip(1)).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        busy.activity().touch();
        let (_new, evicted) = o.admit(ip(1)).unwrap();
        assert_eq!(evicted.map(|e| e.source), Some(ip(1)));
        assert_eq!(*stalled.stop.borrow(), Stop::Evict);
        assert_eq!(*busy.stop.borrow(), Stop::Run);
        assert_eq!(o.len(), 2, "the evicted one no longer counts");
        drop(stalled);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn stop_all_reaches_every_occupant() {
        let o = Occupancy::new(limits());
        let slots: Vec<_> = (1..=3).map(|i| o.admit(ip(i)).unwrap().0).collect();
        o.stop_all();
        assert!(slots.iter().all(|s| *s.stop.borrow() == Stop::Shutdown));
    }
}
