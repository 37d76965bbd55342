//! TFTP: any datagram through the codec (a decoded packet must encode to bytes that decode to
//! the same packet), a decoded request's options through negotiation, and the input cut into
//! datagrams driving a transfer machine, with timeouts in between, to its end.
#![no_main]

use appliance_core::tftp::packet::Packet;
use appliance_core::tftp::{options, Limits, Transfer};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::decode(data) {
        let mut bytes = Vec::new();
        packet.encode(&mut bytes);
        let again = Packet::decode(&bytes).expect("an encoded packet decodes");
        assert_eq!(format!("{again:?}"), format!("{packet:?}"));
        if let Packet::Rrq(req) | Packet::Wrq(req) = &packet {
            let n = options::negotiate(&req.options, 1 << 20, &Limits::default());
            assert!(n.timeout <= Limits::default().max_timeout);
        }
    }
    // The rest drives one transfer: the first two bytes pick the size, then datagrams are
    // separated by 0xff 0xff, and an empty one lets the timer run out.
    let (size, rest) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])) * 37, rest),
        _ => return,
    };
    let limits = Limits { max_retries: 3, ..Limits::default() };
    let mut t = Transfer::new(&[("blksize".into(), "512".into()), ("windowsize".into(), "4".into())], size, &limits);
    let mut now = Duration::ZERO;
    for datagram in rest.split(|&b| b == 0xff).take(4096) {
        while t.poll_transmit(now).is_some() {}
        if datagram.is_empty() {
            if let Some(deadline) = t.poll_timeout() {
                now = deadline;
                t.handle_timeout(now);
            }
        } else {
            t.handle(datagram);
        }
        if t.outcome().is_some() {
            break;
        }
    }
    let p = t.progress();
    assert!(p.bytes <= size && p.blocks <= t.total_blocks());
});
