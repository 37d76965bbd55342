//! The benchmark's two network namespaces, joined by a veth pair (`testkit::netns::Pair`): the
//! server side (`nbb0`, 10.213.0.1/16) and the client side (`nbb1`, 10.213.255.254/16). DHCP
//! is broadcast on an interface, which loopback cannot give a peer like dnsmasq; a veth pair
//! between two private namespaces can, without touching the host's own network. Removed on
//! drop; namespaces left behind by a run that was killed are removed by the next run.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use testkit::netns::{End, Pair};

const PREFIX: &str = "nbbench-";
pub const SERVER_IF: &str = "nbb0";
pub const CLIENT_IF: &str = "nbb1";
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 255, 254);

/// `nbbench-<pid>-srv` and `nbbench-<pid>-cli`.
pub fn create() -> Result<Pair> {
    let server = End { what: "srv", interface: SERVER_IF, address: SERVER_IP, prefix_len: 16 };
    let client = End { what: "cli", interface: CLIENT_IF, address: CLIENT_IP, prefix_len: 16 };
    Pair::create(PREFIX, server, client)
}

/// A command that runs `program` inside namespace `ns`, without a lifetime: the benchmark
/// stops its servers itself, and its memory and CPU figures are the program's own (the PID is
/// the program's: `ip netns exec` execs it).
pub fn command(ns: &str, program: &Path) -> Command {
    testkit::netns::command_in(ns, program, None)
}

/// Removes namespaces of earlier bench runs whose process is gone.
pub fn cleanup_stale() {
    testkit::netns::remove_stale(PREFIX);
}
