//! Every client of docs/firmware.md#dhcp-requests-by-client, as request bytes with the options
//! that firmware sends, against the whole server in server and proxy mode.

use super::*;
use appliance_core::dhcp::fixtures::firmware::*;

/// What a firmware row must get.
struct Want {
    name: &'static str,
    opts: fn([u8; 6]) -> Options,
    mac: [u8; 6],
    /// File field and option 67.
    file: &'static str,
    /// Option 66 (TFTP server) expected.
    tftp: bool,
    /// Option 60 echo in server mode (proxy mode always echoes, PXEClient for U-Boot).
    class: Option<&'static str>,
    pxe_options: bool,
    ipxe_options: bool,
}

fn rows() -> Vec<Want> {
    let script = "http://10.77.0.1:8080/boot.ipxe";
    vec![
        Want {
            name: "seabios + iPXE ROM",
            opts: seabios_ipxe_rom,
            mac: mac(0x10),
            file: script,
            tftp: false,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: true,
        },
        Want {
            name: "undionly.kpxe chained",
            opts: undionly_chained,
            mac: mac(0x11),
            file: script,
            tftp: false,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: true,
        },
        Want {
            name: "stock BIOS PXE ROM",
            opts: bios_stock_pxe,
            mac: mac(0x12),
            file: "undionly.kpxe",
            tftp: true,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: false,
        },
        Want {
            name: "OVMF PXE",
            opts: ovmf_pxe,
            mac: mac(0x13),
            file: "ipxe.efi",
            tftp: true,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: false,
        },
        Want {
            name: "ipxe.efi",
            opts: ipxe_efi,
            mac: mac(0x14),
            file: script,
            tftp: false,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: true,
        },
        Want {
            name: "U-Boot",
            opts: uboot,
            mac: mac(0x05),
            file: "boot.scr.uimg",
            tftp: true,
            class: None,
            pxe_options: false,
            ipxe_options: false,
        },
        Want {
            name: "U-Boot EFI retry",
            opts: uboot_efi_retry,
            mac: mac(0x15),
            file: "grubnetaa64.efi",
            tftp: true,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: false,
        },
        Want {
            name: "ArmVirt EDK2",
            opts: armvirt_edk2,
            mac: mac(0x16),
            file: "grubnetaa64.efi",
            tftp: true,
            class: Some("PXEClient"),
            pxe_options: true,
            ipxe_options: false,
        },
        Want {
            name: "UEFI HTTP Boot",
            opts: uefi_http,
            mac: mac(0x17),
            file: "http://10.77.0.1:8080/ipxe.efi",
            tftp: false,
            class: Some("HTTPClient"),
            pxe_options: false,
            ipxe_options: false,
        },
    ]
}

/// The boot fields every mode shares.
fn check_boot(w: &Want, r: &Message, proxy: bool) {
    let n = w.name;
    assert_eq!(r.siaddr(), SERVER, "{n}: siaddr");
    assert_eq!(file(r), w.file, "{n}: file field");
    assert_eq!(raw(r, 67), Some(s(w.file)), "{n}: option 67");
    assert_eq!(raw(r, 66), w.tftp.then(|| s("10.77.0.1")), "{n}: option 66");
    assert_eq!(raw(r, 54), Some(SERVER.octets().to_vec()), "{n}: option 54");
    let class = if proxy { w.class.or(Some("PXEClient")) } else { w.class };
    assert_eq!(raw(r, 60), class.map(s), "{n}: option 60");
    assert_eq!(raw(r, 43), w.pxe_options.then(|| vec![6, 1, 8, 255]), "{n}: option 43");
    assert_eq!(raw(r, 175), w.ipxe_options.then(|| vec![176, 1, 1]), "{n}: option 175");
    let sent97 = (w.opts)(w.mac).iter().any(|(c, _)| *c == 97);
    assert_eq!(has(r, 97), sent97 && w.pxe_options, "{n}: option 97 echoed to PXE clients");
}

