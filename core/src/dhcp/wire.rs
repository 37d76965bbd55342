//! The DHCP wire format at our edges: checking that received bytes are a request we can work
//! with, and encoding replies with their options in a chosen order.
//!
//! dhcproto decodes and encodes every field and option. This module adds what it leaves out:
//! the checks a server needs before trusting a packet (its `chaddr()` would panic on a
//! hardware-address length above 16, and it never checks the magic cookie), and an option order
//! (its option map is unordered, but clients read replies in order and some care).
//!
//! Pure: no sockets, no clock.

use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message, MessageType, Opcode, OptionCode, MAGIC};
use dhcproto::Decodable;

/// Fixed BOOTP header plus the magic cookie; options start here.
pub const HEADER_LEN: usize = 240;
/// The smallest BOOTP message; shorter replies are padded (RFC 951, RFC 1542 §2.1).
pub const MIN_MESSAGE_LEN: usize = 300;
/// IPv4 and UDP headers, counted in option 57's limit.
pub const IP_UDP_HEADERS: usize = 28;
/// The datagram size every client must accept (RFC 2131 §2, RFC 2132 §9.10).
pub const MIN_DATAGRAM: usize = 576;

/// Why a received datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPacket {
    #[error("too short for a BOOTP message ({0} bytes)")]
    TooShort(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("hardware address length {hlen} for hardware type {htype}")]
    BadHardwareAddress { htype: u8, hlen: u8 },
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("no DHCP message type (plain BOOTP is not served)")]
    NoMessageType,
    #[error("message type {0:?} is not sent by clients")]
    NotClientType(MessageType),
}

/// Decodes a datagram received on a server port into a client's DHCP request.
///
/// Plain BOOTP (no option 53) is refused: every firmware in docs/firmware.md#dhcp-requests-by-client
/// speaks DHCP.
pub fn decode_request(bytes: &[u8]) -> Result<Message, BadPacket> {
    if bytes.len() < HEADER_LEN {
        return Err(BadPacket::TooShort(bytes.len()));
    }
    if bytes[0] != 1 {
        return Err(BadPacket::NotRequest(bytes[0]));
    }
    let (htype, hlen) = (bytes[1], bytes[2]);
    // Ethernet (1) must carry a 6-byte address; nothing may exceed the 16-byte chaddr field.
    if hlen > 16 || (htype == 1 && hlen != 6) {
        return Err(BadPacket::BadHardwareAddress { htype, hlen });
    }
    if bytes[236..HEADER_LEN] != MAGIC {
        return Err(BadPacket::NoMagic);
    }
    // The checks above rule out the panics we know of in the decoder; catching one keeps an
    // unknown decoder bug from killing the receive loop.
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut dhcproto::Decoder::new(bytes)));
    let msg = match decoded {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => return Err(BadPacket::Decode(e.to_string())),
        Err(_) => return Err(BadPacket::Decode("decoder panicked".into())),
    };
    if msg.opcode() != Opcode::BootRequest {
        return Err(BadPacket::NotRequest(u8::from(msg.opcode())));
    }
    match message_type(&msg) {
        None => Err(BadPacket::NoMessageType),
        Some(
            MessageType::Discover
            | MessageType::Request
            | MessageType::Decline
            | MessageType::Release
            | MessageType::Inform,
        ) => Ok(msg),
        Some(other) => Err(BadPacket::NotClientType(other)),
    }
}

/// Option 53, if present.
pub fn message_type(msg: &Message) -> Option<MessageType> {
    match msg.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

/// The DHCP message (header and options, without IP and UDP headers) the client accepts,
/// from its option 57. RFC 2132 §9.10 gives option 57 as the largest message the client
/// accepts, minimum 576; whether IP and UDP headers count is read differently by clients and
/// servers, so we count them, which is the smaller and therefore safe reading. Values below
/// 576 are illegal and read as 576.
pub fn max_message_len(request: &Message) -> usize {
    let declared = match request.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => usize::from(*n),
        _ => MIN_DATAGRAM,
    };
    declared.max(MIN_DATAGRAM) - IP_UDP_HEADERS
}

/// Bytes one option takes on the wire (code, length and data; long options split per RFC 3396).
pub fn option_len(opt: &DhcpOption) -> usize {
    let mut buf = Vec::new();
    match opt.encode(&mut Encoder::new(&mut buf)) {
        Ok(()) => buf.len(),
        Err(_) => usize::MAX / 4,
    }
}

/// Encodes `header` (whose own options are ignored) followed by `options` in the given order,
/// the End option, and padding up to the BOOTP minimum.
pub fn encode(header: &Message, options: &[&DhcpOption]) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    let mut head = header.clone();
    // An empty option map encodes as nothing at all, leaving us the options area.
    head.opts_mut().clear();
    let mut buf = Vec::with_capacity(MIN_MESSAGE_LEN + 64);
    let mut e = Encoder::new(&mut buf);
    head.encode(&mut e)?;
    for opt in options {
        opt.encode(&mut e)?;
    }
    DhcpOption::End.encode(&mut e)?;
    if buf.len() < MIN_MESSAGE_LEN {
        buf.resize(MIN_MESSAGE_LEN, 0);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;
    use std::net::Ipv4Addr;

    fn discover() -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 1, 2, 3],
        );
        m.set_flags(Flags::default());
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn accepts_a_discover() {
        let msg = decode_request(&discover()).unwrap();
        assert_eq!(message_type(&msg), Some(MessageType::Discover));
    }

    #[test]
    fn refuses_malformed_headers() {
        let good = discover();
        assert_eq!(decode_request(&good[..100]), Err(BadPacket::TooShort(100)));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(decode_request(&reply), Err(BadPacket::NotRequest(2)));
        let mut long_hw = good.clone();
        long_hw[2] = 200;
        assert!(matches!(decode_request(&long_hw), Err(BadPacket::BadHardwareAddress { .. })));
        let mut cookie = good.clone();
        cookie[236] = 0;
        assert_eq!(decode_request(&cookie), Err(BadPacket::NoMagic));
        let bootp = &good[..HEADER_LEN];
        assert_eq!(decode_request(bootp), Err(BadPacket::NoMessageType));
    }

    #[test]
    fn random_options_never_panic() {
        // A header that passes every check, followed by pseudo-random option bytes.
        let head = &discover()[..HEADER_LEN];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..20_000 {
            let mut pkt = head.to_vec();
            for _ in 0..(round % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                pkt.push((x >> 24) as u8);
            }
            let _ = decode_request(&pkt);
        }
    }

    #[test]
    fn option_57_is_a_datagram_size_with_a_576_floor() {
        let mut m = Message::default();
        assert_eq!(max_message_len(&m), 548);
        m.opts_mut().insert(DhcpOption::MaxMessageSize(1472));
        assert_eq!(max_message_len(&m), 1444);
        m.opts_mut().insert(DhcpOption::MaxMessageSize(300));
        assert_eq!(max_message_len(&m), 548);
    }

    #[test]
    fn encodes_options_in_the_given_order_and_pads() {
        let header = Message::default();
        let a = DhcpOption::MessageType(MessageType::Offer);
        let b = DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1));
        let bytes = encode(&header, &[&a, &b]).unwrap();
        assert_eq!(bytes.len(), MIN_MESSAGE_LEN);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 10], &[53, 1, 2, 54, 4, 10, 0, 0, 1, 255]);
        let back = Message::decode(&mut dhcproto::Decoder::new(&bytes)).unwrap();
        assert_eq!(back.opts().get(OptionCode::ServerIdentifier), Some(&b));
    }
}
