//! The reply to one DHCP request, and where it goes.
//!
//! In: the request, the client as `client::from_dhcp` identified it, `decide`'s decision, and
//! what the lease bookkeeping settled (server mode). Out: the reply message with its options in
//! wire order, or `None` when this request gets no answer. What a machine boots is `decide`'s
//! call; this module only says it in DHCP (which field, which option, which echo each firmware
//! needs, see docs/firmware.md#what-a-reply-must-carry) and keeps the reply within the client's
//! size limit.
//!
//! Architecture invariant: pure. No sockets, no clock, no lease table; everything arrives as
//! arguments, so every reply is unit-tested from request bytes.

use super::wire;
use crate::arch::Firmware;
use crate::catalog::{DhcpMode, DhcpSettings};
use crate::client::Client;
use crate::decide::{Decision, Outcome, Transport};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use std::net::{Ipv4Addr, SocketAddrV4};

pub const SERVER_PORT: u16 = 67;
pub const PXE_PORT: u16 = 4011;
pub const CLIENT_PORT: u16 = 68;

/// PXE vendor options (option 43): PXE_DISCOVERY_CONTROL (sub-option 6) = 8, "a boot file
/// name is in this offer: download it, no boot-server discovery or menu", then End.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];
/// iPXE's encapsulated options (option 175): `no-pxedhcp` (176) = 1, so iPXE does not wait
/// ~3 s for ProxyDHCP offers after ours (docs/firmware.md#ipxe-wait-times).
pub const IPXE_ENCAPSULATED: [u8; 3] = [176, 1, 1];

/// Which of our sockets a request arrived on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Port {
    /// Port 67: DHCP, and ProxyDHCP offers.
    Dhcp,
    /// Port 4011: the PXE boot-server (ProxyDHCP) port.
    Pxe,
}

/// What the lease bookkeeping settled for a server-mode request on port 67.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Offer (DISCOVER) or acknowledge (REQUEST) this address.
    Address { ip: Ipv4Addr, lease_secs: u32 },
    /// Refuse the REQUEST with a NAK, saying why.
    Refused(String),
}

/// Everything besides the request, the client and the decision that shapes a reply.
#[derive(Clone, Debug)]
pub struct Params<'a> {
    pub mode: DhcpMode,
    pub port: Port,
    /// Our address: `siaddr`, option 54, option 66.
    pub server: Ipv4Addr,
    /// Base of HTTP URLs, without a trailing slash.
    pub http_base: &'a str,
    pub settings: &'a DhcpSettings,
    pub grant: Option<&'a Grant>,
}

/// The boot program or script a reply names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootInfo {
    /// A file on our TFTP server (`siaddr`).
    Tftp { file: String },
    /// A URL (UEFI HTTP Boot, or iPXE's script).
    Http { url: String },
}

impl BootInfo {
    /// The file name or URL, as the reply carries it.
    pub fn name(&self) -> &str {
        match self {
            BootInfo::Tftp { file } => file,
            BootInfo::Http { url } => url,
        }
    }
}

/// What `decide`'s DHCP-stage outcome hands out, if anything.
pub fn boot_info(decision: &Decision, http_base: &str) -> Option<BootInfo> {
    match &decision.outcome {
        Outcome::BootFile { file, transport: Transport::Tftp } => {
            Some(BootInfo::Tftp { file: file.file_name().to_string() })
        }
        Outcome::BootFile { file, transport: Transport::Http } => {
            Some(BootInfo::Http { url: format!("{http_base}/{}", file.file_name()) })
        }
        Outcome::IpxeScript => Some(BootInfo::Http { url: format!("{http_base}/boot.ipxe") }),
        Outcome::BootImage { .. } => {
            let (mac, arch) = (decision.machine.mac?, decision.arch?);
            Some(BootInfo::Http { url: format!("{http_base}/{}", crate::boot_image::url_path(mac, arch)) })
        }
        // The remaining outcomes belong to later stages; at the DHCP stage they mean nothing to hand out.
        Outcome::Ignore { .. } | Outcome::Boot { .. } | Outcome::Menu { .. } | Outcome::Local => None,
    }
}

/// A reply ready to send.
#[derive(Clone, Debug)]
pub struct Reply {
    pub kind: MessageType,
    /// Header and options (dhcproto's option map is unordered; `order` is the wire order).
    pub message: Message,
    pub order: Vec<OptionCode>,
    pub boot: Option<BootInfo>,
    /// Options left out to stay within the client's size limit.
    pub dropped: Vec<OptionCode>,
}

