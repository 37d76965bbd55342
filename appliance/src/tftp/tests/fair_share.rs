//! Fair shares on the wire: one source's stalled transfers (RFC 2349 `timeout=255`, never an
//! ACK) neither get their long timer nor keep another client out; when every slot is taken the
//! stalest one goes, with an ERROR, and the new client is served.

use std::time::Duration;

use super::*;

on_both_drivers!(a_stalling_source_keeps_only_its_share_and_yields_to_a_new_client);

fn oack_names(bytes: &[u8]) -> Vec<String> {
    match Packet::decode(bytes).unwrap() {
        Packet::Oack { options } => options.into_iter().map(|(n, _)| n).collect(),
        other => panic!("expected OACK, got {other:?}"),
    }
}

async fn hostile() -> UdpSocket {
    // Another loopback address: another source for the per-source share.
    UdpSocket::bind("127.0.0.2:0").await.unwrap()
}

async fn a_stalling_source_keeps_only_its_share_and_yields_to_a_new_client(lockstep_threads: usize) {
    let data = pattern(3000, 20);
    let config = TftpConfig {
        timeout: Duration::from_secs(2),
        max_transfers: 2,
        max_per_source: 2,
        evict_after: Duration::from_millis(300),
        lockstep_threads,
        ..test_config()
    };
    let mut h = Files::new().bytes("f", data.clone()).serve(config).await;
    let stalling = [hostile().await, hostile().await];
    for s in &stalling {
        s.send_to(&rrq("f", &[("timeout", "255"), ("tsize", "0")]), h.addr).await.unwrap();
        let (oack, _) = recv_packet(s).await;
        assert_eq!(oack_names(&oack), ["tsize"], "a 255 s timeout is not granted");
        // So the first is the stalest beyond doubt.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its share is full and neither transfer has stalled long enough: a third is dropped.
    let third = hostile().await;
    third.send_to(&rrq("f", &[("timeout", "255")]), h.addr).await.unwrap();
    assert!(recv(&third, Duration::from_millis(100)).await.is_none(), "a third transfer for one source");
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Every slot is taken; the stalest makes room and the new client gets the whole file.
    let d = client::get(h.addr, "f", &opts(None, None, false)).await.unwrap();
    assert_eq!(d.data, data);
    let mut outcomes = vec![h.report().await.outcome, h.report().await.outcome];
    outcomes.sort_by_key(|o| o.to_string());
    assert_eq!(outcomes, [Outcome::Complete, Outcome::Evicted]);
    // The evicted client is told, with ERROR 0 (after OACKs resent while the test ran); the
    // other one only ever got OACKs.
    assert_eq!(next_error(&stalling[0]).await, Some(0), "the stalest was told");
    assert_eq!(next_error(&stalling[1]).await, None);
    h.shutdown().await;
}

/// The code of the next ERROR on `sock`, skipping OACKs, or `None` when nothing but OACKs
/// comes for a while.
async fn next_error(sock: &UdpSocket) -> Option<u16> {
    while let Some((packet, _)) = recv(sock, Duration::from_millis(2500)).await {
        match Packet::decode(&packet).unwrap() {
            Packet::Oack { .. } => continue,
            Packet::Error { code, .. } => return Some(code),
            other => panic!("expected ERROR or OACK, got {other:?}"),
        }
    }
    None
}
