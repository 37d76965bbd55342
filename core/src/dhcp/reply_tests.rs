//! Unit tests of `reply`: built from request bytes, without sockets.

use super::*;
use crate::catalog::Catalog;
use crate::client::from_dhcp;
use crate::decide::{decide, Stage};
use crate::dhcp::fixtures::{self as fx, firmware, Req, DISCOVER, INFORM, REQUEST};
use crate::dhcp::wire::decode_request;

struct Case {
    catalog: Catalog,
    mode: DhcpMode,
    port: Port,
    grant: Option<Grant>,
    http_base: String,
}

impl Case {
    fn server(grant: Option<Grant>) -> Self {
        Case {
            catalog: fx::catalog(),
            mode: DhcpMode::Server,
            port: Port::Dhcp,
            grant,
            http_base: fx::HTTP_BASE.into(),
        }
    }

    fn build(&self, req: &Req) -> Option<Reply> {
        let msg = decode_request(&req.bytes()).unwrap();
        let client = from_dhcp(&msg);
        let decision = decide(&self.catalog, &client, Stage::Dhcp);
        let p = Params {
            mode: self.mode,
            port: self.port,
            server: fx::SERVER,
            http_base: &self.http_base,
            settings: &self.catalog.settings().dhcp,
            grant: self.grant.as_ref(),
        };
        build(&msg, &client, &decision, &p)
    }
}

fn granted() -> Option<Grant> {
    Some(Grant::Address { ip: Ipv4Addr::new(10, 77, 0, 100), lease_secs: 3600 })
}

fn ovmf(kind: u8) -> Req {
    Req::new(kind, fx::mac(0x13), firmware::ovmf_pxe(fx::mac(0x13)))
}

/// Option codes in wire order, read back from the encoded bytes.
fn wire_order(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = wire::HEADER_LEN;
    while i < bytes.len() && bytes[i] != 255 {
        out.push(bytes[i]);
        i += 2 + usize::from(bytes[i + 1]);
    }
    out
}

#[test]
fn off_mode_never_replies() {
    let mut c = Case::server(granted());
    c.mode = DhcpMode::Off;
    assert!(c.build(&ovmf(DISCOVER)).is_none());
    assert!(c.build(&ovmf(INFORM)).is_none());
}

#[test]
fn message_type_and_server_id_lead_then_the_request_list_order() {
    let m = fx::mac(0x20);
    let req = Req::new(DISCOVER, m, vec![(55, vec![67, 6, 1, 3, 60])]);
    let r = Case::server(granted()).build(&req).unwrap();
    let order = wire_order(&r.encode());
    assert_eq!(&order[..2], &[53, 54]);
    // This client is not a boot client: no 67 or 60, the rest in its order.
    let requested: Vec<u8> = order.iter().copied().filter(|c| [67, 6, 1, 3, 60].contains(c)).collect();
    assert_eq!(requested, vec![6, 1, 3]);
    let pxe = Case::server(granted()).build(&ovmf(DISCOVER).opt(55, vec![67, 60, 43, 1])).unwrap();
    let order = wire_order(&pxe.encode());
    assert_eq!(&order[..6], &[53, 54, 67, 60, 43, 1]);
}

#[test]
fn replies_stay_within_the_clients_size_limit() {
    // 70 DNS servers (280 bytes) and a long domain cannot all fit U-Boot's 576 bytes.
    let dns: Vec<String> = (1..=70).map(|i| format!("10.77.0.{i}")).collect();
    let settings = fx::SETTINGS.replace("dns: [10.77.0.1, 10.77.0.2]", &format!("dns: [{}]", dns.join(", ")));
    let mut c = Case::server(granted());
    c.catalog = fx::catalog_with(&settings);
    let m = fx::mac(0x05);
    let r = c.build(&Req::new(DISCOVER, m, firmware::uboot(m))).unwrap();
    let bytes = r.encode();
    assert!(bytes.len() <= 576 - 28, "{} bytes", bytes.len());
    assert_eq!(r.dropped, vec![OptionCode::DomainNameServer]);
    assert!(r.option(OptionCode::AddressLeaseTime).is_some());
    assert_eq!(r.message.fname(), Some(&b"boot.scr.uimg"[..]));
    // With option 57 = 1472 everything fits.
    let big = c.build(&Req::new(DISCOVER, m, firmware::uboot(m)).opt(57, vec![0x05, 0xc0])).unwrap();
    assert!(big.dropped.is_empty());
    assert!(big.encode().len() > 576);
    // No option 57 at all: 576.
    let none = c.build(&Req::new(DISCOVER, m, vec![(93, vec![0, 0x16]), (60, b"U-Boot.armv8".to_vec())])).unwrap();
    assert!(none.encode().len() <= 548);
}

