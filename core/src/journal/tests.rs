use super::*;
use crate::events::EventKind;
use crate::mac::MacAddr;
use crate::tftp::{Outcome, TftpError};

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

fn decided(profile: Option<(&str, &str)>, ignored: Option<&str>) -> Decided {
    Decided {
        stage: "DHCP".into(),
        outcome: "x".into(),
        hostname: "node1".into(),
        profile: profile.map(|p| p.0.into()),
        version: profile.map(|p| p.1.into()),
        arch: Some("x86_64".into()),
        arch_rule: "client (DHCP option 93 = 0)".into(),
        target_rule: "MAC database entry 52:54:00:00:00:01".into(),
        ignored: ignored.map(String::from),
    }
}

fn dhcp(at: u64, m: MacAddr, ignored: Option<&str>) -> Record {
    Record {
        at,
        mac: Some(m),
        ip: None,
        event: Event::Dhcp(Dhcp {
            request: "DISCOVER".into(),
            reply: ignored.is_none().then(|| "OFFER".into()),
            mode: "server".into(),
            port: 67,
            firmware: "bios-pxe".into(),
            client_arch: Some(0),
            vendor_class: Some("PXEClient:Arch:00000:UNDI:002001".into()),
            address: None,
            boot: None,
            decision: Some(decided(None, ignored)),
            note: None,
        }),
    }
}

fn tftp(at: u64, m: Option<MacAddr>, path: &str, outcome: Outcome) -> Record {
    Record {
        at,
        mac: m,
        ip: Some("10.0.0.5".parse().unwrap()),
        event: Event::Tftp(Tftp {
            path: path.into(),
            size: Some(70_000),
            bytes: 1024,
            blksize: 512,
            windowsize: 1,
            retransmits: 5,
            duration_ms: 12,
            end: TftpEnd::new(&outcome),
            decision: None,
        }),
    }
}

fn installer(at: u64, m: MacAddr, kind: EventKind) -> Record {
    Record {
        at,
        mac: Some(m),
        ip: None,
        event: Event::Installer(Installer {
            event: Some(kind),
            message: Some("disk written".into()),
            status: 200,
            note: None,
        }),
    }
}

#[test]
fn each_machine_keeps_its_last_records_and_the_stalest_machine_goes_first() {
    let mut j = Machines::new(Limits { machines: 2, records: 3 });
    for i in 0..5 {
        j.push(dhcp(i, mac(1), None));
    }
    let t = j.timeline(mac(1)).unwrap();
    assert_eq!(t.iter().map(|r| r.at).collect::<Vec<_>>(), [2, 3, 4]);
    j.push(dhcp(10, mac(2), None));
    // Machine 1 is heard from again, so machine 2 is now the stalest.
    j.push(dhcp(11, mac(1), None));
    j.push(dhcp(12, mac(3), None));
    assert_eq!(j.len(), 2);
    assert!(j.timeline(mac(2)).is_none());
    assert_eq!(j.machines().map(|(m, _)| m).collect::<Vec<_>>(), [mac(3), mac(1)]);
    // Records without a machine have their own ring, with the same bound.
    for i in 0..4 {
        j.push(tftp(20 + i, None, "pxelinux.cfg/default", Outcome::Complete));
    }
    assert_eq!(j.unattributed().len(), 3);
    assert_eq!(j.len(), 2);
}

#[test]
fn a_summary_says_the_last_stage_the_profile_the_install_state_and_the_last_error() {
    let m = mac(1);
    let mut j = Machines::new(Limits::default());
    j.push(dhcp(1_000, m, None));
    j.push(tftp(2_000, Some(m), "undionly.kpxe", Outcome::TimedOut { block: 7, sends: 6 }));
    j.push(tftp(3_000, Some(m), "pxelinux.cfg/01-52-54-00-00-00-01", Outcome::Refused(TftpError::not_found())));
    j.push(tftp(4_000, Some(m), "artifacts/live/0123456789ab/vmlinuz", Outcome::Complete));
    j.push(installer(5_000, m, EventKind::Progress));
    let s = summarize(m, j.timeline(m).unwrap(), None);
    assert_eq!(s.last_stage, "installer: progress");
    assert_eq!(s.step, Step::Installer);
    assert_eq!((s.profile.as_deref(), s.version.as_deref()), (Some("live"), Some("0123456789ab")));
    assert_eq!(s.install, "installing (progress)");
    assert_eq!(s.firmware.as_deref(), Some("bios-pxe"));
    assert_eq!(s.hostname.as_deref(), Some("node1"));
    assert_eq!(s.last_seen, 5_000);
    // The "not found" of a config path U-Boot probes is not an error; the stalled transfer is.
    assert_eq!(
        s.last_error.as_deref(),
        Some("TFTP undionly.kpxe: client stopped acknowledging at block 7 (sent 6 times), 1024 bytes in 12 ms, blksize 512, windowsize 1, 5 retransmitted")
    );
    assert_eq!(s.last_error_at, Some(2_000));
    let installed = summarize(m, j.timeline(m).unwrap(), Some(1_790_000_000));
    assert!(installed.install.starts_with("installed 2026-"), "{}", installed.install);
}

