//! Address allocation for server mode: which address a MAC is offered, whether a requested
//! address may be bound, and what DECLINE and RELEASE do to the table.
//!
//! Rules, in order of strength: a fixed address from the MAC database belongs to its machine
//! only; an address leased (or recently offered) to one MAC is never given to another until the
//! lease expires; a declined address rests in quarantine; a MAC gets back its own lease when it
//! can. There is no ICMP probe before an offer: it costs the client ~3 s per offer
//! (docs/firmware.md#dhcp-address-probes), and a client that finds the address in use says so
//! with DECLINE.
//!
//! Pure: no sockets, no files, no clock. Time is Unix seconds passed in by the caller, because
//! leases outlive a restart of the daemon (a monotonic clock would not). Persistence is the
//! daemon's (`appliance::dhcp::store`).

use crate::catalog::{DhcpSettings, Subnet};
use crate::mac::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// How long an offered address is held for the MAC it was offered to. OVMF takes ~3.8 s from
/// DISCOVER to REQUEST (docs/firmware.md#ovmf-pxe); a minute covers slow clients and retransmissions.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long a declined address is kept out of the pool.
pub const QUARANTINE_SECS: u64 = 600;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// Offered, not yet requested: held for the MAC until `expires`.
    Offered,
    /// Bound by an ACK until `expires`; afterwards kept as history so the MAC gets it back.
    Bound,
    /// A client reported the address in use by someone else: not handed out until `expires`.
    Declined,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// The holder; for a declined address, the client that declined it.
    pub mac: MacAddr,
    pub state: State,
    /// Unix seconds.
    pub expires: u64,
}

impl Lease {
    /// Whether the lease still keeps the address from everyone else.
    pub fn active(&self, now: u64) -> bool {
        self.expires > now
    }
}

/// What may be handed out, derived from the catalog for each request (a reload can change it).
#[derive(Clone, Debug)]
pub struct Pool {
    pub subnet: Subnet,
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub lease_secs: u32,
    fixed_by_mac: HashMap<MacAddr, Ipv4Addr>,
    fixed_by_ip: HashMap<Ipv4Addr, MacAddr>,
    /// Never handed out: our own address, the router, the subnet's network and broadcast.
    reserved: Vec<Ipv4Addr>,
}

impl Pool {
    /// `None` when the settings name no subnet or no pool (proxy-mode settings under a
    /// `--dhcp server` override, say).
    pub fn new(
        settings: &DhcpSettings,
        fixed: impl IntoIterator<Item = (MacAddr, Ipv4Addr)>,
        ours: Ipv4Addr,
    ) -> Option<Pool> {
        let subnet = settings.subnet?;
        let (first, last) = settings.pool?;
        let fixed_by_mac: HashMap<MacAddr, Ipv4Addr> = fixed.into_iter().collect();
        let fixed_by_ip = fixed_by_mac.iter().map(|(m, ip)| (*ip, *m)).collect();
        let mut reserved = vec![ours];
        reserved.extend(settings.router);
        if subnet.prefix <= 30 {
            reserved.push(Ipv4Addr::from(u32::from(subnet.network) & u32::from(subnet.mask())));
            reserved.push(subnet.broadcast());
        }
        Some(Pool { subnet, first, last, lease_secs: settings.lease_secs, fixed_by_mac, fixed_by_ip, reserved })
    }

    pub fn fixed_for(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.fixed_by_mac.get(&mac).copied()
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

/// Why an address was not offered or bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is outside the subnet we serve")]
    ForeignSubnet(Ipv4Addr),
    #[error("{ip} is the fixed address of {mac}")]
    FixedForOther { ip: Ipv4Addr, mac: MacAddr },
    #[error("this machine's fixed address is {0}")]
    HasFixed(Ipv4Addr),
    #[error("{0} is outside the pool")]
    OutsidePool(Ipv4Addr),
    #[error("{0} is reserved (our address, the router, network or broadcast)")]
    Reserved(Ipv4Addr),
    #[error("{ip} is leased to {mac}")]
    Taken { ip: Ipv4Addr, mac: MacAddr },
    #[error("{0} was declined recently")]
    Quarantined(Ipv4Addr),
    #[error("the address pool is exhausted")]
    Exhausted,
}

/// Counts of addresses by what holds them; see [`Leases::usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bound: u64,
    pub offered: u64,
    pub declined: u64,
    pub free: u64,
}

/// A bound lease, as the ACK reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub ip: Ipv4Addr,
    pub lease_secs: u32,
}

/// The lease table, one entry per address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    by_ip: BTreeMap<Ipv4Addr, Lease>,
}