#[test]
fn a_url_too_long_for_the_file_field_goes_in_option_67_only() {
    let mut c = Case::server(granted());
    c.http_base = format!("http://10.77.0.1:8080/{}", "x".repeat(120));
    let m = fx::mac(0x14);
    let r = c.build(&Req::new(DISCOVER, m, firmware::ipxe_efi(m))).unwrap();
    assert_eq!(r.message.fname(), None);
    let want = format!("{}/boot.ipxe", c.http_base).into_bytes();
    assert_eq!(r.option(OptionCode::BootfileName), Some(&DhcpOption::BootfileName(want)));
}

#[test]
fn request_naming_another_server_gets_nothing_and_refusal_gets_a_nak() {
    let other = ovmf(REQUEST).server_id(Ipv4Addr::new(10, 77, 0, 254));
    assert!(Case::server(granted()).build(&other).is_none());
    let nak = Case::server(Some(Grant::Refused("taken".into()))).build(&ovmf(REQUEST)).unwrap();
    assert_eq!(nak.kind, MessageType::Nak);
    assert_eq!(nak.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.message.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.option(OptionCode::Message), Some(&DhcpOption::Message("taken".into())));
    assert!(nak.option(OptionCode::BootfileName).is_none());
    // Relayed: the relay must broadcast it.
    let mut relayed = ovmf(REQUEST);
    relayed.giaddr = Ipv4Addr::new(10, 77, 0, 254);
    let nak = Case::server(Some(Grant::Refused("taken".into()))).build(&relayed).unwrap();
    assert!(nak.message.flags().broadcast());
}

#[test]
fn decline_and_release_get_no_reply() {
    for kind in [4, 7] {
        assert!(Case::server(granted()).build(&ovmf(kind)).is_none());
    }
}

#[test]
fn destinations_follow_rfc_2131() {
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 150), 1234);
    let dest = |req: &Req, grant: Option<Grant>, port: Port| {
        let mut c = Case::server(grant);
        c.port = port;
        let r = c.build(req).unwrap();
        destination(&decode_request(&req.bytes()).unwrap(), &r, port, src, 68)
    };
    let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
    // No address yet: broadcast (we do not unicast to yiaddr, see `destination`).
    assert_eq!(dest(&ovmf(DISCOVER), granted(), Port::Dhcp), bcast);
    // Relayed: to the relay's server port.
    let mut relayed = ovmf(DISCOVER);
    relayed.giaddr = Ipv4Addr::new(10, 77, 0, 254);
    assert_eq!(dest(&relayed, granted(), Port::Dhcp), SocketAddrV4::new(relayed.giaddr, 67));
    // Renewing: to its address.
    let renew = ovmf(REQUEST).ciaddr(Ipv4Addr::new(10, 77, 0, 100));
    assert_eq!(dest(&renew, granted(), Port::Dhcp), SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 100), 68));
    // A NAK is broadcast even to a renewing client.
    assert_eq!(dest(&renew, Some(Grant::Refused("no".into())), Port::Dhcp), bcast);
    // Port 4011: back to the source.
    assert_eq!(dest(&ovmf(REQUEST), None, Port::Pxe), src);
}

#[test]
fn proxy_offers_carry_no_address_and_no_lease_options() {
    let mut c = Case::server(granted());
    c.mode = DhcpMode::Proxy;
    let r = c.build(&ovmf(DISCOVER)).unwrap();
    assert_eq!(r.kind, MessageType::Offer);
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    for code in [OptionCode::AddressLeaseTime, OptionCode::SubnetMask, OptionCode::Router, OptionCode::DomainNameServer]
    {
        assert!(r.option(code).is_none(), "{code:?}");
    }
    // REQUEST on port 67 naming us (rare) gets an ACK, naming nobody gets nothing.
    assert_eq!(c.build(&ovmf(REQUEST).server_id(fx::SERVER)).unwrap().kind, MessageType::Ack);
    assert!(c.build(&ovmf(REQUEST)).is_none());
}

