//! Server-mode address handling through the whole server: NAK, DECLINE, RELEASE, INFORM,
//! fixed addresses, exhaustion and leases surviving a restart.

use super::*;
use appliance_core::dhcp::fixtures::firmware::{os_client, ovmf_pxe};
use appliance_core::mac::MacAddr;

/// DISCOVER then REQUEST; returns the bound address.
async fn bind_address(h: &Harness, m: [u8; 6]) -> Ipv4Addr {
    let offer = h.ask(&Req::new(DISCOVER, m, os_client(m))).await;
    let ack = h.ask(&Req::new(REQUEST, m, os_client(m)).requested(offer.yiaddr()).server_id(SERVER)).await;
    assert_eq!(kind(&ack), 5, "ACK for {m:02x?}");
    assert_eq!(ack.yiaddr(), offer.yiaddr());
    ack.yiaddr()
}

fn init_reboot(m: [u8; 6], ip: Ipv4Addr) -> Req {
    Req::new(REQUEST, m, os_client(m)).requested(ip)
}

#[tokio::test]
async fn nak_for_a_foreign_subnet_and_for_another_macs_address() {
    let h = Harness::start(catalog(), None, None).await;
    let nak = h.ask(&init_reboot(mac(0x50), Ipv4Addr::new(192, 168, 5, 5))).await;
    assert_eq!(kind(&nak), 6);
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(raw(&nak, 54), Some(SERVER.octets().to_vec()));
    assert!(!has(&nak, 51) && !has(&nak, 67));

    let a = bind_address(&h, mac(0x51)).await;
    assert_eq!(h.shared.mac_for_ip(a), Some(MacAddr(mac(0x51))), "ACKed address remembered");
    assert_eq!(kind(&h.ask(&init_reboot(mac(0x52), a)).await), 6);
    // Renewing its own lease is fine.
    let renew = Req::new(REQUEST, mac(0x51), os_client(mac(0x51))).ciaddr(a);
    assert_eq!(h.ask(&renew).await.yiaddr(), a);
    h.stop().await;
}

#[tokio::test]
async fn request_naming_another_server_is_ignored() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x53);
    let offer = h.ask(&Req::new(DISCOVER, m, os_client(m))).await;
    let other = Req::new(REQUEST, m, os_client(m)).requested(offer.yiaddr()).server_id([10, 77, 0, 254].into());
    h.assert_silent(&other, &probe()).await;
    // Our hold on the offered address was withdrawn: another client may have it.
    let ack = h.ask(&init_reboot(mac(0x54), offer.yiaddr())).await;
    assert_eq!(kind(&ack), 5);
    h.stop().await;
}

#[tokio::test]
async fn decline_quarantines_the_address() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x55);
    let a = bind_address(&h, m).await;
    h.assert_silent(&Req::new(DECLINE, m, vec![]).requested(a).server_id(SERVER), &probe()).await;
    let offer = h.ask(&Req::new(DISCOVER, m, os_client(m))).await;
    assert_ne!(offer.yiaddr(), a, "a declined address is not offered again");
    assert_eq!(kind(&h.ask(&init_reboot(mac(0x56), a)).await), 6, "nor bound");
    h.stop().await;
}

#[tokio::test]
async fn release_frees_the_address() {
    let h = Harness::start(catalog(), None, None).await;
    let a = bind_address(&h, mac(0x57)).await;
    assert_eq!(kind(&h.ask(&init_reboot(mac(0x58), a)).await), 6);
    let release = Req::new(RELEASE, mac(0x57), vec![]).ciaddr(a).server_id(SERVER);
    h.assert_silent(&release, &probe()).await;
    let ack = h.ask(&init_reboot(mac(0x58), a)).await;
    assert_eq!((kind(&ack), ack.yiaddr()), (5, a));
    h.stop().await;
}

#[tokio::test]
async fn inform_is_answered_without_an_address() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x59);
    let ip = Ipv4Addr::new(10, 77, 0, 9);
    let ack = h.ask(&Req::new(INFORM, m, os_client(m)).ciaddr(ip)).await;
    assert_eq!(kind(&ack), 5);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), ip);
    assert!(!has(&ack, 51) && !has(&ack, 58) && !has(&ack, 59));
    assert!(has(&ack, 1) && has(&ack, 3) && has(&ack, 6));
    // A PXE client's INFORM also gets its boot information.
    let ack = h.ask(&Req::new(INFORM, m, ovmf_pxe(m)).ciaddr(ip)).await;
    assert_eq!(file(&ack), "ipxe.efi");
    h.stop().await;
}

#[tokio::test]
async fn fixed_address_goes_to_its_machine_only() {
    let h = Harness::start(catalog(), None, None).await;
    let fixed = Ipv4Addr::new(10, 77, 0, 11); // bios-node, 52:54:00:77:00:01
    let other = mac(0x5a);
    let offer = h.ask(&Req::new(DISCOVER, other, os_client(other)).requested(fixed)).await;
    assert_ne!(offer.yiaddr(), fixed);
    assert_eq!(kind(&h.ask(&init_reboot(other, fixed)).await), 6);
    let own = bind_address(&h, mac(0x01)).await;
    assert_eq!(own, fixed);
    h.stop().await;
}

#[tokio::test]
async fn exhausted_pool_means_no_offer() {
    let tiny = SETTINGS.replace("end: 10.77.0.199", "end: 10.77.0.101");
    let h = Harness::start(catalog_with(&tiny), None, None).await;
    bind_address(&h, mac(0x60)).await;
    bind_address(&h, mac(0x61)).await;
    h.assert_silent(&Req::new(DISCOVER, mac(0x62), os_client(mac(0x62))), &probe()).await;
    h.stop().await;
}

#[tokio::test]
async fn leases_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Harness::start(catalog(), None, Some(dir.path())).await;
    let a = bind_address(&first, mac(0x70)).await;
    first.stop().await;
    assert!(dir.path().join("leases.json").exists());

    let second = Harness::start(catalog(), None, Some(dir.path())).await;
    // Another machine asking first does not get the persisted lease...
    let b = second.ask(&Req::new(DISCOVER, mac(0x71), os_client(mac(0x71)))).await.yiaddr();
    assert_ne!(b, a);
    // ...and its holder gets it back.
    let again = second.ask(&Req::new(DISCOVER, mac(0x70), os_client(mac(0x70)))).await.yiaddr();
    assert_eq!(again, a);
    second.stop().await;
}

/// Writes are batched off the receive loop, but an ACK still goes out only once its lease is
/// on disk: a crash right after can lose only leases no client was told about.
#[tokio::test(flavor = "multi_thread")]
async fn an_ack_is_sent_only_after_its_lease_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(catalog(), None, Some(dir.path())).await;
    for n in 0..8u8 {
        let ip = bind_address(&h, mac(0x80 + n)).await;
        let file = std::fs::read_to_string(dir.path().join("leases.json")).unwrap();
        assert!(file.contains(&format!("\"{ip}\"")), "ACK for {ip} came before the lease file had it:\n{file}");
    }
    h.stop().await;
}
