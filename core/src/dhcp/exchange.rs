//! One DHCP request, start to finish, without I/O: the lease bookkeeping of server mode
//! (offer, bind, decline, release), `decide`, the reply and its destination, and the facts the
//! caller records afterwards (an address was bound, an iPXE binary was accepted).
//!
//! Architecture invariant: pure. The daemon's socket loop (`appliance::dhcp::server`) owns the
//! state passed in here and does every side effect (sending, persisting, the daemon's per-MAC
//! memory, logging) from the returned `Handled`.
//! Policy (what a machine boots) is `decide`'s alone.

use super::leases::{Leases, Pool};
use super::reply::{self, Grant, Params, Port, Reply};
use super::wire;
use crate::catalog::{Catalog, DhcpMode};
use crate::client::Client;
use crate::decide::{decide, Decision, Outcome, Stage};
use crate::mac::MacAddr;
use crate::render::ServerInfo;
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// How many MACs may wait for "did it take the iPXE binary we offered?" at once.
const MAX_PENDING_CHAINS: usize = 4096;
/// How long such a wait lasts (Unix seconds).
const PENDING_CHAIN_SECS: u64 = 60;

/// What the DHCP service keeps between requests.
#[derive(Debug, Default)]
pub struct State {
    pub leases: Leases,
    /// MACs we offered an iPXE binary, with the offer's transaction id and time: when the same
    /// transaction continues with a REQUEST (to us or, in proxy mode, to the site's server),
    /// the client took the binary and the next iPXE request from that MAC is the chained one.
    offered_ipxe: HashMap<MacAddr, (u32, u64)>,
}

impl State {
    pub fn new(leases: Leases) -> Self {
        State { leases, offered_ipxe: HashMap::new() }
    }
}

/// The request's circumstances.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub mode: DhcpMode,
    pub port: Port,
    pub server: &'a ServerInfo,
    /// Where the request came from.
    pub source: SocketAddrV4,
    /// The port replies to clients go to (68 but in tests).
    pub client_port: u16,
    /// Unix seconds.
    pub now: u64,
}

/// What happened, for the caller to act on and log.
#[derive(Debug)]
pub struct Handled {
    pub kind: MessageType,
    pub decision: Option<Decision>,
    pub reply: Option<(Reply, SocketAddrV4)>,
    /// The lease table changed in a way worth persisting (bind, decline, release).
    pub leases_changed: bool,
    /// An address was bound to the client (`Shared::remember_ip`).
    pub bound: Option<Ipv4Addr>,
    /// The client accepted an iPXE binary (`Shared::mark_chained`).
    pub chained: bool,
    /// Why nothing or less than usual was answered, for the log.
    pub note: Option<String>,
    /// A server-side condition the operator should see (pool exhausted).
    pub warning: Option<String>,
}

impl Handled {
    fn new(kind: MessageType) -> Self {
        Handled {
            kind,
            decision: None,
            reply: None,
            leases_changed: false,
            bound: None,
            chained: false,
            note: None,
            warning: None,
        }
    }
}

/// Handles one decoded request (see `wire::decode_request`) from `client`
/// (`client::from_dhcp`, with `ipxe_chained` already filled in).
pub fn handle(state: &mut State, ctx: &Context<'_>, req: &Message, client: &Client) -> Handled {
    let Some(kind) = wire::message_type(req) else {
        return Handled::new(MessageType::Unknown(0));
    };
    let mut out = Handled::new(kind);
    if ctx.mode == DhcpMode::Off {
        out.note = Some("dhcp off: overheard only".into());
        return out;
    }
    let decision = decide(ctx.catalog, client, Stage::Dhcp);
    let settings = &ctx.catalog.settings().dhcp;
    let grant = if ctx.mode == DhcpMode::Server && ctx.port == Port::Dhcp {
        lease_step(state, ctx, req, client, kind, &mut out)
    } else {
        None
    };
    let params = Params {
        mode: ctx.mode,
        port: ctx.port,
        server: ctx.server.address,
        http_base: &ctx.server.http_base,
        settings,
        grant: grant.as_ref(),
    };
    let reply = reply::build(req, client, &decision, &params);
    chain_step(state, ctx, req, client, &decision, reply.as_ref(), &mut out);
    if let Some(r) = &reply {
        if r.kind == MessageType::Ack && !r.message.yiaddr().is_unspecified() {
            out.bound = Some(r.message.yiaddr());
        }
    }
    let ignored = match &decision.outcome {
        Outcome::Ignore { reason } => Some(reason),
        _ => None,
    };
    if out.note.is_none() {
        out.note = match (&reply, ignored) {
            (Some(r), Some(reason)) if r.boot.is_none() => Some(format!("address only: {reason}")),
            (Some(_), _) => None,
            (None, Some(reason)) => Some(reason.to_string()),
            (None, None) if ctx.mode == DhcpMode::Proxy => Some("proxy mode: not ours to answer".into()),
            (None, None) => Some("no answer for this message".into()),
        };
    }
    out.reply = reply.map(|r| {
        let dest = reply::destination(req, &r, ctx.port, ctx.source, ctx.client_port);
        (r, dest)
    });
    out.decision = Some(decision);
    out
}