impl Reply {
    pub fn option(&self, code: OptionCode) -> Option<&DhcpOption> {
        self.message.opts().get(code)
    }

    /// The datagram payload.
    pub fn encode(&self) -> Vec<u8> {
        let opts: Vec<&DhcpOption> = self.order.iter().filter_map(|c| self.message.opts().get(*c)).collect();
        // Every option we build encodes; an error here would be a bug in the option values.
        wire::encode(&self.message, &opts).unwrap_or_default()
    }
}

/// Builds the reply to `req`, or `None` when it gets none.
///
/// - `off`: never.
/// - port 4011 (either mode): DISCOVER, REQUEST and INFORM get a ProxyDHCP ACK.
/// - `proxy` on port 67: DISCOVER gets a ProxyDHCP OFFER, INFORM and a REQUEST naming us as
///   server get a ProxyDHCP ACK. Only boot clients whose decision hands out something.
/// - `server` on port 67: DISCOVER with a granted address gets an OFFER, REQUEST an ACK or a
///   NAK (none when it names another server), INFORM an ACK without address; DECLINE and
///   RELEASE none. Every client gets its address; boot information only when `decide` hands
///   out something.
pub fn build(req: &Message, client: &Client, decision: &Decision, p: &Params<'_>) -> Option<Reply> {
    let t = wire::message_type(req)?;
    let boot = boot_info(decision, p.http_base);
    match (p.mode, p.port) {
        (DhcpMode::Off, _) => None,
        (_, Port::Pxe) => match t {
            MessageType::Discover | MessageType::Request | MessageType::Inform => {
                proxy(req, client, p, boot?, MessageType::Ack)
            }
            _ => None,
        },
        (DhcpMode::Proxy, Port::Dhcp) => match t {
            MessageType::Discover => proxy(req, client, p, boot?, MessageType::Offer),
            MessageType::Request if server_id(req) == Some(p.server) => proxy(req, client, p, boot?, MessageType::Ack),
            MessageType::Inform => proxy(req, client, p, boot?, MessageType::Ack),
            _ => None,
        },
        (DhcpMode::Server, Port::Dhcp) => match (t, p.grant) {
            (MessageType::Discover, Some(Grant::Address { ip, lease_secs })) => {
                Some(leased(req, client, decision, p, boot, MessageType::Offer, *ip, Some(*lease_secs)))
            }
            (MessageType::Request, _) if server_id(req).is_some_and(|s| s != p.server) => None,
            (MessageType::Request, Some(Grant::Address { ip, lease_secs })) => {
                Some(leased(req, client, decision, p, boot, MessageType::Ack, *ip, Some(*lease_secs)))
            }
            (MessageType::Request, Some(Grant::Refused(why))) => Some(nak(req, p, why)),
            (MessageType::Inform, _) => {
                Some(leased(req, client, decision, p, boot, MessageType::Ack, Ipv4Addr::UNSPECIFIED, None))
            }
            _ => None,
        },
    }
}

/// Option 54 of a request.
pub fn server_id(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// Where the reply goes (RFC 2131 §4.1). `source` is where the request came from.
///
/// A reply to a client without an address is broadcast even when RFC 2131 allows unicast to
/// `yiaddr`: that unicast needs an ARP entry for an address the client does not answer for
/// yet, and setting one takes CAP_NET_ADMIN (ioctl SIOCSARP) or a raw socket. Every client
/// accepts the broadcast.
pub fn destination(req: &Message, reply: &Reply, port: Port, source: SocketAddrV4, client_port: u16) -> SocketAddrV4 {
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, client_port);
    if port == Port::Pxe {
        // PXE clients talk to 4011 from an address they already have; answer where they are.
        return if source.ip().is_unspecified() {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, source.port())
        } else {
            source
        };
    }
    if !req.giaddr().is_unspecified() {
        return SocketAddrV4::new(req.giaddr(), SERVER_PORT);
    }
    if reply.kind == MessageType::Nak {
        return broadcast;
    }
    if !req.ciaddr().is_unspecified() {
        return SocketAddrV4::new(req.ciaddr(), client_port);
    }
    broadcast
}

/// Boot clients a ProxyDHCP server answers. U-Boot is answered although stock U-Boot ignores
/// proxy offers (docs/firmware.md#u-boot-behind-proxydhcp): the answer is harmless, and builds
/// that read it boot.
fn is_boot_client(fw: Firmware) -> bool {
    matches!(fw, Firmware::BiosPxe | Firmware::UefiPxe | Firmware::UefiHttp | Firmware::Ipxe { .. } | Firmware::Uboot)
}

