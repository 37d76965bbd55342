//! Protocol corner cases driven packet by packet from raw loopback sockets.

use std::time::Duration;

use super::*;

fn oack_options(bytes: &[u8]) -> Vec<(String, String)> {
    match Packet::decode(bytes).unwrap() {
        Packet::Oack { options } => options,
        other => panic!("expected OACK, got {other:?}"),
    }
}

fn data_block(bytes: &[u8]) -> (u16, Vec<u8>) {
    match Packet::decode(bytes).unwrap() {
        Packet::Data { block, data } => (block, data.to_vec()),
        other => panic!("expected DATA, got {other:?}"),
    }
}

fn error_code(bytes: &[u8]) -> u16 {
    match Packet::decode(bytes).unwrap() {
        Packet::Error { code, .. } => code,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

on_both_drivers!(
    edk2_tsize_probe_then_error_8_stops_transfer,
    client_error_mid_transfer_stops_at_once,
    unknown_tid_is_kept_out_and_transfer_continues,
    duplicate_ack_does_not_trigger_resend,
    silent_client_times_out_after_max_retries,
    shutdown_ends_running_transfers,
    client_timeout_option_is_echoed_and_honoured,
    netascii_is_served_verbatim,
    requests_beyond_max_transfers_are_dropped,
);

/// Drives a lockstep (no options) download by hand, ACKing every block.
async fn finish_lockstep(sock: &UdpSocket, tid: SocketAddr, mut got: Vec<u8>, mut block: u16) -> Vec<u8> {
    loop {
        sock.send_to(&ack(block), tid).await.unwrap();
        let (pkt, from) = recv_packet(sock).await;
        assert_eq!(from, tid);
        let (b, data) = data_block(&pkt);
        assert_eq!(b, block.wrapping_add(1));
        block = b;
        got.extend_from_slice(&data);
        if data.len() < 512 {
            sock.send_to(&ack(block), tid).await.unwrap();
            return got;
        }
    }
}

async fn edk2_tsize_probe_then_error_8_stops_transfer(lockstep_threads: usize) {
    let data = pattern(3000, 9);
    let config = TftpConfig { timeout: Duration::from_millis(200), max_retries: 5, ..TftpConfig::default() };
    let mut h = Files::new().bytes("shim.efi", data.clone()).serve(TftpConfig { lockstep_threads, ..config }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("shim.efi", &[("tsize", "0"), ("blksize", "1468")]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    let options = oack_options(&pkt);
    assert!(options.contains(&("tsize".into(), "3000".into())), "{options:?}");
    assert!(options.contains(&("blksize".into(), "1468".into())));
    let mut err = Vec::new();
    packet::encode_error(&mut err, 8, "option negotiation refused");
    sock.send_to(&err, tid).await.unwrap();
    // 1.3 s covers the server's whole retry budget (6 x 200 ms): nothing
    // may arrive after the ERROR.
    if let Some((pkt, from)) = recv(&sock, Duration::from_millis(1300)).await {
        panic!("server sent {pkt:?} from {from} after client ERROR 8");
    }
    let r = h.report().await;
    assert_engine(&r, lockstep_threads);
    assert_eq!(r.outcome, Outcome::SizeProbe { message: "option negotiation refused".into() });
    assert_eq!(r.retransmits, 0);
    // The firmware then re-requests without tsize: no tsize in the OACK.
    let d = client::get(h.addr, "shim.efi", &opts(Some(1468), None, false)).await.unwrap();
    assert_eq!(d.stats.oack, vec![("blksize".into(), "1468".into())]);
    assert_eq!(d.data, data);
    assert_eq!(h.report().await.outcome, Outcome::Complete);
    h.shutdown().await;
}

async fn client_error_mid_transfer_stops_at_once(lockstep_threads: usize) {
    let config = TftpConfig { timeout: Duration::from_millis(200), ..test_config() };
    let mut h = Files::new().bytes("f", pattern(10_000, 1)).serve(TftpConfig { lockstep_threads, ..config }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    assert_eq!(data_block(&pkt).0, 1);
    let mut err = Vec::new();
    packet::encode_error(&mut err, 0, "user abort");
    sock.send_to(&err, tid).await.unwrap();
    assert!(recv(&sock, Duration::from_millis(1300)).await.is_none());
    let r = h.report().await;
    assert_engine(&r, lockstep_threads);
    assert!(matches!(r.outcome, Outcome::ClientError { code: 0, .. }), "{r:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn wrq_and_bad_mode_refused() {
    let mut h = Files::new().serve(test_config()).await;
    let sock = raw_socket().await;
    let mut wrq = Vec::new();
    Packet::Wrq(Request { filename: "upload".into(), mode: Mode::Octet, options: vec![] }).encode(&mut wrq);
    sock.send_to(&wrq, h.addr).await.unwrap();
    let (pkt, from) = recv_packet(&sock).await;
    assert_ne!(from, h.addr, "ERROR must come from a transfer socket");
    assert_eq!(error_code(&pkt), TftpError::ACCESS_VIOLATION);
    let r = h.report().await;
    assert!(matches!(r.outcome, Outcome::Refused(ref e) if e.code == 2), "{r:?}");

    sock.send_to(b"\0\x01file\0mail\0", h.addr).await.unwrap();
    let (pkt, _) = recv_packet(&sock).await;
    assert_eq!(error_code(&pkt), TftpError::ILLEGAL_OPERATION);
    h.report().await;
    h.shutdown().await;
}

async fn unknown_tid_is_kept_out_and_transfer_continues(lockstep_threads: usize) {
    let data = pattern(512 * 3 + 100, 5);
    // A long timeout, so the only way block 2 can come early is the
    // stranger's ACK wrongly advancing the transfer.
    let config = TftpConfig { timeout: Duration::from_secs(2), ..test_config() };
    let mut h = Files::new().bytes("f", data.clone()).serve(TftpConfig { lockstep_threads, ..config }).await;
    let sock = raw_socket().await;
    let stranger = raw_socket().await;
    sock.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    let (b, first) = data_block(&pkt);
    assert_eq!(b, 1);
    // The transfer socket is connected to the client: the kernel answers the
    // stranger with ICMP port unreachable (RFC 1350's "unknown TID" error,
    // at the IP layer), which a connected UDP socket reports as refused.
    stranger.connect(tid).await.unwrap();
    stranger.send(&ack(1)).await.unwrap();
    let mut buf = [0u8; 64];
    let refused = tokio::time::timeout(Duration::from_secs(2), stranger.recv(&mut buf)).await;
    assert!(
        matches!(refused, Ok(Err(ref e)) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "stranger got {refused:?}"
    );
    // The stranger's ACK must not have advanced the real transfer.
    assert!(recv(&sock, Duration::from_millis(200)).await.is_none());
    let got = finish_lockstep(&sock, tid, first, 1).await;
    assert_eq!(got, data);
    let r = h.report().await;
    assert_engine(&r, lockstep_threads);
    assert_eq!(r.outcome, Outcome::Complete);
    h.shutdown().await;
}

async fn duplicate_ack_does_not_trigger_resend(lockstep_threads: usize) {
    let data = pattern(512 * 2 + 1, 6);
    let config = TftpConfig { timeout: Duration::from_secs(2), ..test_config() };
    let mut h = Files::new().bytes("f", data.clone()).serve(TftpConfig { lockstep_threads, ..config }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    let (_, first) = data_block(&pkt);
    for _ in 0..3 {
        sock.send_to(&ack(1), tid).await.unwrap();
    }
    let (pkt, _) = recv_packet(&sock).await;
    let (b, second) = data_block(&pkt);
    assert_eq!(b, 2);
    // Two more ACK 1 are duplicates: no second copy of block 2.
    assert!(recv(&sock, Duration::from_millis(300)).await.is_none());
    let mut got = first;
    got.extend_from_slice(&second);
    let got = finish_lockstep(&sock, tid, got, 2).await;
    assert_eq!(got, data);
    let r = h.report().await;
    assert_engine(&r, lockstep_threads);
    assert_eq!((r.outcome, r.retransmits), (Outcome::Complete, 0));
    h.shutdown().await;
}

async fn silent_client_times_out_after_max_retries(lockstep_threads: usize) {
    let mut h = Files::new().bytes("f", pattern(2000, 2)).serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("f", &[("blksize", "1024")]), h.addr).await.unwrap();
    let mut oacks = 0;
    while let Some((pkt, _)) = recv(&sock, Duration::from_secs(1)).await {
        oack_options(&pkt);
        oacks += 1;
    }
    assert_eq!(oacks, 6, "one OACK plus five retransmissions");
    let r = h.report().await;
    assert_engine(&r, lockstep_threads);
    assert_eq!((r.outcome, r.retransmits), (Outcome::TimedOut { block: 0, sends: 6 }, 5));
}

#[tokio::test]
async fn malformed_requests_are_dropped_and_loop_survives() {
    let data = pattern(777, 8);
    let mut h = Files::new().bytes("f", data.clone()).serve(test_config()).await;
    let sock = raw_socket().await;
    let junk: &[&[u8]] = &[
        b"",
        b"\0",
        b"\0\x09abc",
        b"\0\x01no-terminator",
        b"\0\x01f\0",
        b"\0\x04\0\x01",
        b"\0\x03\0\x01data",
        b"\0\x05\0\x01oops\0",
    ];
    for j in junk {
        sock.send_to(j, h.addr).await.unwrap();
    }
    assert!(recv(&sock, Duration::from_millis(200)).await.is_none());
    let d = client::get(h.addr, "f", &opts(Some(600), Some(2), true)).await.unwrap();
    assert_eq!(d.data, data);
    assert_eq!(h.report().await.outcome, Outcome::Complete);
    h.shutdown().await;
}

async fn shutdown_ends_running_transfers(lockstep_threads: usize) {
    let config = TftpConfig { timeout: Duration::from_secs(5), ..test_config() };
    let mut h = Files::new().bytes("f", pattern(5000, 1)).serve(TftpConfig { lockstep_threads, ..config }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    recv_packet(&sock).await;
    let reports = {
        let _ = h.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(2), &mut h.task).await.expect("serve did not stop").unwrap().unwrap();
        h.report().await
    };
    assert_eq!(reports.outcome, Outcome::Shutdown);
    let (pkt, _) = recv_packet(&sock).await;
    assert_eq!(error_code(&pkt), 0);
}

async fn client_timeout_option_is_echoed_and_honoured(lockstep_threads: usize) {
    let mut h = Files::new().bytes("f", pattern(100, 3)).serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    let sock = raw_socket().await;
    sock.send_to(&rrq("f", &[("timeout", "1")]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    assert_eq!(oack_options(&pkt), vec![("timeout".into(), "1".into())]);
    let sent = std::time::Instant::now();
    // The server's own timeout is 100 ms; the client asked for 1 s.
    let (pkt, _) = recv_packet(&sock).await;
    let waited = sent.elapsed();
    oack_options(&pkt);
    assert!(waited >= Duration::from_millis(900), "OACK resent after {waited:?}");
    let mut err = Vec::new();
    packet::encode_error(&mut err, 0, "done");
    sock.send_to(&err, tid).await.unwrap();
    assert!(matches!(h.report().await.outcome, Outcome::ClientError { code: 0, .. }));
    h.shutdown().await;
}

async fn netascii_is_served_verbatim(lockstep_threads: usize) {
    let data = b"line one\nline two\r\n\0bin".to_vec();
    let mut h = Files::new().bytes("cfg", data.clone()).serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    let sock = raw_socket().await;
    sock.send_to(b"\0\x01cfg\0NetAscii\0", h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&sock).await;
    assert_eq!(data_block(&pkt), (1, data));
    sock.send_to(&ack(1), tid).await.unwrap();
    assert_eq!(h.report().await.outcome, Outcome::Complete);
    h.shutdown().await;
}

async fn requests_beyond_max_transfers_are_dropped(lockstep_threads: usize) {
    let config = TftpConfig { timeout: Duration::from_millis(100), max_retries: 1, max_transfers: 1, ..test_config() };
    let mut h = Files::new().bytes("f", pattern(100, 1)).serve(TftpConfig { lockstep_threads, ..config }).await;
    let busy = raw_socket().await;
    busy.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    recv_packet(&busy).await; // DATA 1, never acknowledged
    let other = raw_socket().await;
    other.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    assert!(recv(&other, Duration::from_millis(120)).await.is_none(), "second transfer started");
    assert_eq!(h.report().await.outcome, Outcome::TimedOut { block: 1, sends: 2 });
    let d = client::get(h.addr, "f", &opts(None, None, false)).await.unwrap();
    assert_eq!(d.data, pattern(100, 1));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockstep_threads_are_limited_and_released() {
    let data = pattern(512 * 4 + 9, 12);
    let config = TftpConfig { timeout: Duration::from_secs(2), lockstep_threads: 1, ..test_config() };
    let mut h = Files::new().bytes("f", data.clone()).serve(config).await;
    // The first lockstep transfer takes the only thread and waits for ACK 1.
    let first = raw_socket().await;
    first.send_to(&rrq("f", &[]), h.addr).await.unwrap();
    let (pkt, tid) = recv_packet(&first).await;
    let (_, block1) = data_block(&pkt);
    // A second one meanwhile runs on the async engine, and completes.
    let d = client::get(h.addr, "f", &opts(None, None, false)).await.unwrap();
    assert_eq!(d.data, data);
    let r = h.report().await;
    assert_eq!((r.outcome, r.thread), (Outcome::Complete, false));
    // Windowed transfers never take a thread.
    client::get(h.addr, "f", &opts(Some(512), Some(4), false)).await.unwrap();
    let r = h.report().await;
    assert_eq!((r.outcome, r.thread), (Outcome::Complete, false));
    // The first one finishes on its thread and gives it back.
    assert_eq!(finish_lockstep(&first, tid, block1, 1).await, data);
    let r = h.report().await;
    assert_eq!((r.outcome, r.thread, r.blocks, r.bytes), (Outcome::Complete, true, 5, data.len() as u64));
    client::get(h.addr, "f", &opts(Some(1024), None, true)).await.unwrap();
    let r = h.report().await;
    assert_eq!((r.outcome, r.thread), (Outcome::Complete, true));
    h.shutdown().await;
}
