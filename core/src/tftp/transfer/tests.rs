//! The transfer machine against scripted clients, on a virtual clock, without sockets.
//!
//! [`check`] plays a script of client events and compares the transcript of what the server
//! sent in answer, then how the transfer ended. Script steps: `aN` the client's ACK N (the
//! 16-bit wire number), `eN` its ERROR N, `x` a malformed datagram, `d` a stray DATA packet,
//! `t` the clock reaching the deadline (`t:no-timer` when none runs), `w` the clock
//! reaching just short of it, `s` a server
//! shutdown, `v` an eviction, `f` a local failure. Transcript: what went out at the start, then `step:sent` for
//! each step, where sent is `O(options)`, `D3` or `D5-8` (DATA blocks, counted from 1), `E0`
//! (an ERROR's code), several joined by `+`, or `-` for nothing; then `=> outcome` and the
//! counters.

use super::*;

/// Timer 1 s, three retries, everything up to RFC limits granted (windowsize up to 64).
fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(1),
        max_retries: 3,
        max_blksize: 65464,
        max_windowsize: 64,
        ..Limits::default()
    }
}

fn options(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("option as name=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A transfer and its virtual clock.
struct Sim {
    t: Transfer,
    now: Duration,
}

impl Sim {
    fn new(size: u64, opts: &str) -> Sim {
        Sim { t: Transfer::new(&options(opts), size, &limits()), now: Duration::ZERO }
    }

    /// Everything the machine wants sent now, as transcript text.
    fn drain(&mut self) -> String {
        let mut sent = Vec::new();
        while let Some(tx) = self.t.poll_transmit(self.now) {
            sent.push(match tx {
                Transmit::Oack(bytes) => match Packet::decode(bytes) {
                    Ok(Packet::Oack { options }) => {
                        let list: Vec<String> = options.iter().map(|(n, v)| format!("{n}={v}")).collect();
                        format!("O({})", list.join(","))
                    }
                    other => panic!("OACK transmit is not an OACK: {other:?}"),
                },
                Transmit::Data { first, last } if first == last => format!("D{first}"),
                Transmit::Data { first, last } => format!("D{first}-{last}"),
                Transmit::Error(bytes) => match Packet::decode(bytes) {
                    Ok(Packet::Error { code, .. }) => format!("E{code}"),
                    other => panic!("ERROR transmit is not an ERROR: {other:?}"),
                },
            });
        }
        if sent.is_empty() {
            "-".to_string()
        } else {
            sent.join("+")
        }
    }

    /// Plays one step; `false` for a clock step while no timer runs.
    fn step(&mut self, step: &str) -> bool {
        let (kind, arg) = step.split_at(1);
        let num = || arg.parse::<u16>().unwrap_or_else(|_| panic!("bad step {step:?}"));
        let mut datagram = Vec::new();
        match kind {
            "a" => packet::encode_ack(&mut datagram, num()),
            "e" => packet::encode_error(&mut datagram, num(), "client says no"),
            "x" => datagram.extend_from_slice(b"\0\x09junk"),
            "d" => Packet::Data { block: 1, data: b"?" }.encode(&mut datagram),
            "t" | "w" => {
                let Some(deadline) = self.t.poll_timeout() else { return false };
                self.now = if kind == "t" { deadline } else { deadline - Duration::from_millis(1) };
                self.t.handle_timeout(self.now);
            }
            "s" => self.t.shutdown(),
            "v" => self.t.evict(),
            "f" => self.t.fail("disk on fire"),
            _ => panic!("bad step {step:?}"),
        }
        if !datagram.is_empty() {
            self.t.handle(&datagram);
        }
        true
    }

    fn end(&self) -> String {
        let p = self.t.progress();
        let outcome = self.t.outcome().map_or("running".to_string(), |o| o.to_string());
        format!("=> {outcome}; {} blocks, {} bytes, {} retransmits", p.blocks, p.bytes, p.retransmits)
    }
}

/// Plays `script` against a transfer of `size` bytes requested with `opts` and returns the
/// transcript.
fn play(size: u64, opts: &str, script: &str) -> String {
    let mut sim = Sim::new(size, opts);
    let mut out = vec![sim.drain()];
    for step in script.split_whitespace() {
        if sim.step(step) {
            out.push(format!("{step}:{}", sim.drain()));
        } else {
            out.push(format!("{step}:no-timer"));
        }
    }
    out.push(sim.end());
    out.join(" ")
}

#[track_caller]
fn check(size: u64, opts: &str, script: &str, want: &str) {
    check_sized(size, opts, script, want);
}

#[track_caller]
fn check_sized(size: u64, opts: &str, script: &str, want: &str) {
    assert_eq!(play(size, opts, script), want, "size {size}, options {opts:?}, script {script:?}");
}

// ---- lockstep (windowsize 1) ----

#[test]
fn lockstep_without_options() {
    check(1025, "", "a1 a2 a3", "D1 a1:D2 a2:D3 a3:- => complete; 3 blocks, 1025 bytes, 0 retransmits");
}

#[test]
fn last_block_of_an_exact_multiple_is_empty() {
    check(1024, "", "a1 a2 a3", "D1 a1:D2 a2:D3 a3:- => complete; 3 blocks, 1024 bytes, 0 retransmits");
    check(1024, "", "a1 a2", "D1 a1:D2 a2:D3 => running; 2 blocks, 1024 bytes, 0 retransmits");
}

#[test]
fn zero_length_file_is_one_empty_block() {
    check(0, "", "a1", "D1 a1:- => complete; 1 blocks, 0 bytes, 0 retransmits");
    check(0, "tsize=0", "a0 a1", "O(tsize=0) a0:D1 a1:- => complete; 1 blocks, 0 bytes, 0 retransmits");
}

#[test]
fn lost_data_or_ack_is_resent_on_timeout() {
    // Whether DATA 2 or its ACK was lost, the server sees nothing until its timer fires.
    check(1025, "", "a1 w t a2 a3", "D1 a1:D2 w:- t:D2 a2:D3 a3:- => complete; 3 blocks, 1025 bytes, 1 retransmits");
}

#[test]
fn duplicate_acks_never_resend_in_lockstep() {
    // The sorcerer's apprentice: the first copy's late ACK 2 must not send DATA 3 twice.
    check(
        1025,
        "",
        "a1 t a2 a2 a1 a2 a3",
        "D1 a1:D2 t:D2 a2:D3 a2:- a1:- a2:- a3:- => complete; 3 blocks, 1025 bytes, 1 retransmits",
    );
}

#[test]
fn stale_and_future_acks_are_ignored() {
    check(2000, "", "a0 a2 a9 a1 a2", "D1 a0:- a2:- a9:- a1:D2 a2:D3 => running; 2 blocks, 1024 bytes, 0 retransmits");
}

#[test]
fn retry_limit_ends_the_transfer() {
    // Three retries: four copies of DATA 2, then nothing.
    check(
        1025,
        "",
        "a1 t t t t",
        "D1 a1:D2 t:D2 t:D2 t:D2 t:- => timed out (block 2 sent 4 times); 1 blocks, 512 bytes, 3 retransmits",
    );
}

#[test]
fn progress_resets_the_retry_count() {
    check(
        1025,
        "",
        "t t t a1 t t t a2 a3",
        "D1 t:D1 t:D1 t:D1 a1:D2 t:D2 t:D2 t:D2 a2:D3 a3:- => complete; 3 blocks, 1025 bytes, 6 retransmits",
    );
}

#[test]
fn no_timer_and_no_packet_after_the_end() {
    let mut sim = Sim::new(100, "");
    sim.drain();
    sim.step("a1");
    assert_eq!(sim.t.outcome(), Some(&Outcome::Complete));
    assert_eq!(sim.t.poll_timeout(), None);
    sim.t.handle_timeout(Duration::from_secs(99));
    assert_eq!(sim.t.handle(&[0, 4, 0, 1]), Received::AfterEnd);
    assert_eq!(sim.drain(), "-");
}

#[test]
fn junk_and_unexpected_packets_are_ignored() {
    check(600, "", "x d a1 a2", "D1 x:- d:- a1:D2 a2:- => complete; 2 blocks, 600 bytes, 0 retransmits");
    let mut t = Transfer::new(&[], 10, &limits());
    assert!(matches!(t.handle(b"\0"), Received::Malformed(DecodeError::TooShort)));
    assert_eq!(t.handle(b"\0\x03\0\x01x"), Received::Unexpected("DATA"));
}

#[test]
fn what_handle_reports() {
    let mut t = Transfer::new(&options("windowsize=2"), 5000, &limits());
    t.poll_transmit(Duration::ZERO); // OACK
    assert_eq!(t.handle(&[0, 4, 0, 0]), Received::Progress);
    t.poll_transmit(Duration::ZERO); // DATA 1-2
    assert_eq!(t.handle(&[0, 4, 0, 0]), Received::Duplicate { resend: true });
    assert_eq!(t.handle(&[0, 4, 0, 0]), Received::Duplicate { resend: false });
    assert_eq!(t.handle(&[0, 4, 0, 3]), Received::Stale);
    assert_eq!(t.handle(&[0, 5, 0, 0, b'x', 0]), Received::ClientError);
}

// ---- client ERROR ----

#[test]
fn error_8_after_an_oack_with_tsize_is_a_size_probe() {
    // EDK2: reads the size from the OACK, then refuses the options; nothing follows, ever.
    check(
        3000,
        "tsize=0 blksize=1468",
        "e8 t",
        "O(tsize=3000,blksize=1468) e8:- t:no-timer \
         => size probe (client error 8 after the OACK: client says no); 0 blocks, 0 bytes, 0 retransmits",
    );
}

#[test]
fn other_client_errors_end_the_transfer_at_once() {
    // ERROR 8 without tsize in the OACK refuses something else.
    check(
        "blksize=1468",
        "e8",
        "O(blksize=1468) e8:- => client error 8 (client says no); 0 blocks, 0 bytes, 0 retransmits",
    );
    check("", "a1 e0 a2", "D1 a1:D2 e0:- a2:- => client error 0 (client says no); 1 blocks, 512 bytes, 0 retransmits");
    // ERROR 8 in the middle of the data is just an error.
    check(
        "tsize=0",
        "a0 e8",
        "O(tsize=3000) a0:D1 e8:- => client error 8 (client says no); 0 blocks, 0 bytes, 0 retransmits",
    );

    #[track_caller]
    fn check(opts: &str, script: &str, want: &str) {
        check_sized(3000, opts, script, want);
    }
}

// ---- the server ends it ----

#[test]
fn shutdown_and_failure_send_error_0_once() {
    check(
        3000,
        "",
        "a1 s a2 t",
        "D1 a1:D2 s:E0 a2:- t:no-timer => server shutdown; 1 blocks, 512 bytes, 0 retransmits",
    );
    check(3000, "", "f s", "D1 f:E0 s:- => failed: disk on fire; 0 blocks, 0 bytes, 0 retransmits");
    check(3000, "", "s f", "D1 s:E0 f:- => server shutdown; 0 blocks, 0 bytes, 0 retransmits");
}

#[test]
fn an_eviction_sends_error_0_once_and_says_so() {
    check(
        3000,
        "timeout=5 tsize=0",
        "t v a0 s",
        "O(timeout=5,tsize=3000) t:O(timeout=5,tsize=3000) v:E0 a0:- s:- => evicted (stalled while others waited); 0 blocks, 0 bytes, 1 retransmits",
    );
}

#[test]
fn a_refusal_is_one_error_packet() {
    let mut t = Transfer::refused(TftpError::not_found());
    assert_eq!(t.poll_transmit(Duration::ZERO), Some(Transmit::Error(b"\0\x05\0\x01File not found\0")));
    assert_eq!(t.poll_transmit(Duration::ZERO), None);
    assert_eq!(t.outcome(), Some(&Outcome::Refused(TftpError::not_found())));
    assert_eq!(t.poll_timeout(), None);
}

// ---- option negotiation ----

#[test]
fn oack_waits_for_ack_0() {
    check(
        1500,
        "blksize=1024",
        "a1 a0 a1 a2",
        "O(blksize=1024) a1:- a0:D1 a1:D2 a2:- => complete; 2 blocks, 1500 bytes, 0 retransmits",
    );
}

#[test]
fn lost_oack_is_resent_then_gives_up() {
    check(
        1500,
        "blksize=1024",
        "t a0",
        "O(blksize=1024) t:O(blksize=1024) a0:D1 => running; 0 blocks, 0 bytes, 1 retransmits",
    );
    check(
        1500,
        "blksize=1024",
        "t t t t",
        "O(blksize=1024) t:O(blksize=1024) t:O(blksize=1024) t:O(blksize=1024) t:- \
         => timed out (OACK sent 4 times); 0 blocks, 0 bytes, 3 retransmits",
    );
}

#[test]
fn negotiation_outcomes() {
    // Only what was asked is acknowledged, in request order, within the limits; tsize carries
    // the real size whatever the client sent; nonsense is left out, and no OACK without options.
    let cases = [
        ("", "D1"),
        ("tsize=0", "O(tsize=70000)"),
        ("blksize=1468", "O(blksize=1468)"),
        ("blksize=99999 windowsize=500", "O(blksize=65464,windowsize=64)"),
        ("windowsize=4 tsize=123 timeout=3", "O(windowsize=4,tsize=70000,timeout=3)"),
        ("blksize=7 timeout=0 windowsize=0 rollover=1", "D1"),
        ("BlkSize=8 blksize=600", "O(blksize=8)"),
    ];
    for (opts, want) in cases {
        assert_eq!(Sim::new(70_000, opts).drain(), want, "{opts}");
    }
}

#[test]
fn negotiated_sizes_and_timer_are_used() {
    let mut t = Transfer::new(&options("blksize=1468 windowsize=8 timeout=3"), 10_000, &limits());
    assert_eq!((t.blksize(), t.windowsize(), t.total_blocks()), (1468, 8, 7));
    t.poll_transmit(Duration::from_secs(10));
    assert_eq!(t.poll_timeout(), Some(Duration::from_secs(13)));
    let mut t = Transfer::new(&[], 10_000, &limits());
    assert_eq!((t.blksize(), t.windowsize(), t.total_blocks()), (512, 1, 20));
    t.poll_transmit(Duration::from_secs(10));
    assert_eq!(t.poll_timeout(), Some(Duration::from_secs(11)));
}

// ---- windowsize (RFC 7440) ----

#[test]
fn full_windows() {
    check(
        512 * 10,
        "windowsize=4",
        "a0 a4 a8 a11",
        "O(windowsize=4) a0:D1-4 a4:D5-8 a8:D9-11 a11:- => complete; 11 blocks, 5120 bytes, 0 retransmits",
    );
}

#[test]
fn an_ack_inside_the_window_restarts_it_after_that_block() {
    // The client got 1-2 of 1-4: the window moves to 3-6 (3 and 4 again).
    check(
        512 * 10,
        "windowsize=4",
        "a0 a2 a6",
        "O(windowsize=4) a0:D1-4 a2:D3-6 a6:D7-10 => running; 6 blocks, 3072 bytes, 2 retransmits",
    );
}

#[test]
fn a_duplicate_ack_resends_the_window_once_per_step() {
    check(
        512 * 10,
        "windowsize=4",
        "a0 a4 a4 a4 a3 a8",
        "O(windowsize=4) a0:D1-4 a4:D5-8 a4:D5-8 a4:- a3:- a8:D9-11 => running; 8 blocks, 4096 bytes, 4 retransmits",
    );
    // After progress the next duplicate may resend again.
    check(
        512 * 10,
        "windowsize=4",
        "a0 a0 a4 a4",
        "O(windowsize=4) a0:D1-4 a0:D1-4 a4:D5-8 a4:D5-8 => running; 4 blocks, 2048 bytes, 8 retransmits",
    );
}

#[test]
fn a_timeout_resends_the_whole_window() {
    check(
        512 * 10,
        "windowsize=4",
        "a0 a4 t a8",
        "O(windowsize=4) a0:D1-4 a4:D5-8 t:D5-8 a8:D9-11 => running; 8 blocks, 4096 bytes, 4 retransmits",
    );
    // An ACK for a block not sent yet is bogus.
    check(
        512 * 10,
        "windowsize=4",
        "a0 a5",
        "O(windowsize=4) a0:D1-4 a5:- => running; 0 blocks, 0 bytes, 0 retransmits",
    );
}

#[test]
fn the_last_window_is_short() {
    // ACK 3 is inside the window but past the last block: bogus.
    check(
        1000,
        "windowsize=16",
        "a0 a3 a2",
        "O(windowsize=16) a0:D1-2 a3:- a2:- => complete; 2 blocks, 1000 bytes, 0 retransmits",
    );
}

// ---- block-number rollover ----

/// ACKs every block as it arrives; returns the wire numbers seen around the rollover.
fn ack_through(size: u64, opts: &str) -> (Transfer, Vec<(u64, u16)>) {
    let mut t = Transfer::new(&options(opts), size, &limits());
    let mut seen = Vec::new();
    let mut guard = 0;
    while let Some(tx) = t.poll_transmit(Duration::ZERO) {
        let ack = match tx {
            Transmit::Oack(_) => 0,
            Transmit::Data { first, last } => {
                for b in first..=last {
                    if (65533..=65538).contains(&b) {
                        seen.push((b, wire_block(b)));
                    }
                }
                wire_block(last)
            }
            Transmit::Error(_) => panic!("unexpected ERROR"),
        };
        assert_eq!(t.handle(&[0, 4, (ack >> 8) as u8, ack as u8]), Received::Progress, "ACK {ack}");
        guard += 1;
        assert!(guard < 200_000, "no end");
    }
    (t, seen)
}

#[test]
fn block_numbers_roll_over_from_65535_to_0() {
    let wire = vec![(65533, 65533), (65534, 65534), (65535, 65535), (65536, 0), (65537, 1), (65538, 2)];
    // blksize 8 keeps it small: 65,540 blocks, the last one short.
    for opts in ["blksize=8", "blksize=8 windowsize=16"] {
        let (t, seen) = ack_through(8 * 65_539 + 3, opts);
        assert_eq!(seen, wire, "{opts}");
        assert_eq!(t.outcome(), Some(&Outcome::Complete), "{opts}");
        assert_eq!(t.progress(), Progress { blocks: 65_540, bytes: 8 * 65_539 + 3, retransmits: 0 }, "{opts}");
    }
}

#[test]
fn acks_are_read_relative_to_the_window_across_the_rollover() {
    // Acknowledge up to 65530 of a windowed transfer by hand, then one window across 65535.
    let mut t = Transfer::new(&options("blksize=8 windowsize=16"), 8 * 70_000, &limits());
    t.poll_transmit(Duration::ZERO);
    t.handle(&[0, 4, 0, 0]);
    while t.progress().blocks < 65_530 {
        let Some(Transmit::Data { last, .. }) = t.poll_transmit(Duration::ZERO) else { panic!("no DATA") };
        let ack = wire_block(last.min(65_530));
        t.handle(&[0, 4, (ack >> 8) as u8, ack as u8]);
    }
    assert_eq!(t.poll_transmit(Duration::ZERO), Some(Transmit::Data { first: 65_531, last: 65_546 }));
    // Wire 3 is block 65,539 (in the window), wire 65,530 the last ACK again, wire 11 beyond it.
    assert_eq!(t.handle(&[0, 4, 0, 11]), Received::Stale);
    assert_eq!(t.handle(&[0, 4, 0xff, 0xfa]), Received::Duplicate { resend: true });
    t.poll_transmit(Duration::ZERO);
    assert_eq!(t.handle(&[0, 4, 0, 3]), Received::Progress);
    assert_eq!(t.progress().blocks, 65_539);
}
