//! The iPXE chain loop, proxy and off mode, port 4011, and garbage on the wire.

use super::*;
use appliance_core::arch::Firmware;
use appliance_core::catalog::DhcpMode;
use appliance_core::dhcp::fixtures::firmware::{bios_stock_pxe, os_client, ovmf_pxe, seabios_ipxe_rom, uboot};
use appliance_core::mac::MacAddr;
use std::time::Instant;

const SCRIPT: &str = "http://10.77.0.1:8080/boot.ipxe";

/// DISCOVER then REQUEST in one transaction; returns the ACK.
async fn lease(h: &Harness, m: [u8; 6], opts: Options, xid: u32) -> (Message, Message) {
    let offer = h.ask(&Req::new(DISCOVER, m, opts.clone()).xid(xid)).await;
    let ack = h.ask(&Req::new(REQUEST, m, opts).xid(xid).requested(offer.yiaddr()).server_id(SERVER)).await;
    (offer, ack)
}

#[tokio::test]
async fn chain_ipxe_machine_gets_undionly_first_then_the_script() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x02); // chain_ipxe: true
    let (offer, ack) = lease(&h, m, seabios_ipxe_rom(m), 0x1000).await;
    assert_eq!(file(&offer), "undionly.kpxe");
    assert_eq!(file(&ack), "undionly.kpxe");
    assert!(h.shared.chained(MacAddr(m), Instant::now()));
    // The chained undionly.kpxe sends byte-identical options in a new transaction.
    let (offer, ack) = lease(&h, m, seabios_ipxe_rom(m), 0x2000).await;
    assert_eq!(file(&offer), SCRIPT);
    assert_eq!(file(&ack), SCRIPT);
    assert_eq!(raw(&ack, 175), Some(vec![176, 1, 1]));
    h.stop().await;
}

#[tokio::test]
async fn chain_loop_is_broken_in_proxy_mode_too() {
    let h = Harness::start(catalog(), Some(DhcpMode::Proxy), None).await;
    let m = mac(0x02);
    let offer = h.ask(&Req::new(DISCOVER, m, seabios_ipxe_rom(m)).xid(0x3000)).await;
    assert_eq!(file(&offer), "undionly.kpxe");
    // The ROM takes the site server's address (its REQUEST names that server) and our file.
    let site = Ipv4Addr::new(10, 77, 0, 254);
    let to_site =
        Req::new(REQUEST, m, seabios_ipxe_rom(m)).xid(0x3000).requested(Ipv4Addr::new(10, 77, 0, 50)).server_id(site);
    h.assert_silent(&to_site, &probe()).await;
    assert!(h.shared.chained(MacAddr(m), Instant::now()));
    let offer = h.ask(&Req::new(DISCOVER, m, seabios_ipxe_rom(m)).xid(0x4000)).await;
    assert_eq!(file(&offer), SCRIPT);
    h.stop().await;
}

#[tokio::test]
async fn plain_ipxe_client_gets_the_script_at_once() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x40);
    let (offer, ack) = lease(&h, m, seabios_ipxe_rom(m), 0x5000).await;
    assert_eq!(file(&offer), SCRIPT);
    assert_eq!(file(&ack), SCRIPT);
    h.stop().await;
}

#[tokio::test]
async fn stock_bios_rom_always_gets_undionly() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x01); // known machine with a fixed address
    for xid in [0x6000, 0x7000] {
        let (offer, ack) = lease(&h, m, bios_stock_pxe(m), xid).await;
        assert_eq!(file(&offer), "undionly.kpxe");
        assert_eq!(file(&ack), "undionly.kpxe");
    }
    h.stop().await;
}

#[tokio::test]
async fn proxy_mode_never_answers_a_plain_os_client() {
    let h = Harness::start(catalog(), Some(DhcpMode::Proxy), None).await;
    let m = mac(0x31);
    h.assert_silent(&Req::new(DISCOVER, m, os_client(m)), &probe()).await;
    let req = Req::new(REQUEST, m, os_client(m)).requested(Ipv4Addr::new(10, 77, 0, 60));
    h.assert_silent(&req, &probe()).await;
    h.assert_silent(&req.clone().server_id(SERVER), &probe()).await;
    // Nor on the PXE port.
    h.client.send_to(&Req::new(REQUEST, m, os_client(m)).bytes(), h.pxe).await.unwrap();
    let got = h.ask(&probe()).await;
    assert_eq!(got.xid(), probe().xid);
    h.stop().await;
}

