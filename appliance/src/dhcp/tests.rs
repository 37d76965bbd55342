//! In-process tests of the DHCP service over loopback (127.0.0.1, ephemeral ports only, no
//! root): real request bytes as each firmware sends them
//! (docs/firmware.md#dhcp-requests-by-client), the whole server, and
//! the replies decoded again. The request bytes and the test catalog are the core's
//! (`appliance_core::dhcp::fixtures`); the server harness is here, the cases in `tests/`.

mod firmware;
mod leases;
mod modes;

use super::{bind, run, DhcpOptions, DhcpSockets};
use crate::state::Shared;
use appliance_core::catalog::{Catalog, DhcpMode};
use appliance_core::dhcp::fixtures::firmware as fx_firmware;
pub(crate) use appliance_core::dhcp::fixtures::*;
use appliance_core::render::ServerInfo;
use dhcproto::v4::Message;
use dhcproto::Decodable;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
        let shared = Shared::new(Arc::new(catalog), ServerInfo::new(SERVER, HTTP_BASE.into()));
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
    Req::new(INFORM, mac(0xee), fx_firmware::ovmf_pxe(mac(0xee))).ciaddr(Ipv4Addr::new(10, 77, 0, 200)).xid(0xfeed_0001)
}

#[test]
fn run_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sockets = DhcpSockets { dhcp: bind(loopback, None).unwrap(), pxe: None };
    let shared = Shared::new(Arc::new(catalog()), ServerInfo::new(SERVER, HTTP_BASE.into()));
    let fut = run(shared, sockets, DhcpOptions::default(), std::future::pending());
    assert_send(&fut);
}

#[test]
fn sockets_bind_to_ephemeral_ports_without_root() {
    let s = DhcpSockets::bind(0, Some(0), None).unwrap();
    assert_ne!(s.dhcp.local_addr().port(), 0);
    assert_ne!(s.pxe.unwrap().local_addr().port(), 0);
}
