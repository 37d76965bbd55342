//! Rate limiting of repeated warnings per source: a client that makes the daemon warn (a
//! malformed request, a refused transfer) gets a few lines per period and no more; the next
//! line it gets after a quiet spell says how many were suppressed, so an operator sees both
//! that it happened and how often, without a flood that buries everything else.
//!
//! The table is bounded: a flood from many addresses (spoofed UDP sources) cannot grow it; when
//! full, the source seen longest ago is forgotten (its suppressed count goes into a global
//! count the next admitted line reports).
//!
//! Pure: time is an argument ([`Duration`] since an epoch the caller chooses).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Lines allowed per source per period, and the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub lines: u32,
    pub per: Duration,
}

/// The verdict for one would-be log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, and say that `suppressed` earlier lines were left out.
    Log { suppressed: u64 },
    /// Leave it out (it is counted).
    Suppress,
}

#[derive(Debug, Clone)]
struct Window {
    start: Duration,
    lines: u32,
    suppressed: u64,
    seen: Duration,
}

/// Per-source windows, at most `capacity` of them.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    capacity: usize,
    windows: HashMap<K, Window>,
    /// Suppressed lines of sources forgotten to make room.
    orphaned: u64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: Rate, capacity: usize) -> Self {
        RateLimiter { rate, capacity: capacity.max(1), windows: HashMap::new(), orphaned: 0 }
    }

    /// Whether a line about `source` at `now` is logged.
    pub fn check(&mut self, source: &K, now: Duration) -> Verdict {
        if !self.windows.contains_key(source) && self.windows.len() >= self.capacity {
            self.forget_stalest();
        }
        let rate = self.rate;
        let w = self.windows.entry(source.clone()).or_insert(Window { start: now, lines: 0, suppressed: 0, seen: now });
        w.seen = w.seen.max(now);
        if now.saturating_sub(w.start) >= rate.per {
            w.start = now;
            w.lines = 0;
        }
        if w.lines >= rate.lines {
            w.suppressed += 1;
            return Verdict::Suppress;
        }
        w.lines += 1;
        let suppressed = std::mem::take(&mut w.suppressed) + std::mem::take(&mut self.orphaned);
        Verdict::Log { suppressed }
    }

    fn forget_stalest(&mut self) {
        // Linear, but only when a new source arrives at a full table; the table is small.
        let stalest = self.windows.iter().min_by_key(|(_, w)| w.seen).map(|(k, _)| k.clone());
        if let Some(k) = stalest {
            if let Some(w) = self.windows.remove(&k) {
                self.orphaned += w.suppressed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { lines: 3, per: Duration::from_secs(10) };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_few_lines_per_period_then_silence_then_the_count() {
        let mut r = RateLimiter::new(RATE, 16);
        for _ in 0..3 {
            assert_eq!(r.check(&1, secs(0)), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(r.check(&1, secs(5)), Verdict::Suppress);
        }
        assert_eq!(r.check(&1, secs(10)), Verdict::Log { suppressed: 1000 });
        assert_eq!(r.check(&1, secs(11)), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn sources_are_limited_separately() {
        let mut r = RateLimiter::new(RATE, 16);
        for _ in 0..10 {
            r.check(&1, secs(0));
        }
        assert_eq!(r.check(&2, secs(0)), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_flood_of_sources_cannot_grow_the_table_and_loses_no_count() {
        let mut r = RateLimiter::new(RATE, 4);
        for _ in 0..5 {
            r.check(&0, secs(0));
        }
        let mut reported = 0;
        for s in 1..10_000u32 {
            if let Verdict::Log { suppressed } = r.check(&s, secs(1)) {
                reported += suppressed;
            }
        }
        assert!(r.windows.len() <= 4);
        // Source 0's two suppressed lines were reported once, by the next line logged after
        // it was forgotten.
        assert_eq!(reported, 2);
    }
}