fn is_pxe_class(client: &Client) -> bool {
    client.vendor_class.as_deref().is_some_and(|v| v.starts_with("PXEClient"))
}

/// A new reply header for `req`: same transaction, hardware address, flags and relay.
fn header(req: &Message) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(req.xid(), unspecified, unspecified, unspecified, req.giaddr(), req.chaddr());
    m.set_opcode(Opcode::BootReply).set_htype(req.htype()).set_flags(req.flags());
    m
}

/// Options under construction, each with its drop rank (0 = never dropped; higher goes first).
struct Opts(Vec<(DhcpOption, u8)>);

impl Opts {
    fn push(&mut self, opt: DhcpOption, rank: u8) {
        self.0.push((opt, rank));
    }

    /// Options every reply echoes: client identifier (RFC 6842) and relay agent information
    /// (RFC 3046).
    fn echoes(&mut self, req: &Message) {
        for code in [OptionCode::ClientIdentifier, OptionCode::RelayAgentInformation] {
            if let Some(o) = req.opts().get(code) {
                self.push(o.clone(), 0);
            }
        }
    }
}

/// The ProxyDHCP reply: boot information only, no address and no lease options.
fn proxy(req: &Message, client: &Client, p: &Params<'_>, boot: BootInfo, kind: MessageType) -> Option<Reply> {
    if !is_boot_client(client.firmware) {
        return None;
    }
    let mut m = header(req);
    if kind == MessageType::Ack {
        m.set_ciaddr(req.ciaddr());
    }
    let mut opts = Opts(vec![(DhcpOption::MessageType(kind), 0), (DhcpOption::ServerIdentifier(p.server), 0)]);
    add_boot(&mut m, &mut opts, req, client, p, &boot, true);
    opts.echoes(req);
    Some(finish(req, m, opts, kind, Some(boot)))
}

/// An OFFER or ACK of server mode. `ip` is unspecified for INFORM, which also gets no lease
/// times (RFC 2131 §4.3.5).
#[allow(clippy::too_many_arguments)]
fn leased(
    req: &Message,
    client: &Client,
    decision: &Decision,
    p: &Params<'_>,
    boot: Option<BootInfo>,
    kind: MessageType,
    ip: Ipv4Addr,
    lease_secs: Option<u32>,
) -> Reply {
    let mut m = header(req);
    m.set_yiaddr(ip);
    if kind == MessageType::Ack {
        m.set_ciaddr(req.ciaddr());
    }
    let s = p.settings;
    let mut opts = Opts(vec![(DhcpOption::MessageType(kind), 0), (DhcpOption::ServerIdentifier(p.server), 0)]);
    if let Some(secs) = lease_secs {
        opts.push(DhcpOption::AddressLeaseTime(secs), 0);
        opts.push(DhcpOption::Renewal(secs / 2), 3);
        opts.push(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32), 3);
    }
    if let Some(subnet) = s.subnet {
        opts.push(DhcpOption::SubnetMask(subnet.mask()), 0);
    }
    if let Some(router) = s.router {
        opts.push(DhcpOption::Router(vec![router]), 1);
    }
    if !s.dns.is_empty() {
        opts.push(DhcpOption::DomainNameServer(s.dns.clone()), 2);
    }
    if let Some(domain) = &s.domain {
        opts.push(DhcpOption::DomainName(domain.clone()), 7);
    }
    if decision.machine.known {
        opts.push(DhcpOption::Hostname(decision.machine.hostname.clone()), 4);
    }
    if let Some(b) = &boot {
        add_boot(&mut m, &mut opts, req, client, p, b, false);
    }
    opts.echoes(req);
    finish(req, m, opts, kind, boot)
}

fn nak(req: &Message, p: &Params<'_>, why: &str) -> Reply {
    let mut m = header(req);
    if !req.giaddr().is_unspecified() {
        // The relay must broadcast it: the client has no address we could name.
        m.set_flags(Flags::default().set_broadcast());
    }
    let mut opts =
        Opts(vec![(DhcpOption::MessageType(MessageType::Nak), 0), (DhcpOption::ServerIdentifier(p.server), 0)]);
    opts.push(DhcpOption::Message(why.to_string()), 8);
    opts.echoes(req);
    finish(req, m, opts, MessageType::Nak, None)
}

