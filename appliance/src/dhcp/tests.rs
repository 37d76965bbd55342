//! In-process tests of the DHCP service over loopback (127.0.0.1, ephemeral ports only, no
//! root): real request bytes as each firmware sends them (docs/firmware.md#dhcp-requests-by-client),
//! the whole server, and the replies decoded again. Shared fixtures live here; the cases in `tests/`.

pub(crate) mod firmware;
mod leases;
mod modes;

use super::{bind, run, DhcpOptions, DhcpSockets};
use crate::catalog::{Catalog, DhcpMode, Digest};
use crate::config::{validate::validate, FileProbe, Input, SourceFile};
use crate::render::ServerInfo;
use crate::state::Shared;
use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message, OptionCode};
use dhcproto::Decodable;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub(crate) const HTTP_BASE: &str = "http://10.77.0.1:8080";

/// The appliance settings of most tests: server mode, pool .100–.199.
pub(crate) const SETTINGS: &str = "
server: { address: 10.77.0.1, http_port: 8080 }
dhcp:
  mode: server
  subnet: 10.77.0.0/24
  pool: { start: 10.77.0.100, end: 10.77.0.199 }
  lease_time: 3600
  router: 10.77.0.1
  dns: [10.77.0.1, 10.77.0.2]
  domain: lab.test
";

const MACHINES: &str = r#"
machines:
  "52:54:00:77:00:01": { hostname: bios-node, arch: x86_64, profile: live, address: 10.77.0.11 }
  "52:54:00:77:00:02": { hostname: chain-node, arch: x86_64, profile: live, chain_ipxe: true }
  "52:54:00:77:00:05": { hostname: arm-board, arch: arm64, profile: live }
  "52:54:00:77:00:06": { hostname: skipped, action: ignore }
unknown: { action: profile, profile: live }
"#;

const PROFILE: &str = "
name: live
cmdline: console=ttyS0
arch:
  x86_64: { kernel: { path: files/vmlinuz, name: vmlinuz }, initrd: [ { path: files/initrd-x86 } ] }
  arm64: { kernel: { path: files/Image, name: Image }, initrd: [ { path: files/initrd-arm } ] }
";

/// Every local artifact "exists", with a digest derived from its path.
struct AnyFile;

impl FileProbe for AnyFile {
    fn digest(&self, rel: &Path) -> Result<Digest, String> {
        let mut d = [0u8; 32];
        for (i, b) in rel.to_string_lossy().bytes().enumerate() {
            d[i % 32] ^= b;
        }
        Ok(d)
    }
}

pub(crate) fn catalog_with(settings: &str) -> Catalog {
    let src = |name: &str, text: &str| SourceFile { path: PathBuf::from(name), text: text.to_string() };
    let input = Input {
        dir: PathBuf::from("/config"),
        settings: Some(src("appliance.yaml", settings)),
        machines: Some(src("machines.yaml", MACHINES)),
        overlay: None,
        menus: None,
        profiles: vec![src("live.yaml", PROFILE)],
    };
    validate(&input, &AnyFile).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

pub(crate) fn catalog() -> Catalog {
    catalog_with(SETTINGS)
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Request bytes.

pub(crate) const DISCOVER: u8 = 1;
pub(crate) const REQUEST: u8 = 3;
pub(crate) const DECLINE: u8 = 4;
pub(crate) const RELEASE: u8 = 7;
pub(crate) const INFORM: u8 = 8;

/// A request's options after 53, in the order the client sends them.
pub(crate) type Options = Vec<(u8, Vec<u8>)>;

/// A client request, written byte by byte the way firmware does (option order included).
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub kind: u8,
    pub mac: [u8; 6],
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub broadcast: bool,
    pub file: Option<&'static str>,
    pub opts: Options,
}

impl Req {
    pub fn new(kind: u8, mac: [u8; 6], fw: Options) -> Self {
        Req {
            kind,
            mac,
            xid: u32::from_be_bytes([mac[4], mac[5], kind, 0x5a]),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            file: None,
            opts: fw,
        }
    }

    pub fn opt(mut self, code: u8, data: impl Into<Vec<u8>>) -> Self {
        self.opts.retain(|(c, _)| *c != code);
        self.opts.push((code, data.into()));
        self
    }

    pub fn requested(self, ip: Ipv4Addr) -> Self {
        self.opt(50, ip.octets())
    }

    pub fn server_id(self, ip: Ipv4Addr) -> Self {
        self.opt(54, ip.octets())
    }

    pub fn xid(mut self, xid: u32) -> Self {
        self.xid = xid;
        self
    }

    pub fn ciaddr(mut self, ip: Ipv4Addr) -> Self {
        self.ciaddr = ip;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = vec![1, 1, 6, 0];
        b.extend(self.xid.to_be_bytes());
        b.extend([0, 4]); // secs
        b.extend(if self.broadcast { [0x80, 0] } else { [0, 0] });
        for ip in [self.ciaddr, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, self.giaddr] {
            b.extend(ip.octets());
        }
        b.extend(self.mac);
        b.extend([0u8; 10]);
        b.extend([0u8; 64]);
        let mut file = [0u8; 128];
        if let Some(f) = self.file {
            file[..f.len()].copy_from_slice(f.as_bytes());
        }
        b.extend(file);
        b.extend([99, 130, 83, 99, 53, 1, self.kind]);
        for (code, data) in &self.opts {
            b.push(*code);
            b.push(data.len() as u8);
            b.extend(data);
        }
        b.push(255);
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }
}

pub(crate) fn mac(last: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x77, 0x00, last]
}