impl Leases {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a table from stored entries; a later entry for the same address wins.
    pub fn from_entries(entries: impl IntoIterator<Item = Lease>) -> Self {
        Leases { by_ip: entries.into_iter().map(|l| (l.ip, l)).collect() }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The MAC's own entry (bound or offered, current or expired), if it has one.
    pub fn of_mac(&self, mac: MacAddr) -> Option<&Lease> {
        self.by_ip.values().find(|l| l.mac == mac && l.state != State::Declined)
    }

    /// Whether `mac` may have `ip` now.
    pub fn check(&self, pool: &Pool, mac: MacAddr, ip: Ipv4Addr, now: u64) -> Result<(), Refusal> {
        if !pool.subnet.contains(ip) {
            return Err(Refusal::ForeignSubnet(ip));
        }
        match pool.fixed_by_ip.get(&ip) {
            Some(owner) if *owner != mac => return Err(Refusal::FixedForOther { ip, mac: *owner }),
            Some(_) => {}
            None => {
                if let Some(fixed) = pool.fixed_for(mac) {
                    return Err(Refusal::HasFixed(fixed));
                }
                if !pool.in_range(ip) {
                    return Err(Refusal::OutsidePool(ip));
                }
            }
        }
        if pool.reserved.contains(&ip) {
            return Err(Refusal::Reserved(ip));
        }
        match self.by_ip.get(&ip) {
            Some(l) if l.state == State::Declined && l.active(now) => Err(Refusal::Quarantined(ip)),
            Some(l) if l.mac != mac && l.active(now) => Err(Refusal::Taken { ip, mac: l.mac }),
            _ => Ok(()),
        }
    }

    /// Picks an address for a DISCOVER and holds it for the MAC: its fixed address, else its
    /// own lease, else the address it asks for (option 50), else a never-used pool address,
    /// else the one whose lease expired longest ago.
    pub fn offer(
        &mut self,
        pool: &Pool,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<Ipv4Addr, Refusal> {
        if let Some(fixed) = pool.fixed_for(mac) {
            // A fixed address is the machine's only address: if someone still holds it (the
            // database changed under a running lease), the machine waits rather than getting
            // a pool address it would keep.
            self.check(pool, mac, fixed, now)?;
            self.hold(mac, fixed, now);
            return Ok(fixed);
        }
        let own = self.of_mac(mac).map(|l| l.ip);
        let candidates = own.into_iter().chain(requested);
        for ip in candidates {
            if self.check(pool, mac, ip, now).is_ok() {
                self.hold(mac, ip, now);
                return Ok(ip);
            }
        }
        let (first, last) = (u32::from(pool.first), u32::from(pool.last));
        let fresh = (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !self.by_ip.contains_key(ip) && self.check(pool, mac, *ip, now).is_ok());
        let reclaimed = || {
            self.by_ip
                .values()
                .filter(|l| l.state != State::Declined && pool.in_range(l.ip))
                .filter(|l| self.check(pool, mac, l.ip, now).is_ok())
                .min_by_key(|l| l.expires)
                .map(|l| l.ip)
        };
        let ip = fresh.or_else(reclaimed).ok_or(Refusal::Exhausted)?;
        self.hold(mac, ip, now);
        Ok(ip)
    }

    /// Binds `ip` to `mac` for a REQUEST (selecting, init-reboot, renewing or rebinding).
    pub fn bind(&mut self, pool: &Pool, mac: MacAddr, ip: Ipv4Addr, now: u64) -> Result<Grant, Refusal> {
        self.check(pool, mac, ip, now)?;
        self.forget_other(mac, ip);
        let expires = now + u64::from(pool.lease_secs);
        self.by_ip.insert(ip, Lease { ip, mac, state: State::Bound, expires });
        Ok(Grant { ip, lease_secs: pool.lease_secs })
    }

    /// A client found `ip` in use: quarantine it. Only the MAC the address was given to can
    /// decline it, so a stray DECLINE cannot take addresses out of the pool. Returns whether the
    /// table changed.
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        match self.by_ip.get_mut(&ip) {
            Some(l) if l.mac == mac && l.state != State::Declined => {
                l.state = State::Declined;
                l.expires = now + QUARANTINE_SECS;
                true
            }
            _ => false,
        }
    }

    /// The client gives `ip` up: the lease ends now. The entry stays as history, so the same
    /// MAC gets the address again while nobody else has taken it. Returns whether it changed.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        match self.by_ip.get_mut(&ip) {
            Some(l) if l.mac == mac && l.state != State::Declined && l.active(now) => {
                l.state = State::Bound;
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// The client took another server's offer: drop our hold on what we offered it.
    pub fn withdraw_offer(&mut self, mac: MacAddr) {
        self.by_ip.retain(|_, l| !(l.mac == mac && l.state == State::Offered));
    }

    /// Drops offers and quarantines that have run out. Expired bound leases stay as history.
    pub fn expire(&mut self, now: u64) {
        self.by_ip.retain(|_, l| l.state == State::Bound || l.active(now));
    }

    /// How the pool's addresses stand at `now` (for the leases gauges): active leases by state,
    /// and the pool addresses no one holds (our own address, the router, the network and
    /// broadcast addresses and other machines' fixed addresses are not free).
    pub fn usage(&self, pool: &Pool, now: u64) -> Usage {
        let mut usage = Usage::default();
        let mut taken: std::collections::BTreeSet<Ipv4Addr> =
            pool.reserved.iter().chain(pool.fixed_by_ip.keys()).copied().filter(|ip| pool.in_range(*ip)).collect();
        for l in self.by_ip.values().filter(|l| l.active(now)) {
            match l.state {
                State::Offered => usage.offered += 1,
                State::Bound => usage.bound += 1,
                State::Declined => usage.declined += 1,
            }
            if pool.in_range(l.ip) {
                taken.insert(l.ip);
            }
        }
        let size = u64::from(u32::from(pool.last).saturating_sub(u32::from(pool.first))) + 1;
        usage.free = size.saturating_sub(taken.len() as u64);
        usage
    }

    fn hold(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) {
        self.forget_other(mac, ip);
        let held = now + OFFER_HOLD_SECS;
        match self.by_ip.get_mut(&ip) {
            // Offering a client its own current lease must not shorten it.
            Some(l) if l.mac == mac && l.state == State::Bound && l.expires >= held => {}
            _ => {
                self.by_ip.insert(ip, Lease { ip, mac, state: State::Offered, expires: held });
            }
        }
    }

    /// One address per MAC: drops the MAC's entries for other addresses (not its declines).
    fn forget_other(&mut self, mac: MacAddr, keep: Ipv4Addr) {
        self.by_ip.retain(|ip, l| *ip == keep || l.mac != mac || l.state == State::Declined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::DhcpMode;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    /// 10.0.0.0/24, pool .100–.103, we are .1 and the router; mac(9) has fixed .50.
    fn pool() -> Pool {
        let settings = DhcpSettings {
            mode: DhcpMode::Server,
            subnet: Some(Subnet { network: ip("10.0.0.0"), prefix: 24 }),
            pool: Some((ip("10.0.0.100"), ip("10.0.0.103"))),
            lease_secs: 3600,
            router: Some(ip("10.0.0.1")),
            dns: vec![],
            domain: None,
        };
        Pool::new(&settings, [(mac(9), ip("10.0.0.50"))], ip("10.0.0.1")).unwrap()
    }

    #[test]
    fn offers_in_order_and_holds_offers() {
        let (p, mut l) = (pool(), Leases::new());
        assert_eq!(l.offer(&p, mac(1), None, 0), Ok(ip("10.0.0.100")));
        assert_eq!(l.offer(&p, mac(2), None, 0), Ok(ip("10.0.0.101")));
        // The same MAC asking again gets the same address.
        assert_eq!(l.offer(&p, mac(1), None, 5), Ok(ip("10.0.0.100")));
        // A requested address that is held for someone else is not given.
        assert_eq!(l.offer(&p, mac(3), Some(ip("10.0.0.100")), 5), Ok(ip("10.0.0.102")));
    }

    #[test]
    fn expired_offers_are_reclaimed_for_others() {
        let (p, mut l) = (pool(), Leases::new());
        for n in 1..=4 {
            l.offer(&p, mac(n), None, 0).unwrap();
        }
        assert_eq!(l.offer(&p, mac(5), None, 10), Err(Refusal::Exhausted));
        assert_eq!(l.offer(&p, mac(5), None, OFFER_HOLD_SECS + 1), Ok(ip("10.0.0.100")));
    }

    #[test]
    fn fixed_addresses_belong_to_their_machine() {
        let (p, mut l) = (pool(), Leases::new());
        assert_eq!(l.offer(&p, mac(9), None, 0), Ok(ip("10.0.0.50")));
        assert_eq!(l.bind(&p, mac(9), ip("10.0.0.50"), 0).unwrap().ip, ip("10.0.0.50"));
        assert_eq!(
            l.bind(&p, mac(1), ip("10.0.0.50"), 0),
            Err(Refusal::FixedForOther { ip: ip("10.0.0.50"), mac: mac(9) })
        );
        assert_eq!(l.offer(&p, mac(1), Some(ip("10.0.0.50")), 0), Ok(ip("10.0.0.100")));
        // The fixed machine asking for a pool address is told its own.
        assert_eq!(l.bind(&p, mac(9), ip("10.0.0.101"), 0), Err(Refusal::HasFixed(ip("10.0.0.50"))));
    }

    #[test]
    fn bind_refuses_foreign_taken_and_reserved_addresses() {
        let (p, mut l) = (pool(), Leases::new());
        assert_eq!(l.bind(&p, mac(1), ip("192.168.1.5"), 0), Err(Refusal::ForeignSubnet(ip("192.168.1.5"))));
        assert_eq!(l.bind(&p, mac(1), ip("10.0.0.7"), 0), Err(Refusal::OutsidePool(ip("10.0.0.7"))));
        l.bind(&p, mac(1), ip("10.0.0.100"), 0).unwrap();
        assert_eq!(l.bind(&p, mac(2), ip("10.0.0.100"), 10), Err(Refusal::Taken { ip: ip("10.0.0.100"), mac: mac(1) }));
        // After the lease expires the address is free again.
        assert!(l.bind(&p, mac(2), ip("10.0.0.100"), 3601).is_ok());
    }

    #[test]
    fn usage_counts_held_addresses_and_what_is_left_in_the_pool() {
        let (p, mut l) = (pool(), Leases::new());
        assert_eq!(l.usage(&p, 0), Usage { free: 4, ..Usage::default() });
        l.offer(&p, mac(1), None, 0).unwrap();
        l.bind(&p, mac(2), ip("10.0.0.101"), 0).unwrap();
        // A fixed address outside the pool is bound but takes nothing from it.
        l.bind(&p, mac(9), ip("10.0.0.50"), 0).unwrap();
        l.decline(mac(1), ip("10.0.0.100"), 1);
        assert_eq!(l.usage(&p, 1), Usage { bound: 2, offered: 0, declined: 1, free: 2 });
        // Expired leases hold nothing.
        assert_eq!(l.usage(&p, 3601), Usage { free: 4, ..Usage::default() });
    }

    #[test]
    fn one_address_per_mac() {
        let (p, mut l) = (pool(), Leases::new());
        l.bind(&p, mac(1), ip("10.0.0.100"), 0).unwrap();
        l.bind(&p, mac(1), ip("10.0.0.102"), 0).unwrap();
        assert_eq!(l.iter().filter(|x| x.mac == mac(1)).count(), 1);
        assert_eq!(l.of_mac(mac(1)).unwrap().ip, ip("10.0.0.102"));
    }

    #[test]
    fn decline_quarantines_and_release_frees() {
        let (p, mut l) = (pool(), Leases::new());
        let a = l.offer(&p, mac(1), None, 0).unwrap();
        assert!(!l.decline(mac(2), a, 0), "only the holder can decline");
        assert!(l.decline(mac(1), a, 0));
        assert_eq!(l.check(&p, mac(1), a, 1), Err(Refusal::Quarantined(a)));
        assert_ne!(l.offer(&p, mac(1), None, 1).unwrap(), a);
        assert_eq!(l.offer(&p, mac(3), Some(a), QUARANTINE_SECS + 1), Ok(a));

        let b = l.bind(&p, mac(4), ip("10.0.0.103"), 0).unwrap().ip;
        assert!(l.check(&p, mac(5), b, 1).is_err());
        assert!(l.release(mac(4), b, 1));
        assert!(l.check(&p, mac(5), b, 1).is_ok());
        // Its old holder still gets it back first.
        assert_eq!(l.offer(&p, mac(4), None, 2), Ok(b));
    }

    #[test]
    fn exhaustion_is_reported() {
        let (p, mut l) = (pool(), Leases::new());
        for n in 1..=4 {
            let a = l.offer(&p, mac(n), None, 0).unwrap();
            l.bind(&p, mac(n), a, 0).unwrap();
        }
        assert_eq!(l.offer(&p, mac(5), None, 100), Err(Refusal::Exhausted));
        // The oldest expired lease is reclaimed first.
        l.bind(&p, mac(3), ip("10.0.0.102"), 50).unwrap();
        assert_eq!(l.offer(&p, mac(5), None, 3601), Ok(ip("10.0.0.100")));
    }

    #[test]
    fn expire_keeps_bound_history_only() {
        let (p, mut l) = (pool(), Leases::new());
        l.offer(&p, mac(1), None, 0).unwrap();
        l.bind(&p, mac(2), ip("10.0.0.101"), 0).unwrap();
        l.offer(&p, mac(3), None, 0).unwrap();
        l.decline(mac(3), ip("10.0.0.102"), 0);
        l.expire(100_000);
        let left: Vec<_> = l.iter().map(|x| x.mac).collect();
        assert_eq!(left, vec![mac(2)]);
    }
}