#[test]
fn a_refusal_by_decide_is_the_error_and_says_why() {
    let m = mac(2);
    let mut j = Machines::new(Limits::default());
    j.push(dhcp(1, m, Some("UEFI client of unknown architecture")));
    let s = summarize(m, j.timeline(m).unwrap(), None);
    assert_eq!(
        s.last_error.as_deref(),
        Some("DHCP DISCOVER -> no reply: not served: UEFI client of unknown architecture")
    );
    // A missing artifact is an error too, unlike a probed config name.
    j.push(tftp(2, Some(m), "artifacts/live/0123456789ab/initrd.img", Outcome::Refused(TftpError::not_found())));
    let s = summarize(m, j.timeline(m).unwrap(), None);
    assert_eq!(s.last_error.as_deref(), Some("TFTP artifacts/live/0123456789ab/initrd.img: not found"));
}

#[test]
fn tftp_outcomes_read_as_the_operator_needs_them() {
    let cases = [
        (Outcome::Complete, "complete", "complete"),
        (Outcome::SizeProbe { message: "x".into() }, "size_probe", "EDK2 size probe"),
        (
            Outcome::TimedOut { block: 0, sends: 6 },
            "timed_out",
            "client never acknowledged the option reply (sent 6 times)",
        ),
        (
            Outcome::TimedOut { block: 812, sends: 6 },
            "timed_out",
            "client stopped acknowledging at block 812 (sent 6 times)",
        ),
        (Outcome::Refused(TftpError::not_found()), "not_found", "not found"),
        (Outcome::ClientError { code: 0, message: "bye".into() }, "client_error", "client aborted with error 0 (bye)"),
        (Outcome::Shutdown, "shutdown", "cut off by the server's shutdown"),
    ];
    for (o, label, words) in cases {
        let end = TftpEnd::new(&o);
        assert_eq!(end.label(), label);
        assert!(end.words().starts_with(words), "{} / {words}", end.words());
    }
}

#[test]
fn records_survive_the_journal_file_and_bad_lines_are_counted() {
    let rs = [
        dhcp(1, mac(1), None),
        tftp(2, None, "x", Outcome::TimedOut { block: 3, sends: 2 }),
        installer(3, mac(1), EventKind::Installed),
    ];
    let mut text = String::new();
    for r in &rs {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
    }
    assert!(text.contains(r#""kind":"tftp""#) && text.contains(r#""end":"timed_out""#), "{text}");
    text.push_str("{\"at\": 4, \"kind\": \"dhc\n");
    let (back, bad) = parse_lines(&text);
    assert_eq!(back, rs);
    assert_eq!(bad, 1);
}

#[test]
fn clock_shows_milliseconds() {
    assert_eq!(clock(1_000_000_000_123), "2001-09-09 01:46:40.123 UTC");
}

#[test]
fn message_types_read_as_before_and_the_common_ones_are_not_allocated() {
    use dhcproto::v4::MessageType as M;
    use std::borrow::Cow;
    // The words the journal wrote before they were borrowed (`{:?}` upper-cased).
    for kind in [M::Discover, M::Offer, M::Request, M::Decline, M::Ack, M::Nak, M::Release, M::Inform] {
        let words = message_words(kind);
        assert!(matches!(words, Cow::Borrowed(_)), "{kind:?}");
        assert_eq!(words, format!("{kind:?}").to_ascii_uppercase());
    }
    assert_eq!(message_words(M::LeaseQuery), "LEASEQUERY");
    assert_eq!(message_words(M::Unknown(99)), "UNKNOWN(99)");
}