/// Server mode, port 67: what the lease table says about this request.
fn lease_step(
    state: &mut State,
    ctx: &Context<'_>,
    req: &Message,
    client: &Client,
    kind: MessageType,
    out: &mut Handled,
) -> Option<Grant> {
    let leases = &mut state.leases;
    leases.expire(ctx.now);
    let Some(mac) = client.mac else {
        out.note = Some("no Ethernet hardware address: no lease".into());
        return None;
    };
    let settings = &ctx.catalog.settings().dhcp;
    let Some(pool) = Pool::new(settings, ctx.catalog.fixed_addresses(), ctx.server.address) else {
        out.note = Some("server mode without dhcp.subnet and dhcp.pool: no addresses to lease".into());
        return None;
    };
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() && !pool.subnet.contains(giaddr) {
        out.note = Some(format!("relayed from {giaddr}, outside the subnet we serve"));
        return None;
    }
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    // A request naming no server is for whoever has the client's lease: in our subnet, us.
    let ours = !matches!(reply::server_id(req), Some(s) if s != ctx.server.address);
    match kind {
        MessageType::Discover => match leases.offer(&pool, mac, requested, ctx.now) {
            Ok(ip) => Some(Grant::Address { ip, lease_secs: pool.lease_secs }),
            Err(e) => {
                out.note = Some(format!("no address: {e}"));
                out.warning = Some(format!("no address for {mac}: {e}"));
                None
            }
        },
        MessageType::Request if !ours => {
            leases.withdraw_offer(mac);
            out.note = Some("the client chose another server's offer".into());
            None
        }
        MessageType::Request => {
            let ciaddr = req.ciaddr();
            let Some(ip) = requested.or((!ciaddr.is_unspecified()).then_some(ciaddr)) else {
                out.note = Some("REQUEST names no address (no option 50, no ciaddr)".into());
                return None;
            };
            match leases.bind(&pool, mac, ip, ctx.now) {
                Ok(g) => {
                    out.leases_changed = true;
                    Some(Grant::Address { ip: g.ip, lease_secs: g.lease_secs })
                }
                Err(e) => {
                    out.note = Some(format!("NAK: {e}"));
                    Some(Grant::Refused(e.to_string()))
                }
            }
        }
        MessageType::Decline if ours => {
            if let Some(ip) = requested {
                out.leases_changed = leases.decline(mac, ip, ctx.now);
                out.note = Some(format!("declined {ip}: quarantined"));
            }
            None
        }
        MessageType::Release if ours => {
            out.leases_changed = leases.release(mac, req.ciaddr(), ctx.now);
            out.note = Some(format!("released {}", req.ciaddr()));
            None
        }
        _ => None,
    }
}

/// Remembers iPXE binaries we offered, and reports when the client took one.
fn chain_step(
    state: &mut State,
    ctx: &Context<'_>,
    req: &Message,
    client: &Client,
    decision: &Decision,
    reply: Option<&Reply>,
    out: &mut Handled,
) {
    let Some(mac) = client.mac else { return };
    let pending = &mut state.offered_ipxe;
    if out.kind == MessageType::Request && pending.get(&mac).is_some_and(|(xid, _)| *xid == req.xid()) {
        pending.remove(&mac);
        out.chained = true;
    }
    let Some(r) = reply else { return };
    let ipxe = matches!(&decision.outcome, Outcome::BootFile { file, .. } if file.is_ipxe());
    if !ipxe || r.boot.is_none() {
        return;
    }
    match r.kind {
        MessageType::Ack => {
            pending.remove(&mac);
            out.chained = true;
        }
        MessageType::Offer => {
            if pending.len() >= MAX_PENDING_CHAINS {
                let now = ctx.now;
                pending.retain(|_, (_, at)| now.saturating_sub(*at) < PENDING_CHAIN_SECS);
                if pending.len() >= MAX_PENDING_CHAINS {
                    pending.clear();
                }
            }
            pending.insert(mac, (req.xid(), ctx.now));
        }
        _ => {}
    }
}