#[tokio::test]
async fn every_firmware_in_server_mode_gets_an_address_and_its_boot_file() {
    let h = Harness::start(catalog(), None, None).await;
    for w in rows() {
        let offer = h.ask(&Req::new(DISCOVER, w.mac, (w.opts)(w.mac))).await;
        assert_eq!(kind(&offer), 2, "{}: OFFER", w.name);
        let ip = offer.yiaddr();
        assert!(ip.octets()[..3] == [10, 77, 0] && ip.octets()[3] >= 100, "{}: yiaddr {ip}", w.name);
        check_boot(&w, &offer, false);
        assert_eq!(raw(&offer, 51), Some(3600u32.to_be_bytes().to_vec()), "{}: lease time", w.name);
        assert_eq!(raw(&offer, 1), Some(vec![255, 255, 255, 0]), "{}: mask", w.name);
        assert_eq!(raw(&offer, 3), Some(SERVER.octets().to_vec()), "{}: router", w.name);
        assert_eq!(raw(&offer, 6), Some(vec![10, 77, 0, 1, 10, 77, 0, 2]), "{}: dns", w.name);
        assert_eq!(raw(&offer, 15), Some(s("lab.test")), "{}: domain", w.name);

        let req = Req::new(REQUEST, w.mac, (w.opts)(w.mac)).requested(ip).server_id(SERVER);
        let ack = h.ask(&req).await;
        assert_eq!(kind(&ack), 5, "{}: ACK", w.name);
        assert_eq!(ack.yiaddr(), ip, "{}: ACK address", w.name);
        check_boot(&w, &ack, false);
    }
    // The MAC database's hostname goes to known machines only.
    let arm = h.ask(&Req::new(DISCOVER, mac(0x05), uboot(mac(0x05)))).await;
    assert_eq!(raw(&arm, 12), Some(s("arm-board")));
    let unknown = h.ask(&Req::new(DISCOVER, mac(0x13), ovmf_pxe(mac(0x13)))).await;
    assert!(!has(&unknown, 12));
    h.stop().await;
}

#[tokio::test]
async fn every_firmware_in_proxy_mode_gets_boot_information_only() {
    let h = Harness::start(catalog(), Some(DhcpMode::Proxy), None).await;
    for w in rows() {
        let offer = h.ask(&Req::new(DISCOVER, w.mac, (w.opts)(w.mac))).await;
        assert_eq!(kind(&offer), 2, "{}: proxy OFFER", w.name);
        assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "{}: no address", w.name);
        check_boot(&w, &offer, true);
        for code in [51, 58, 59, 1, 3, 6, 15, 12] {
            assert!(!has(&offer, code), "{}: proxy offer carries option {code}", w.name);
        }
        // A PXE client that then asks the boot server on port 4011 gets the same as an ACK.
        let pxe_req = Req::new(REQUEST, w.mac, (w.opts)(w.mac)).ciaddr(Ipv4Addr::new(10, 77, 0, 150));
        let ack = h.ask_pxe(&pxe_req).await;
        assert_eq!(kind(&ack), 5, "{}: 4011 ACK", w.name);
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED, "{}: 4011 ACK address", w.name);
        check_boot(&w, &ack, true);
        assert!(!has(&ack, 51), "{}: 4011 ACK has no lease", w.name);
    }
    h.stop().await;
}

#[tokio::test]
async fn plain_os_client_gets_an_address_without_boot_information() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x30);
    let offer = h.ask(&Req::new(DISCOVER, m, os_client(m))).await;
    assert_eq!(kind(&offer), 2);
    assert!(!offer.yiaddr().is_unspecified());
    assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(&offer), "");
    for code in [43, 60, 66, 67, 175] {
        assert!(!has(&offer, code), "option {code}");
    }
    // RFC 6842: the client identifier comes back.
    assert_eq!(raw(&offer, 61), Some(client_id(m)));
    // The reply honours the client's request list order after 53 and 54.
    let ack = h.ask(&Req::new(REQUEST, m, os_client(m)).requested(offer.yiaddr()).server_id(SERVER)).await;
    assert_eq!(kind(&ack), 5);
    h.stop().await;
}

#[tokio::test]
async fn a_machine_the_database_ignores_still_gets_an_address_in_server_mode() {
    let h = Harness::start(catalog(), None, None).await;
    let m = mac(0x06);
    let offer = h.ask(&Req::new(DISCOVER, m, ovmf_pxe(m))).await;
    assert_eq!(kind(&offer), 2);
    assert!(!offer.yiaddr().is_unspecified());
    assert_eq!(file(&offer), "");
    assert!(!has(&offer, 67) && !has(&offer, 43) && !has(&offer, 60));
    h.stop().await;

    let h = Harness::start(catalog(), Some(DhcpMode::Proxy), None).await;
    h.assert_silent(&Req::new(DISCOVER, m, ovmf_pxe(m)), &probe()).await;
    h.stop().await;
}
