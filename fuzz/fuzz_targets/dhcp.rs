//! DHCP: any datagram through the daemon's decoding (`wire::decode_request`), client
//! identification and the whole exchange (leases, `decide`, the reply) with the core's test
//! catalog, in every mode and on both ports; every reply is encoded and must decode again.
#![no_main]

use appliance_core::catalog::DhcpMode;
use appliance_core::dhcp::exchange::{self, Context, State};
use appliance_core::dhcp::fixtures::{catalog, HTTP_BASE, SERVER};
use appliance_core::dhcp::reply::Port;
use appliance_core::dhcp::wire;
use appliance_core::render::ServerInfo;
use dhcproto::Decodable;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddrV4;
use std::sync::LazyLock;

static CATALOG: LazyLock<appliance_core::catalog::Catalog> = LazyLock::new(catalog);

fuzz_target!(|data: &[u8]| {
    let Ok(req) = wire::decode_request(data) else { return };
    let client = appliance_core::client::from_dhcp(&req);
    let server = ServerInfo::new(SERVER, HTTP_BASE.into());
    let mut state = State::default();
    for mode in [DhcpMode::Server, DhcpMode::Proxy, DhcpMode::Off] {
        for port in [Port::Dhcp, Port::Pxe] {
            let ctx = Context {
                catalog: &CATALOG,
                mode,
                port,
                server: &server,
                source: SocketAddrV4::new([10, 77, 0, 50].into(), 68),
                client_port: 68,
                now: 1_800_000_000,
            };
            let handled = exchange::handle(&mut state, &ctx, &req, &client);
            if let Some((reply, _)) = handled.reply {
                let bytes = reply.encode();
                dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&bytes)).expect("our reply decodes");
            }
        }
    }
});