#[tokio::test]
async fn proxy_port_4011_request_gets_an_ack_at_its_source() {
    let h = Harness::start(catalog(), Some(DhcpMode::Proxy), None).await;
    let m = mac(0x32);
    let req = Req::new(REQUEST, m, ovmf_pxe(m)).ciaddr(Ipv4Addr::new(10, 77, 0, 51)).xid(0x8000);
    let ack = h.ask_pxe(&req).await;
    assert_eq!(kind(&ack), 5);
    assert_eq!(ack.xid(), 0x8000);
    assert_eq!(ack.ciaddr(), Ipv4Addr::new(10, 77, 0, 51));
    assert_eq!(file(&ack), "ipxe.efi");
    // A REQUEST on port 67 naming the site's server is not ours.
    let site =
        Req::new(REQUEST, m, ovmf_pxe(m)).requested(Ipv4Addr::new(10, 77, 0, 51)).server_id([10, 77, 0, 254].into());
    h.assert_silent(&site, &probe()).await;
    h.stop().await;
}

#[tokio::test]
async fn off_mode_never_sends_but_remembers_the_client() {
    let h = Harness::start(catalog(), Some(DhcpMode::Off), None).await;
    let m = mac(0x33);
    h.send(&Req::new(DISCOVER, m, ovmf_pxe(m))).await;
    h.send(&Req::new(DISCOVER, mac(0x05), uboot(mac(0x05)))).await;
    h.send(&probe()).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.shared.recalled_dhcp(MacAddr(mac(0xee)), Instant::now()).is_none() {
        assert!(Instant::now() < deadline, "the server never saw the requests");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = h.shared.recalled_dhcp(MacAddr(m), Instant::now()).unwrap();
    assert_eq!(seen.firmware, Firmware::UefiPxe);
    assert_eq!(h.shared.recalled_dhcp(MacAddr(mac(0x05)), Instant::now()).unwrap().firmware, Firmware::Uboot);
    assert!(h.recv_within(Duration::from_millis(200)).await.is_none(), "off mode sent a reply");
    h.stop().await;
}

#[tokio::test]
async fn mode_follows_a_catalog_reload() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x34);
    let offer = h.ask(&Req::new(DISCOVER, m, ovmf_pxe(m))).await;
    assert!(!offer.yiaddr().is_unspecified());
    h.shared.replace_catalog(Arc::new(catalog_with(&SETTINGS.replace("mode: server", "mode: proxy"))));
    let offer = h.ask(&Req::new(DISCOVER, m, ovmf_pxe(m))).await;
    assert!(offer.yiaddr().is_unspecified(), "proxy offer after reload");
    h.stop().await;
}

#[tokio::test]
async fn garbage_is_dropped_and_the_next_good_packet_answered() {
    let h = Harness::start(catalog(), None, None).await;
    let good = Req::new(DISCOVER, mac(0x35), ovmf_pxe(mac(0x35)));
    let bytes = good.bytes();
    let mut wrong_op = bytes.clone();
    wrong_op[0] = 2;
    let mut long_hw = bytes.clone();
    long_hw[2] = 200;
    let mut no_cookie = bytes.clone();
    no_cookie[236] = 0;
    let mut x: u32 = 0x1234_5678;
    let random: Vec<u8> = (0..600)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut random_opts = bytes[..240].to_vec();
    random_opts.extend(&random[..200]);
    let offer_type = Req::new(2, mac(0x35), vec![]).bytes();
    for junk in [&bytes[..100], &wrong_op, &long_hw, &no_cookie, &random, &random_opts, &offer_type, &[][..]] {
        h.send_raw(junk).await;
    }
    let reply = h.ask(&good).await;
    assert_eq!(reply.xid(), good.xid, "the first reply is the good packet's");
    assert_eq!(kind(&reply), 2);
    h.stop().await;
}