/// The options a decoded reply carries, as raw bytes (the codec's typed value re-encoded).
pub(crate) fn raw(m: &Message, code: u8) -> Option<Vec<u8>> {
    let opt = m.opts().get(OptionCode::from(code))?;
    let mut buf = Vec::new();
    opt.encode(&mut Encoder::new(&mut buf)).unwrap();
    Some(buf[2..].to_vec())
}

pub(crate) fn has(m: &Message, code: u8) -> bool {
    m.opts().get(OptionCode::from(code)).is_some()
}

/// The file field without its NUL padding.
pub(crate) fn file(m: &Message) -> String {
    let f = m.fname().unwrap_or_default();
    String::from_utf8_lossy(f).trim_end_matches('\0').to_string()
}

pub(crate) fn kind(m: &Message) -> u8 {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => u8::from(*t),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// The server on loopback.

pub(crate) struct Harness {
    pub shared: Arc<Shared>,
    pub client: UdpSocket,
    pub dhcp: SocketAddr,
    pub pxe: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// How long a test waits for a reply that should come. Silence is checked with a probe
/// (below), not by waiting, except in off mode.
const REPLY_WAIT: Duration = Duration::from_secs(2);

impl Harness {
    pub async fn start(catalog: Catalog, mode: Option<DhcpMode>, state_dir: Option<&Path>) -> Harness {
        init_tracing();
        let shared = Shared::new(Arc::new(catalog), ServerInfo { address: SERVER, http_base: HTTP_BASE.into() });
        Self::start_shared(shared, mode, state_dir).await
    }

    pub async fn start_shared(shared: Arc<Shared>, mode: Option<DhcpMode>, state_dir: Option<&Path>) -> Harness {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let dhcp_socket = bind(loopback, None).unwrap();
        let pxe_socket = bind(loopback, None).unwrap();
        let (dhcp, pxe) = (dhcp_socket.local_addr().into(), pxe_socket.local_addr().into());
        let client = UdpSocket::bind(loopback).await.unwrap();
        let opts = DhcpOptions {
            mode,
            state_dir: state_dir.map(Path::to_path_buf).unwrap_or_default(),
            client_port: client.local_addr().unwrap().port(),
            reply_to: Some(client.local_addr().unwrap()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let sockets = DhcpSockets { dhcp: dhcp_socket, pxe: Some(pxe_socket) };
        let task = tokio::spawn(run(shared.clone(), sockets, opts, async {
            let _ = stopped.await;
        }));
        Harness { shared, client, dhcp, pxe, stop: Some(stop), task }
    }

    /// Sends `req` to port 67 and returns the reply.
    pub async fn ask(&self, req: &Req) -> Message {
        self.send(req).await;
        self.recv().await.unwrap_or_else(|| panic!("no reply to {req:?}"))
    }

    /// Sends `req` to the PXE port and returns the reply (sent back to our source address).
    pub async fn ask_pxe(&self, req: &Req) -> Message {
        self.client.send_to(&req.bytes(), self.pxe).await.unwrap();
        self.recv().await.unwrap_or_else(|| panic!("no reply on 4011 to {req:?}"))
    }

    pub async fn send(&self, req: &Req) {
        self.send_raw(&req.bytes()).await;
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.client.send_to(bytes, self.dhcp).await.unwrap();
    }

    pub async fn recv(&self) -> Option<Message> {
        self.recv_within(REPLY_WAIT).await
    }

    pub async fn recv_within(&self, wait: Duration) -> Option<Message> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(wait, self.client.recv_from(&mut buf)).await.ok()?.unwrap();
        Some(Message::decode(&mut dhcproto::Decoder::new(&buf[..n])).unwrap())
    }

    /// Asserts that `req` gets no reply: the server handles packets one at a time, so when the
    /// reply to a later `probe` arrives first, `req` was answered by silence.
    pub async fn assert_silent(&self, req: &Req, probe: &Req) {
        self.send(req).await;
        let got = self.ask(probe).await;
        assert_eq!(got.xid(), probe.xid, "expected no reply to {req:?}, got {got:?}");
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A probe that gets an answer in every mode but off: a UEFI PXE client's INFORM.
pub(crate) fn probe() -> Req {
    Req::new(INFORM, mac(0xee), firmware::ovmf_pxe(mac(0xee))).ciaddr(Ipv4Addr::new(10, 77, 0, 200)).xid(0xfeed_0001)
}

#[test]
fn run_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sockets = DhcpSockets { dhcp: bind(loopback, None).unwrap(), pxe: None };
    let shared = Shared::new(Arc::new(catalog()), ServerInfo { address: SERVER, http_base: HTTP_BASE.into() });
    let fut = run(shared, sockets, DhcpOptions::default(), std::future::pending());
    assert_send(&fut);
}

#[test]
fn sockets_bind_to_ephemeral_ports_without_root() {
    let s = DhcpSockets::bind(0, Some(0), None).unwrap();
    assert_ne!(s.dhcp.local_addr().port(), 0);
    assert_ne!(s.pxe.unwrap().local_addr().port(), 0);
}
