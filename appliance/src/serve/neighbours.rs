//! The kernel's IPv4 neighbour (ARP) table: which MAC sent us a request from this address.
//! With `--dhcp off` a TFTP request for the site's one boot file carries no MAC; the client's
//! ARP for our address left its MAC in this table.

use appliance_core::mac::MacAddr;
use std::net::Ipv4Addr;

/// Looks `ip` up in `/proc/net/arp`.
pub fn lookup(ip: Ipv4Addr) -> Option<MacAddr> {
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse(&text, ip)
}

/// Parses `/proc/net/arp` (header line, then `IP HWtype Flags HWaddress Mask Device`).
pub fn parse(text: &str, ip: Ipv4Addr) -> Option<MacAddr> {
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags, hw) = (cols.first()?, cols.get(2)?, cols.get(3)?);
        // Flags 0x0 is an incomplete entry with a zero MAC.
        if addr.parse::<Ipv4Addr>().ok()? != ip || *flags == "0x0" {
            return None;
        }
        MacAddr::parse(hw).ok().filter(|m| m.0 != [0; 6])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_arp() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.77.0.102      0x1         0x2         52:54:00:77:00:05     *        br0\n\
                    10.77.0.103      0x1         0x0         00:00:00:00:00:00     *        br0\n";
        assert_eq!(parse(text, Ipv4Addr::new(10, 77, 0, 102)), Some(MacAddr::parse("52:54:00:77:00:05").unwrap()));
        assert_eq!(parse(text, Ipv4Addr::new(10, 77, 0, 103)), None);
        assert_eq!(parse(text, Ipv4Addr::new(10, 77, 0, 104)), None);
    }
}
