//! Pure TFTP wire codec: decode and encode RRQ, WRQ, DATA, ACK, ERROR and
//! OACK packets (RFC 1350, RFC 2347).
//!
//! This module owns the byte layout only. It must not do I/O, keep state,
//! negotiate options or interpret file names; it never allocates on the
//! DATA/ACK hot path (those decode to borrowed slices and encode in place).

use std::borrow::Cow;
use std::fmt;

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Size of the DATA header (opcode + block number).
pub const DATA_HEADER: usize = 4;

/// Transfer mode named in a request. Mode names are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    NetAscii,
    Octet,
    Mail,
    /// Anything else, kept so the server can answer with an ERROR.
    Other(String),
}

impl Mode {
    fn parse(s: &str) -> Mode {
        if s.eq_ignore_ascii_case("octet") {
            Mode::Octet
        } else if s.eq_ignore_ascii_case("netascii") {
            Mode::NetAscii
        } else if s.eq_ignore_ascii_case("mail") {
            Mode::Mail
        } else {
            Mode::Other(s.to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Mode::NetAscii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
            Mode::Other(s) => s,
        }
    }
}

/// A read or write request with its RFC 2347 options in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// File name as sent, decoded lossily from bytes; never interpreted here.
    pub filename: String,
    pub mode: Mode,
    /// `(name, value)` pairs as sent (names keep their case).
    pub options: Vec<(String, String)>,
}

/// A decoded packet. DATA payloads and ERROR messages borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: Cow<'a, str> },
    Oack { options: Vec<(String, String)> },
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    UnknownOpcode(u16),
    /// A string field (file name, mode, option) has no terminating NUL.
    Unterminated,
    /// An OACK option name without a value, or an empty option name.
    BadOption,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort => f.write_str("packet too short"),
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            DecodeError::Unterminated => f.write_str("unterminated string field"),
            DecodeError::BadOption => f.write_str("malformed option list"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Splits one NUL-terminated string off the front of `buf`.
fn take_str(buf: &[u8]) -> Result<(Cow<'_, str>, &[u8]), DecodeError> {
    let nul = buf.iter().position(|&b| b == 0).ok_or(DecodeError::Unterminated)?;
    Ok((String::from_utf8_lossy(&buf[..nul]), &buf[nul + 1..]))
}

/// Parses `name\0value\0...` pairs. With `lenient`, trailing NUL padding and a
/// dangling name without a value are ignored (some PXE ROMs pad requests).
fn parse_options(mut rest: &[u8], lenient: bool) -> Result<Vec<(String, String)>, DecodeError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        if lenient && rest.iter().all(|&b| b == 0) {
            break;
        }
        let (name, after) = take_str(rest)?;
        if name.is_empty() {
            return Err(DecodeError::BadOption);
        }
        match take_str(after) {
            Ok((value, after)) => {
                options.push((name.into_owned(), value.into_owned()));
                rest = after;
            }
            Err(_) if lenient => break,
            Err(_) => return Err(DecodeError::BadOption),
        }
    }
    Ok(options)
}

fn parse_request(body: &[u8]) -> Result<Request, DecodeError> {
    let (filename, rest) = take_str(body)?;
    let (mode, rest) = take_str(rest)?;
    let options = parse_options(rest, true)?;
    Ok(Request { filename: filename.into_owned(), mode: Mode::parse(&mode), options })
}

impl<'a> Packet<'a> {
    /// Decodes one datagram.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        if buf.len() < 2 {
            return Err(DecodeError::TooShort);
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match op {
            OP_RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            OP_WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            OP_DATA => {
                let block = read_u16(body)?;
                Ok(Packet::Data { block, data: &body[2..] })
            }
            // Trailing bytes after an ACK are tolerated (padding).
            OP_ACK => Ok(Packet::Ack { block: read_u16(body)? }),
            OP_ERROR => {
                let code = read_u16(body)?;
                let text = &body[2..];
                // A missing terminating NUL is tolerated for ERROR messages.
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                Ok(Packet::Error { code, message: String::from_utf8_lossy(&text[..end]) })
            }
            OP_OACK => Ok(Packet::Oack { options: parse_options(body, false)? }),
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }

    /// Short name of the packet type, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Rrq(_) => "RRQ",
            Packet::Wrq(_) => "WRQ",
            Packet::Data { .. } => "DATA",
            Packet::Ack { .. } => "ACK",
            Packet::Error { .. } => "ERROR",
            Packet::Oack { .. } => "OACK",
        }
    }

    /// Appends the wire form of this packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(r) => encode_request(out, OP_RRQ, r),
            Packet::Wrq(r) => encode_request(out, OP_WRQ, r),
            Packet::Data { block, data } => {
                out.extend_from_slice(&OP_DATA.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => encode_ack(out, *block),
            Packet::Error { code, message } => encode_error(out, *code, message),
            Packet::Oack { options } => encode_oack(out, options.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        }
    }
}

