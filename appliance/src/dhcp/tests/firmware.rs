//! Every client of docs/firmware.md#dhcp-requests-by-client, as request bytes with the options
//! that firmware sends, against the whole server in server and proxy mode.

use super::*;
use crate::catalog::DhcpMode;

fn s(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

const UUID: [u8; 17] =
    [0, 0x6e, 0x4f, 0x19, 0x65, 0x6f, 0xba, 0x84, 0x49, 0xb9, 0x43, 0xe8, 0x74, 0xb4, 0xde, 0xdf, 0xd7];

/// iPXE's parameter request list.
fn ipxe_prl() -> Vec<u8> {
    vec![1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203]
}

/// iPXE's feature list (option 175): bus id (177: PCI 8086:100e, the e1000), then feature
/// flags (PXE, HTTP, DNS, TFTP, ...), and on EFI builds 36.
fn ipxe_features(efi: bool) -> Vec<u8> {
    let mut v = vec![177, 5, 1, 0x80, 0x86, 0x10, 0x0e, 16, 1, 2, 19, 1, 1, 21, 1, 1, 23, 1, 1, 33, 1, 1];
    if efi {
        v.extend([36, 1, 1]);
    }
    v
}

fn edk2_prl() -> Vec<u8> {
    let mut v =
        vec![1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97];
    v.extend(128..=135);
    v
}

fn uboot_prl() -> Vec<u8> {
    vec![1, 3, 6, 12, 15, 17, 28, 42, 66, 67]
}

fn client_id(m: [u8; 6]) -> Vec<u8> {
    let mut v = vec![1];
    v.extend(m);
    v
}

/// SeaBIOS with QEMU's NIC ROM (iPXE 2019).
pub(crate) fn seabios_ipxe_rom(m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xc0]),
        (93, vec![0, 0]),
        (94, vec![1, 2, 1]),
        (60, s("PXEClient:Arch:00000:UNDI:002001")),
        (77, s("iPXE")),
        (55, ipxe_prl()),
        (175, ipxe_features(false)),
        (61, client_id(m)),
        (97, UUID.to_vec()),
    ]
}

/// `undionly.kpxe` chained from that ROM: byte-identical options (docs/firmware.md#ipxe-rom-and-undionly).
pub(crate) fn undionly_chained(m: [u8; 6]) -> Options {
    seabios_ipxe_rom(m)
}

/// A stock (non-iPXE) BIOS PXE ROM: no option 77, no 175.
pub(crate) fn bios_stock_pxe(_m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x04, 0xec]),
        (93, vec![0, 0]),
        (94, vec![1, 2, 1]),
        (60, s("PXEClient:Arch:00000:UNDI:002001")),
        (55, edk2_prl()),
        (97, UUID.to_vec()),
    ]
}

/// OVMF's own PXE stack.
pub(crate) fn ovmf_pxe(_m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xc0]),
        (55, edk2_prl()),
        (97, UUID.to_vec()),
        (94, vec![1, 3, 0]),
        (93, vec![0, 7]),
        (60, s("PXEClient:Arch:00007:UNDI:003000")),
    ]
}

/// `ipxe.efi` / the iPXE EFI ROM.
pub(crate) fn ipxe_efi(m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xc0]),
        (93, vec![0, 7]),
        (94, vec![1, 3, 10]),
        (60, s("PXEClient:Arch:00007:UNDI:003010")),
        (77, s("iPXE")),
        (55, ipxe_prl()),
        (175, ipxe_features(true)),
        (61, client_id(m)),
        (97, UUID.to_vec()),
    ]
}

/// U-Boot 2023.01 `qemu_arm64`: no 61, no 97.
pub(crate) fn uboot(_m: [u8; 6]) -> Options {
    vec![(57, vec![0x02, 0x40]), (93, vec![0, 0x16]), (94, vec![1, 0, 0]), (60, s("U-Boot.armv8")), (55, uboot_prl())]
}

/// U-Boot's EFI retry after `boot.scr.uimg` was missing.
pub(crate) fn uboot_efi_retry(_m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x02, 0x40]),
        (93, vec![0, 11]),
        (94, vec![1, 0, 0]),
        (60, s("PXEClient:Arch:00011:UNDI:003000")),
        (55, uboot_prl()),
    ]
}

/// ArmVirt EDK2 (`QEMU_EFI.fd`).
pub(crate) fn armvirt_edk2(_m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xc0]),
        (55, edk2_prl()),
        (97, UUID.to_vec()),
        (94, vec![1, 3, 0]),
        (93, vec![0, 11]),
        (60, s("PXEClient:Arch:00011:UNDI:003000")),
    ]
}

/// OVMF's UEFI HTTP Boot.
pub(crate) fn uefi_http(_m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xc0]),
        (55, edk2_prl()),
        (97, UUID.to_vec()),
        (94, vec![1, 3, 1]),
        (93, vec![0, 16]),
        (60, s("HTTPClient:Arch:00016:UNDI:003001")),
    ]
}

/// An installed OS renewing its address: nothing marks it as a boot client.
pub(crate) fn os_client(m: [u8; 6]) -> Options {
    vec![
        (57, vec![0x05, 0xdc]),
        (61, client_id(m)),
        (60, s("dhcpcd-9.4.1:Linux-6.1.0:x86_64:GenuineIntel")),
        (12, s("os-host")),
        (55, vec![1, 121, 33, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 119]),
    ]
}

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
