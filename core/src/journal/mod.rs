//! The boot journal: one record per DHCP exchange, TFTP transfer, HTTP request, answer-file
//! fetch, installer event and re-arm, keyed by the machine's MAC and carrying the decision and
//! the rule behind it, so that an operator sees each machine's boot from its first DHCP packet
//! to its installer's `installed`, and the exact reason of every failure.
//!
//! - `record`: the record types (also the journal file's JSON lines) and what each says: its
//!   step of the boot, its result in words, whether it is an error.
//! - `machines`: the bounded model in memory (a ring per MAC, least recently heard machines
//!   evicted first) and a machine's summary row.
//!
//! Pure: the daemon (`appliance::observe::journal`) timestamps records, queues them without waiting and
//! has one thread apply them here and append them to `<state>/journal/journal.jsonl`.

pub mod machines;
pub mod record;

pub use machines::{summarize, Limits, Machines, Summary};
pub use record::{
    message_words, Answer, Decided, Dhcp, Event, Http, Installer, Rearm, Record, Severity, Step, Tftp, TftpEnd,
};

/// The records in journal file text (JSON lines). Lines that do not parse (a line cut short by
/// a crash, a record type from a newer build) are counted and skipped.
pub fn parse_lines(text: &str) -> (Vec<Record>, usize) {
    let mut bad = 0;
    let records = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str::<Record>(l) {
            Ok(r) => Some(r),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (records, bad)
}

/// A time for people: `2026-12-03 13:05:01.234 UTC` from Unix milliseconds.
pub fn clock(ms: u64) -> String {
    let whole = crate::calendar::utc(ms / 1000);
    match whole.strip_suffix(" UTC") {
        Some(s) => format!("{s}.{:03} UTC", ms % 1000),
        None => whole,
    }
}

#[cfg(test)]
mod tests;
