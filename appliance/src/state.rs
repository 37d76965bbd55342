//! What the running daemon shares between its DHCP, TFTP and HTTP tasks: the current catalog
//! (swapped whole on reload), how clients reach us, and a short memory per MAC of what each
//! client said and was given, so that later stages of one boot are decided consistently.
//!
//! No policy here: `decide` reads what this remembers through fields of `Client`.

use appliance_core::catalog::Catalog;
use appliance_core::client::Client;
use appliance_core::mac::MacAddr;
use appliance_core::render::ServerInfo;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long the fact "this MAC was handed an iPXE binary" stays true. A chained iPXE asks
/// within seconds; a machine that reboots minutes later starts again from its ROM.
pub const CHAIN_MEMORY: Duration = Duration::from_secs(120);
/// How long an overheard DHCP request is remembered for later TFTP/HTTP stages.
pub const DHCP_MEMORY: Duration = Duration::from_secs(3600);
/// Upper bound on remembered clients, so a flood of random MACs cannot grow memory unbounded.
pub const MAX_REMEMBERED: usize = 65_536;

#[derive(Debug, Clone)]
pub struct Memory {
    /// The client as identified from its latest DHCP request.
    pub dhcp: Option<Client>,
    pub dhcp_at: Option<Instant>,
    /// When an iPXE binary was last handed to this MAC.
    pub chained_at: Option<Instant>,
    /// The address it has (lease, ciaddr, or seen as a request source).
    pub ip: Option<Ipv4Addr>,
    /// Last time anything was recorded for this MAC (the eviction order).
    touched: Instant,
}

/// The per-MAC memory with the two indexes its users need: by address (TFTP requests carry
/// no MAC, only their source address) and by age (a full table forgets the stalest MAC).
/// Every operation is O(log n), so a flood of random MACs costs no more per packet than a
/// quiet network.
#[derive(Default)]
struct Remembered {
    by_mac: HashMap<MacAddr, Memory>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    by_age: BTreeSet<(Instant, MacAddr)>,
}

impl Remembered {
    /// Runs `f` on the MAC's entry (created if new, evicting the stalest when full) and keeps
    /// the indexes in step with what `f` changed.
    fn update<R>(&mut self, mac: MacAddr, now: Instant, f: impl FnOnce(&mut Memory) -> R) -> R {
        if !self.by_mac.contains_key(&mac) && self.by_mac.len() >= MAX_REMEMBERED {
            if let Some(&(_, oldest)) = self.by_age.iter().next() {
                self.forget(oldest);
            }
        }
        let entry = self.by_mac.entry(mac).or_insert(Memory {
            dhcp: None,
            dhcp_at: None,
            chained_at: None,
            ip: None,
            touched: now,
        });
        let (old_touched, old_ip) = (entry.touched, entry.ip);
        let result = f(entry);
        // `now` comes from callers on different tasks; never move an entry back in time.
        entry.touched = old_touched.max(now);
        let (touched, ip) = (entry.touched, entry.ip);
        self.by_age.remove(&(old_touched, mac));
        self.by_age.insert((touched, mac));
        if old_ip != ip {
            if let Some(old) = old_ip {
                if self.by_ip.get(&old) == Some(&mac) {
                    self.by_ip.remove(&old);
                }
            }
        }
        if let Some(ip) = ip {
            // The address now belongs to this MAC; whoever had it before keeps its (stale)
            // field but is no longer found by address.
            self.by_ip.insert(ip, mac);
        }
        result
    }

    fn forget(&mut self, mac: MacAddr) {
        if let Some(e) = self.by_mac.remove(&mac) {
            self.by_age.remove(&(e.touched, mac));
            if let Some(ip) = e.ip {
                if self.by_ip.get(&ip) == Some(&mac) {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }
}

pub struct Shared {
    catalog: RwLock<Arc<Catalog>>,
    server: RwLock<ServerInfo>,
    memory: Mutex<Remembered>,
    /// The journal, metrics and transfers in flight (`crate::observe`).
    pub telemetry: Arc<crate::observe::Telemetry>,
}

impl Shared {
    /// With no journal (records are not made) and metrics nobody reads, as tests want.
    pub fn new(catalog: Arc<Catalog>, server: ServerInfo) -> Arc<Self> {
        Shared::with_telemetry(catalog, server, Default::default())
    }

    pub fn with_telemetry(
        catalog: Arc<Catalog>,
        server: ServerInfo,
        telemetry: Arc<crate::observe::Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            catalog: RwLock::new(catalog),
            server: RwLock::new(server),
            memory: Mutex::new(Remembered::default()),
            telemetry,
        })
    }

    /// The catalog in force; callers keep the `Arc` for the whole request so a reload in the
    /// middle of it cannot mix two configurations.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace_catalog(&self, c: Arc<Catalog>) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = c;
    }

