//! DHCP requests as the load generators send them (built with dhcproto): a BIOS PXE ROM and
//! the iPXE it chains, with the options those firmwares send (docs/firmware.md#dhcp-requests-by-client),
//! the broadcast flag set, padded to 300 bytes like real clients. And the few fields of a reply we read.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, OptionCode, UnknownOption};
use dhcproto::{Decodable, Encodable};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// A stock BIOS PXE ROM: gets undionly.kpxe.
    BiosPxe,
    /// iPXE (undionly.kpxe, chained): gets the script URL.
    Ipxe,
}

pub const OFFER: u8 = 2;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// A locally administered MAC per (run, client).
pub fn mac(run: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xbe, run, b[1], b[2], b[3]]
}

fn base(fw: Firmware, kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac);
    m.set_flags(v4::Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::MaxMessageSize(1472));
    o.insert(DhcpOption::ClientSystemArchitecture(v4::Architecture::Intelx86PC));
    o.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    o.insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()));
    let mut uuid = vec![0u8];
    uuid.extend([0x6e, 0x4f, 0x19, 0x65, 0x6f, 0xba, 0x84, 0x49, 0xb9, 0x43, 0xe8, 0x74, 0xb4, 0xde]);
    uuid.extend(&mac[4..]);
    o.insert(DhcpOption::ClientMachineIdentifier(uuid));
    let prl = [1u8, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203];
    o.insert(DhcpOption::ParameterRequestList(prl.iter().map(|c| OptionCode::from(*c)).collect()));
    if fw == Firmware::Ipxe {
        o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        let features = vec![177, 5, 1, 0x80, 0x86, 0x10, 0x0e, 16, 1, 2, 19, 1, 1, 21, 1, 1, 23, 1, 1, 33, 1, 1];
        o.insert(DhcpOption::Unknown(UnknownOption::new(OptionCode::from(175u8), features)));
        let mut id = vec![1u8];
        id.extend(mac);
        o.insert(DhcpOption::ClientIdentifier(id));
    }
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut b = m.to_vec().unwrap_or_default();
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}

pub fn discover(fw: Firmware, xid: u32, mac: [u8; 6]) -> Vec<u8> {
    encode(&base(fw, MessageType::Discover, xid, mac))
}

/// REQUEST in SELECTING state: the offered address and the chosen server.
pub fn request(fw: Firmware, xid: u32, mac: [u8; 6], offered: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut m = base(fw, MessageType::Request, xid, mac);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(offered));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    encode(&m)
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub xid: u32,
    pub kind: u8,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    /// Boot file: the `file` field, else option 67.
    pub file: String,
}

/// The xid of a BOOTREPLY without decoding the rest (for the hot receive path).
pub fn reply_xid(b: &[u8]) -> Option<u32> {
    (b.len() >= 240 && b[0] == 2).then(|| u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
}

pub fn parse(b: &[u8]) -> Option<Reply> {
    reply_xid(b)?;
    let m = Message::from_bytes(b).ok()?;
    let kind = match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => u8::from(*t),
        _ => 0,
    };
    let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let mut file = m.fname().map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_string()).unwrap_or_default();
    if file.is_empty() {
        if let Some(DhcpOption::BootfileName(f)) = m.opts().get(OptionCode::BootfileName) {
            file = String::from_utf8_lossy(f).trim_end_matches('\0').to_string();
        }
    }
    Some(Reply { xid: m.xid(), kind, yiaddr: m.yiaddr(), siaddr: m.siaddr(), server_id, file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Opcode;

    #[test]
    fn requests_carry_what_the_firmware_sends() {
        let mac = mac(3, 0x01_0203);
        assert_eq!(mac, [0x02, 0xbe, 3, 1, 2, 3]);
        let b = request(Firmware::Ipxe, 42, mac, Ipv4Addr::new(10, 213, 1, 5), Ipv4Addr::new(10, 213, 0, 1));
        assert!(b.len() >= 300, "padded like real clients");
        let m = Message::from_bytes(&b).unwrap();
        assert_eq!(m.xid(), 42);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().get(OptionCode::UserClass), Some(&DhcpOption::UserClass(b"iPXE".to_vec())));
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 213, 1, 5)))
        );
        // A request is not a reply.
        assert_eq!(reply_xid(&b), None);
        let mut reply = m.clone();
        reply.set_opcode(Opcode::BootReply);
        reply.opts_mut().insert(DhcpOption::MessageType(MessageType::Offer));
        reply.set_fname_str("undionly.kpxe");
        let r = parse(&reply.to_vec().unwrap()).unwrap();
        assert_eq!((r.xid, r.kind, r.file.as_str()), (42, OFFER, "undionly.kpxe"));
    }
}
