//! `appliance::memory::trim` hands freed heap pages back. A test binary of its own: the
//! resident set is the whole process's, so no other test may allocate while it measures.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use appliance::memory::trim;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Many small blocks freed below one that stays: malloc keeps them resident until a trim.
#[test]
fn freed_blocks_below_a_live_one_are_returned() {
    // Small enough to come from the heap (below the mmap threshold), touched so resident.
    let blocks: Vec<Vec<u8>> = (0..8_000).map(|i| vec![i as u8 | 1; 8 * 1024]).collect();
    let pin = vec![1u8; 1024];
    let before = rss_kb();
    drop(blocks);
    let after_free = rss_kb();
    assert!(trim(), "nothing was free to trim");
    let after_trim = rss_kb();
    std::hint::black_box(&pin);
    assert!(
        after_trim + 32 * 1024 < after_free,
        "resident {before} KiB loaded, {after_free} KiB freed, {after_trim} KiB trimmed"
    );
}
