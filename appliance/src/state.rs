//! What the running daemon shares between its DHCP, TFTP and HTTP tasks: the current catalog
//! (swapped whole on reload), how clients reach us, and a short memory per MAC of what each
//! client said and was given, so that later stages of one boot are decided consistently.
//!
//! No policy here: `decide` reads what this remembers through fields of `Client`.

use crate::catalog::Catalog;
use crate::client::Client;
use crate::mac::MacAddr;
use crate::render::ServerInfo;
use std::collections::HashMap;
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
}

pub struct Shared {
    catalog: RwLock<Arc<Catalog>>,
    server: RwLock<ServerInfo>,
    memory: Mutex<HashMap<MacAddr, Memory>>,
}

impl Shared {
    pub fn new(catalog: Arc<Catalog>, server: ServerInfo) -> Arc<Self> {
        Arc::new(Shared {
            catalog: RwLock::new(catalog),
            server: RwLock::new(server),
            memory: Mutex::new(HashMap::new()),
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

    fn with_memory<R>(&self, f: impl FnOnce(&mut HashMap<MacAddr, Memory>) -> R) -> R {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m)
    }

    fn entry(map: &mut HashMap<MacAddr, Memory>, mac: MacAddr) -> &mut Memory {
        if map.len() >= MAX_REMEMBERED && !map.contains_key(&mac) {
            // Forget the stalest client to make room.
            if let Some(oldest) = map.iter().min_by_key(|(_, m)| m.dhcp_at.or(m.chained_at)).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.entry(mac).or_insert(Memory { dhcp: None, dhcp_at: None, chained_at: None, ip: None })
    }

    /// Records a client's DHCP request (answered or only overheard).
    pub fn remember_dhcp(&self, client: &Client, now: Instant) {
        let Some(mac) = client.mac else { return };
        self.with_memory(|m| {
            let e = Self::entry(m, mac);
            e.dhcp = Some(client.clone());
            e.dhcp_at = Some(now);
            if client.ip.is_some() {
                e.ip = client.ip;
            }
        });
    }

    /// What this MAC said in DHCP recently.
    pub fn recalled_dhcp(&self, mac: MacAddr, now: Instant) -> Option<Client> {
        self.with_memory(|m| {
            let e = m.get(&mac)?;
            let at = e.dhcp_at?;
            (now.duration_since(at) <= DHCP_MEMORY).then(|| e.dhcp.clone()).flatten()
        })
    }

    pub fn mark_chained(&self, mac: MacAddr, now: Instant) {
        self.with_memory(|m| Self::entry(m, mac).chained_at = Some(now));
    }

    /// Whether this MAC was handed an iPXE binary within `CHAIN_MEMORY`.
    pub fn chained(&self, mac: MacAddr, now: Instant) -> bool {
        self.with_memory(|m| {
            m.get(&mac).and_then(|e| e.chained_at).is_some_and(|t| now.duration_since(t) <= CHAIN_MEMORY)
        })
    }

    pub fn remember_ip(&self, mac: MacAddr, ip: Ipv4Addr) {
        self.with_memory(|m| Self::entry(m, mac).ip = Some(ip));
    }

    /// The MAC last seen with this IPv4 address (from DHCP or a lease).
    pub fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.with_memory(|m| m.iter().find(|(_, e)| e.ip == Some(ip)).map(|(k, _)| *k))
    }
}