fn read_u16(body: &[u8]) -> Result<u16, DecodeError> {
    match body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(DecodeError::TooShort),
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn encode_request(out: &mut Vec<u8>, op: u16, r: &Request) {
    out.extend_from_slice(&op.to_be_bytes());
    push_str(out, &r.filename);
    push_str(out, r.mode.as_str());
    for (n, v) in &r.options {
        push_str(out, n);
        push_str(out, v);
    }
}

/// Appends an ACK for `block`.
pub fn encode_ack(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&OP_ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Appends an ERROR packet. NUL bytes inside `message` are dropped.
pub fn encode_error(out: &mut Vec<u8>, code: u16, message: &str) {
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Appends an OACK with the given options.
pub fn encode_oack<'s>(out: &mut Vec<u8>, options: impl IntoIterator<Item = (&'s str, &'s str)>) {
    out.extend_from_slice(&OP_OACK.to_be_bytes());
    for (n, v) in options {
        push_str(out, n);
        push_str(out, v);
    }
}

/// Writes a DATA header for `block` into the first four bytes of `pkt`
/// (the payload is expected to follow in place).
pub fn write_data_header(pkt: &mut [u8], block: u16) {
    pkt[..2].copy_from_slice(&OP_DATA.to_be_bytes());
    pkt[2..4].copy_from_slice(&block.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: &Packet<'_>) {
        let mut buf = Vec::new();
        p.encode(&mut buf);
        assert_eq!(&Packet::decode(&buf).unwrap(), p);
    }

    fn req(opts: &[(&str, &str)]) -> Request {
        Request {
            filename: "pxelinux.cfg/01-aa-bb".into(),
            mode: Mode::Octet,
            options: opts.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn round_trips() {
        round_trip(&Packet::Rrq(req(&[])));
        round_trip(&Packet::Rrq(req(&[("blksize", "1468"), ("tsize", "0")])));
        round_trip(&Packet::Wrq(req(&[("windowsize", "16")])));
        round_trip(&Packet::Data { block: 65535, data: b"hello" });
        round_trip(&Packet::Data { block: 0, data: b"" });
        round_trip(&Packet::Ack { block: 7 });
        round_trip(&Packet::Error { code: 8, message: "option negotiation refused".into() });
        round_trip(&Packet::Oack { options: vec![("tsize".into(), "123".into())] });
        round_trip(&Packet::Oack { options: vec![] });
    }

    #[test]
    fn exact_wire_bytes() {
        let mut b = Vec::new();
        encode_ack(&mut b, 0x0102);
        assert_eq!(b, [0, 4, 1, 2]);
        b.clear();
        encode_error(&mut b, 1, "File\0 not found");
        assert_eq!(b, b"\0\x05\0\x01File not found\0");
        let mut pkt = [0xffu8; 6];
        write_data_header(&mut pkt, 258);
        assert_eq!(pkt, [0, 3, 1, 2, 0xff, 0xff]);
        b.clear();
        encode_oack(&mut b, [("blksize", "512")]);
        assert_eq!(b, b"\0\x06blksize\x00512\0");
    }

    #[test]
    fn request_modes_and_case() {
        let p = Packet::decode(b"\0\x01a/b\0NetASCII\0BLKSIZE\x001024\0").unwrap();
        let Packet::Rrq(r) = p else { panic!("not rrq") };
        assert_eq!(r.filename, "a/b");
        assert_eq!(r.mode, Mode::NetAscii);
        assert_eq!(r.options, vec![("BLKSIZE".into(), "1024".into())]);
        let Packet::Rrq(r) = Packet::decode(b"\0\x01f\0bogus\0").unwrap() else { panic!() };
        assert_eq!(r.mode, Mode::Other("bogus".into()));
    }

    #[test]
    fn request_lenient_padding() {
        // Trailing NUL padding and a dangling option name are ignored.
        let p = Packet::decode(b"\0\x01f\0octet\0tsize\x000\0\0\0\0").unwrap();
        assert_eq!(p, Packet::Rrq(req_named("f", &[("tsize", "0")])));
        let p = Packet::decode(b"\0\x01f\0octet\0tsize\0").unwrap();
        assert_eq!(p, Packet::Rrq(req_named("f", &[])));
    }

    fn req_named(name: &str, opts: &[(&str, &str)]) -> Request {
        Request { filename: name.into(), ..req(opts) }
    }

    #[test]
    fn non_utf8_filename_is_lossy() {
        let Packet::Rrq(r) = Packet::decode(b"\0\x01a\xffb\0octet\0").unwrap() else { panic!() };
        assert_eq!(r.filename, "a\u{fffd}b");
    }

    #[test]
    fn error_without_nul_is_tolerated() {
        let p = Packet::decode(b"\0\x05\0\x08abc").unwrap();
        assert_eq!(p, Packet::Error { code: 8, message: "abc".into() });
    }

    #[test]
    fn malformed_rejected() {
        use DecodeError::*;
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", TooShort),
            (b"\0", TooShort),
            (b"\0\x09xx", UnknownOpcode(9)),
            (b"\0\0", UnknownOpcode(0)),
            (b"\0\x01file", Unterminated),
            (b"\0\x01file\0octet", Unterminated),
            (b"\0\x02file\0", Unterminated),
            (b"\0\x03\0", TooShort),
            (b"\0\x04\x01", TooShort),
            (b"\0\x05\0", TooShort),
            (b"\0\x06blksize\0", BadOption),
            (b"\0\x06blksize", Unterminated),
            (b"\0\x06\0\x00512\0", BadOption),
            (b"\0\x01f\0octet\0\0x\0", BadOption),
        ];
        for (bytes, want) in cases {
            assert_eq!(Packet::decode(bytes), Err(want.clone()), "{bytes:?}");
        }
    }
}
