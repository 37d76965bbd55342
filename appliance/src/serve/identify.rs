//! Who is asking for a config file, by TFTP or HTTP: the MAC its path names, or else the one its
//! source address maps to (a lease, an earlier request, the kernel's neighbour table), merged
//! with what that MAC said in its DHCP. Debian's signed GRUB asks for `grub/grub.cfg` with no
//! MAC or address in the name (docs/firmware.md#the-shim-chain), so for it the source address is
//! all there is.

use super::neighbours;
use crate::install_store::InstallStore;
use crate::state::Shared;
use appliance_core::arch::Firmware;
use appliance_core::client::{Client, Learned, PathFacts};
use appliance_core::decide::{decide, Decision, Stage};
use appliance_core::mac::MacAddr;
use appliance_core::render::{self, Format, RenderError};
use std::net::Ipv4Addr;
use std::time::Instant;

/// The client behind a request for `path` (whose `facts` the caller classified) from `peer`.
/// `firmware`: who asks for such a path (U-Boot, GRUB), or `Unknown` for a boot program, which
/// the firmware itself fetches.
pub fn client(
    shared: &Shared,
    installs: &InstallStore,
    path: &str,
    facts: &PathFacts,
    firmware: Firmware,
    peer: Option<Ipv4Addr>,
    now: Instant,
) -> Client {
    let from_path = || Learned::TftpPath(path.to_string());
    let learned_mac = facts
        .mac
        .map(|m| (m, from_path()))
        .or_else(|| facts.ip.and_then(|ip| mac_for(shared, ip)).map(|m| (m, from_path())))
        .or_else(|| peer.and_then(|ip| mac_for(shared, ip).map(|m| (m, Learned::SourceAddress(ip)))));
    let mut client = Client::new(firmware).learn_from_path(path, facts, learned_mac);
    client.ip = peer;
    if let Some(dhcp) = client.mac.and_then(|m| shared.recalled_dhcp(m, now)) {
        client.merge_overheard(&dhcp);
        // A config request comes from U-Boot or GRUB, whatever the firmware said in DHCP;
        // a boot file request (`Unknown` here) is the firmware itself.
        if firmware != Firmware::Unknown {
            client.firmware = firmware;
        }
    }
    if let Some(mac) = client.mac {
        client.ipxe_chained = shared.chained(mac, now);
        // Installed machines boot their disk (`after_install: local`); a `stat` of the install log.
        client.installed = installs.installed(mac);
    }
    client
}

/// The MAC behind an address: what the daemon learned, else the kernel's neighbour table.
pub fn mac_for(shared: &Shared, ip: Ipv4Addr) -> Option<MacAddr> {
    shared.mac_for_ip(ip).or_else(|| neighbours::lookup(ip))
}

/// The config file a request for `path` (with `facts`, asking at `stage` for `format`) from
/// `peer` gets: the decision, and the text (`None`: not served to this client, so U-Boot or GRUB
/// moves on to its next name).
pub fn config_file(
    shared: &Shared,
    installs: &InstallStore,
    path: &str,
    facts: &PathFacts,
    (stage, format): (Stage, Format),
    peer: Option<Ipv4Addr>,
) -> Result<(Decision, Option<String>), RenderError> {
    let firmware = if format == Format::Grub { Firmware::Grub } else { Firmware::Uboot };
    let client = client(shared, installs, path, facts, firmware, peer, Instant::now());
    let catalog = shared.catalog();
    let decision = decide(&catalog, &client, stage);
    let text = render::render(&catalog, &decision, &shared.server(), format)?;
    Ok((decision, text))
}