/// Boot information: `siaddr`, the file field, options 66/67, the vendor-class echo (60), PXE
/// vendor options (43), the client's UUID (97) and iPXE's options (175).
fn add_boot(
    m: &mut Message,
    opts: &mut Opts,
    req: &Message,
    client: &Client,
    p: &Params<'_>,
    boot: &BootInfo,
    proxy: bool,
) {
    m.set_siaddr(p.server);
    let name = boot.name();
    // The file field holds 128 bytes with its NUL; a longer URL travels in option 67 only.
    let in_file_field = name.len() < 128;
    if in_file_field {
        m.set_fname_str(name);
    }
    opts.push(DhcpOption::BootfileName(name.as_bytes().to_vec()), if in_file_field { 5 } else { 0 });
    if let BootInfo::Tftp { .. } = boot {
        opts.push(DhcpOption::TFTPServerName(p.server.to_string().into_bytes()), 6);
    }
    // UEFI HTTP Boot only takes an offer that echoes HTTPClient; PXE clients (iPXE among
    // them) look for PXEClient; a proxy offer is recognised by PXEClient whatever the client.
    let class: Option<&[u8]> = if client.firmware == Firmware::UefiHttp {
        Some(b"HTTPClient")
    } else if is_pxe_class(client) || proxy {
        Some(b"PXEClient")
    } else {
        None
    };
    if let Some(c) = class {
        opts.push(DhcpOption::ClassIdentifier(c.to_vec()), 0);
    }
    if is_pxe_class(client) && client.firmware != Firmware::UefiHttp {
        opts.push(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()), 0);
        // PXE servers return the client's UUID when it sent one.
        if let Some(uuid @ DhcpOption::ClientMachineIdentifier(_)) = req.opts().get(OptionCode::ClientMachineIdentifier)
        {
            opts.push(uuid.clone(), 0);
        }
    }
    if matches!(client.firmware, Firmware::Ipxe { .. }) || client.ipxe_features {
        opts.push(DhcpOption::Unknown(UnknownOption::new(OptionCode::Unknown(175), IPXE_ENCAPSULATED.to_vec())), 0);
    }
}

/// Orders the options (53 and 54 first, then the client's parameter request list order, then
/// ours, relay information last as RFC 3046 requires) and drops the least needed ones until
/// the message fits the client's limit.
fn finish(req: &Message, mut m: Message, opts: Opts, kind: MessageType, boot: Option<BootInfo>) -> Reply {
    struct Item {
        index: usize,
        opt: DhcpOption,
        rank: u8,
        len: usize,
    }
    let budget = wire::max_message_len(req).saturating_sub(wire::HEADER_LEN + 1);
    let mut items: Vec<Item> = (opts.0.into_iter().enumerate())
        .map(|(index, (opt, rank))| Item { index, len: wire::option_len(&opt), opt, rank })
        .collect();
    let mut total: usize = items.iter().map(|o| o.len).sum();
    let mut out = Vec::new();
    while total > budget {
        // The highest rank goes first; among equals, the one added last.
        let victim = items.iter().enumerate().filter(|(_, o)| o.rank > 0).max_by_key(|(_, o)| (o.rank, o.index));
        let Some((at, _)) = victim else { break };
        let item = items.remove(at);
        total -= item.len;
        out.push(item);
    }
    // Dropping in rank order may have taken out more than needed (small options before the
    // one big one): put back what fits, most needed first.
    out.sort_by_key(|o| (o.rank, o.index));
    let mut dropped = Vec::new();
    for item in out {
        if total + item.len <= budget {
            total += item.len;
            items.push(item);
        } else {
            dropped.push(OptionCode::from(&item.opt));
        }
    }
    let prl: Vec<OptionCode> = match req.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => l.clone(),
        _ => Vec::new(),
    };
    items.sort_by_key(|o| match OptionCode::from(&o.opt) {
        OptionCode::MessageType => (0, 0),
        OptionCode::ServerIdentifier => (1, 0),
        OptionCode::RelayAgentInformation => (4, 0),
        c => match prl.iter().position(|p| *p == c) {
            Some(pos) => (2, pos),
            None => (3, o.index),
        },
    });
    let order = items.iter().map(|o| OptionCode::from(&o.opt)).collect();
    for item in items {
        m.opts_mut().insert(item.opt);
    }
    Reply { kind, message: m, order, boot, dropped }
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