/// shim takes its directory, and so its GRUB's, from the BOOTP `file` field, not from option
/// 67 (docs/firmware.md#the-shim-chain): the name must be in both, in server and proxy mode; an
/// HTTP Boot client gets the URL of its boot image instead (`boot_image`).
#[test]
fn the_shim_chain_names_shim_in_the_file_field() {
    let mut c = Case::server(granted());
    c.catalog = fx::catalog_with(&format!("{}uefi_chain: shim\n", fx::SETTINGS));
    let m = fx::mac(0x15);
    for mode in [DhcpMode::Server, DhcpMode::Proxy] {
        c.mode = mode;
        let r = c.build(&Req::new(DISCOVER, m, firmware::ovmf_pxe(m))).unwrap();
        assert_eq!(r.message.fname(), Some(&b"shimx64.efi"[..]), "{mode}");
        assert_eq!(r.message.siaddr(), fx::SERVER, "{mode}");
        assert_eq!(r.option(OptionCode::BootfileName), Some(&DhcpOption::BootfileName(b"shimx64.efi".to_vec())));
    }
    c.mode = DhcpMode::Server;
    let arm = c.build(&Req::new(DISCOVER, m, firmware::armvirt_edk2(m))).unwrap();
    assert_eq!(arm.message.fname(), Some(&b"shimaa64.efi"[..]));
    let http = c.build(&Req::new(DISCOVER, m, firmware::uefi_http(m))).unwrap();
    // An HTTP Boot client gets its boot image, a RAM disk with shim, GRUB and what GRUB reads.
    let url = format!("{}/boot-image/{}.x86_64.img", fx::HTTP_BASE, crate::mac::MacAddr(m).dashed());
    assert_eq!(http.message.fname(), Some(url.as_bytes()));
    assert_eq!(http.option(OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec())));
    assert_eq!(http.option(OptionCode::BootfileName), Some(&DhcpOption::BootfileName(url.clone().into_bytes())));
    c.mode = DhcpMode::Proxy;
    let proxied = c.build(&Req::new(DISCOVER, m, firmware::uefi_http(m))).unwrap();
    assert_eq!(proxied.message.fname(), Some(url.as_bytes()), "the same image behind proxyDHCP");
}

/// The Debian installer runs its own DHCP client after the firmware's boot; it stops to ask
/// for a name server when the answer names none (docs/firmware.md#debian-12-netboot-installer).
/// In server mode it gets its address with router, name servers, domain and host name, and no
/// boot information; behind proxyDHCP it is the site's client alone.
#[test]
fn the_debian_installers_dhcp_gets_a_name_server_in_server_mode_and_nothing_from_a_proxy() {
    let m = [0x52, 0x54, 0x00, 0x77, 0x00, 0x01]; // bios-node in the fixture's MAC database
    let req = |kind| Req::new(kind, m, firmware::debian_installer(m));
    let mut c = Case::server(granted());
    for kind in [DISCOVER, REQUEST] {
        let r = c.build(&req(kind)).unwrap();
        assert_eq!(r.message.yiaddr(), Ipv4Addr::new(10, 77, 0, 100));
        let dns = vec![Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)];
        assert_eq!(r.option(OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(dns)));
        assert_eq!(r.option(OptionCode::Router), Some(&DhcpOption::Router(vec![fx::SERVER])));
        assert_eq!(r.option(OptionCode::DomainName), Some(&DhcpOption::DomainName("lab.test".into())));
        assert_eq!(r.option(OptionCode::Hostname), Some(&DhcpOption::Hostname("bios-node".into())));
        assert!(r.boot.is_none() && r.option(OptionCode::BootfileName).is_none());
        // Requested ones come in the client's order, right after 53 and 54.
        let order = wire_order(&r.encode());
        let requested: Vec<u8> = order.iter().copied().filter(|c| [1, 3, 6, 12, 15].contains(c)).collect();
        assert_eq!(requested, vec![1, 3, 6, 12, 15]);
    }
    c.mode = DhcpMode::Proxy;
    assert!(c.build(&req(DISCOVER)).is_none());
    assert!(c.build(&req(REQUEST).server_id(fx::SERVER)).is_none());
    c.port = Port::Pxe;
    assert!(c.build(&req(REQUEST)).is_none());
}