    pub fn server(&self) -> ServerInfo {
        self.server.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_server(&self, s: ServerInfo) {
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn with_memory<R>(&self, f: impl FnOnce(&mut Remembered) -> R) -> R {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m)
    }

    /// Records a client's DHCP request (answered or only overheard).
    pub fn remember_dhcp(&self, client: &Client, now: Instant) {
        let Some(mac) = client.mac else { return };
        self.with_memory(|m| {
            m.update(mac, now, |e| {
                e.dhcp = Some(client.clone());
                e.dhcp_at = Some(now);
                if client.ip.is_some() {
                    e.ip = client.ip;
                }
            })
        });
    }

    /// What this MAC said in DHCP recently.
    pub fn recalled_dhcp(&self, mac: MacAddr, now: Instant) -> Option<Client> {
        self.with_memory(|m| {
            let e = m.by_mac.get(&mac)?;
            let at = e.dhcp_at?;
            (now.duration_since(at) <= DHCP_MEMORY).then(|| e.dhcp.clone()).flatten()
        })
    }

    pub fn mark_chained(&self, mac: MacAddr, now: Instant) {
        self.with_memory(|m| m.update(mac, now, |e| e.chained_at = Some(now)));
    }

    /// Whether this MAC was handed an iPXE binary within `CHAIN_MEMORY`.
    pub fn chained(&self, mac: MacAddr, now: Instant) -> bool {
        self.with_memory(|m| {
            m.by_mac.get(&mac).and_then(|e| e.chained_at).is_some_and(|t| now.duration_since(t) <= CHAIN_MEMORY)
        })
    }

    pub fn remember_ip(&self, mac: MacAddr, ip: Ipv4Addr) {
        self.with_memory(|m| m.update(mac, Instant::now(), |e| e.ip = Some(ip)));
    }

    /// The MAC last seen with this IPv4 address (from DHCP or a lease).
    pub fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.with_memory(|m| m.by_ip.get(&ip).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
    }

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 | n)
    }

    #[test]
    fn an_address_is_found_under_the_mac_that_had_it_last() {
        let mut r = Remembered::default();
        let t = Instant::now();
        r.update(mac(1), t, |e| e.ip = Some(ip(1)));
        r.update(mac(2), t, |e| e.ip = Some(ip(1)));
        assert_eq!(r.by_ip.get(&ip(1)), Some(&mac(2)));
        // MAC 1 moving on must not take MAC 2's address out of the index.
        r.update(mac(1), t, |e| e.ip = Some(ip(5)));
        assert_eq!(r.by_ip.get(&ip(1)), Some(&mac(2)));
        assert_eq!(r.by_ip.get(&ip(5)), Some(&mac(1)));
        r.update(mac(2), t, |e| e.ip = Some(ip(6)));
        assert_eq!(r.by_ip.get(&ip(1)), None);
        assert_eq!(r.by_ip.len(), 2);
    }

    #[test]
    fn a_full_table_forgets_the_stalest_mac_and_its_address() {
        let mut r = Remembered::default();
        let t0 = Instant::now();
        let n = MAX_REMEMBERED as u32;
        for i in 0..n {
            r.update(mac(i), t0 + Duration::from_millis(u64::from(i)), |e| e.ip = Some(ip(i)));
        }
        // MAC 0 is the oldest, but it boots again: MAC 1 becomes the stalest.
        let later = t0 + Duration::from_secs(3600);
        r.update(mac(0), later, |e| e.chained_at = Some(later));
        r.update(mac(n), later, |e| e.ip = Some(ip(n)));
        assert_eq!(r.by_mac.len(), MAX_REMEMBERED);
        assert!(r.by_mac.contains_key(&mac(0)));
        assert!(!r.by_mac.contains_key(&mac(1)));
        assert_eq!(r.by_ip.get(&ip(1)), None, "the forgotten MAC's address went with it");
        assert_eq!(r.by_ip.get(&ip(n)), Some(&mac(n)));
        assert_eq!(r.by_age.len(), r.by_mac.len());
        assert_eq!(r.by_ip.len(), r.by_mac.len());
    }
}
