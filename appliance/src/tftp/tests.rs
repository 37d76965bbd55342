//! In-process tests of the TFTP engine over loopback (127.0.0.1, ephemeral
//! ports only): downloads through our client, protocol corner cases driven
//! by raw sockets, and (in `external`) real third-party clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use appliance_core::tftp::packet::{self, Mode, Packet, Request};
use testkit::tftp_client::{self as client, ClientError, ClientOptions};

use super::{serve, Content, Handler, Outcome, ReadRequest, TftpConfig, TftpError, TransferReport};
use crate::latency::CpuLatency;

mod external;
mod fair_share;
mod protocol;

/// Deterministic pseudo-random bytes, so misordered blocks are detected.
pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

enum Stored {
    Bytes(Bytes),
    Path(PathBuf),
}

pub(super) struct TestHandler {
    files: HashMap<String, Stored>,
    reports: mpsc::UnboundedSender<TransferReport>,
}

impl Handler for TestHandler {
    fn read(&self, req: &ReadRequest) -> Result<Content, TftpError> {
        match self.files.get(&req.path) {
            Some(Stored::Bytes(b)) => Ok(Content::Bytes(b.clone())),
            Some(Stored::Path(p)) => {
                let file = std::fs::File::open(p).map_err(|_| TftpError::not_found())?;
                let len = file.metadata().map_err(|_| TftpError::not_found())?.len();
                Ok(Content::File { file, len })
            }
            None if req.path == "forbidden" => Err(TftpError::access_violation("no")),
            None => Err(TftpError::not_found()),
        }
    }

    fn finished(&self, report: &TransferReport) {
        let _ = self.reports.send(report.clone());
    }
}

pub(super) struct Harness {
    pub addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<TransferReport>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    pub dir: tempfile::TempDir,
}

/// Fast timers so loss and timeout paths finish quickly.
pub(super) fn test_config() -> TftpConfig {
    TftpConfig { timeout: Duration::from_millis(100), max_retries: 5, ..TftpConfig::default() }
}

/// Lockstep transfers have two drivers (a dedicated thread, and the async
/// engine when no thread is free) around the one protocol machine, which is
/// tested on its own in `appliance-core`; what differs is the I/O (timers,
/// shutdown, socket errors, polling), so these socket tests run on both: each
/// test named here is an `async fn(lockstep_threads: usize)` and runs once
/// with a thread free (`<name>::on_thread`) and once with none
/// (`<name>::on_async_engine`).
macro_rules! on_both_drivers {
    ($($name:ident $([$($runtime:tt)*])?),* $(,)?) => {$(
        mod $name {
            #[tokio::test$(($($runtime)*))?]
            async fn on_thread() {
                super::$name(1).await
            }
            #[tokio::test$(($($runtime)*))?]
            async fn on_async_engine() {
                super::$name(0).await
            }
        }
    )*};
}
pub(super) use on_both_drivers;

/// Checks that a lockstep transfer ran where `lockstep_threads` sends it.
pub(super) fn assert_engine(r: &TransferReport, lockstep_threads: usize) {
    assert_eq!(r.thread, lockstep_threads > 0 && r.windowsize == 1, "ran on the wrong engine: {r:?}");
}

pub(super) struct Files {
    files: HashMap<String, Stored>,
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        init_tracing();
        Files { files: HashMap::new(), dir: tempfile::tempdir().unwrap() }
    }

    /// Serves `data` from memory as `name`.
    pub fn bytes(mut self, name: &str, data: Vec<u8>) -> Self {
        self.files.insert(name.to_string(), Stored::Bytes(Bytes::from(data)));
        self
    }

    /// Serves `data` from a file on disk as `name`.
    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let path = self.dir.path().join(format!("f{}", self.files.len()));
        std::fs::write(&path, data).unwrap();
        self.files.insert(name.to_string(), Stored::Path(path));
        self
    }

    pub async fn serve(self, config: TftpConfig) -> Harness {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, reports) = mpsc::unbounded_channel();
        let handler = Arc::new(TestHandler { files: self.files, reports: tx });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(socket, handler, config, CpuLatency::disabled(), async {
            let _ = stopped.await;
        }));
        Harness { addr, reports, stop: Some(stop), task, dir: self.dir }
    }
}

impl Harness {
    /// The next transfer report (fails the test after 5 s).
    pub async fn report(&mut self) -> TransferReport {
        tokio::time::timeout(Duration::from_secs(5), self.reports.recv())
            .await
            .expect("no transfer report within 5 s")
            .expect("server gone")
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub(super) fn opts(blksize: Option<u16>, windowsize: Option<u16>, tsize: bool) -> ClientOptions {
    ClientOptions { blksize, windowsize, tsize, retry_timeout: Duration::from_millis(300), ..ClientOptions::default() }
}

// ---- raw-socket helpers for protocol tests ----

pub(super) async fn raw_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

pub(super) fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    Packet::Rrq(Request {
        filename: name.to_string(),
        mode: Mode::Octet,
        options: options.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
    })
    .encode(&mut out);
    out
}

pub(super) fn ack(block: u16) -> Vec<u8> {
    let mut out = Vec::new();
    packet::encode_ack(&mut out, block);
    out
}

/// Receives one datagram, or `None` after `wait`.
pub(super) async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(r) => {
            let (n, from) = r.unwrap();
            buf.truncate(n);
            Some((buf, from))
        }
        Err(_) => None,
    }
}

pub(super) async fn recv_packet(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    recv(sock, Duration::from_secs(2)).await.expect("no packet from server within 2 s")
}

// ---- downloads through our client ----

on_both_drivers!(
    downloads_every_blksize_and_windowsize[flavor = "multi_thread", worker_threads = 2],
    edge_sizes_and_no_options,
    block_number_rollover_past_65535[flavor = "multi_thread", worker_threads = 2],
    simulated_loss_is_recovered,
);

async fn downloads_every_blksize_and_windowsize(lockstep_threads: usize) {
    let data = pattern(150_001, 1);
    let config = TftpConfig { lockstep_threads, ..test_config() };
    let mut h = Files::new().bytes("mem", data.clone()).file("disk", &data).serve(config).await;
    for blksize in [512u16, 1468, 8192] {
        for window in [1u16, 4, 16] {
            for name in ["mem", "disk"] {
                let o = opts(Some(blksize), Some(window), true);
                let d = client::get(h.addr, name, &o).await.unwrap();
                assert!(d.data == data, "{name} blksize {blksize} window {window}");
                assert_eq!(d.stats.tsize, Some(data.len() as u64));
                assert_eq!((d.stats.blksize, d.stats.windowsize), (blksize, window));
                let r = h.report().await;
                assert_eq!(r.outcome, Outcome::Complete);
                assert_eq!(r.bytes, data.len() as u64);
                assert_eq!(r.blocks, data.len() as u64 / u64::from(blksize) + 1);
                assert_eq!((r.blksize, r.windowsize), (blksize, window));
                assert_engine(&r, lockstep_threads);
            }
        }
    }
    h.shutdown().await;
}

async fn edge_sizes_and_no_options(lockstep_threads: usize) {
    let mut files = Files::new();
    let sizes = [0usize, 1, 511, 512, 513, 1024, 4096 * 3];
    for (i, n) in sizes.iter().enumerate() {
        files = files.file(&format!("s{n}"), &pattern(*n, i as u64));
    }
    let mut h = files.serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    for (i, n) in sizes.iter().enumerate() {
        for o in [opts(None, None, false), opts(Some(1024), None, true), opts(Some(1024), Some(3), true)] {
            let d = client::get(h.addr, &format!("s{n}"), &o).await.unwrap();
            assert_eq!(d.data, pattern(*n, i as u64), "size {n}");
            let r = h.report().await;
            assert_eq!(r.outcome, Outcome::Complete);
            assert_eq!(r.bytes, *n as u64);
            assert_eq!(r.blocks, d.stats.blocks);
            assert_engine(&r, lockstep_threads);
        }
        // Without options there is no OACK and the server uses 512/1.
        let d = client::get(h.addr, &format!("s{n}"), &opts(None, None, false)).await.unwrap();
        assert!(d.stats.oack.is_empty());
        assert_eq!(d.stats.blocks, *n as u64 / 512 + 1);
        h.report().await;
    }
    h.shutdown().await;
}

async fn block_number_rollover_past_65535(lockstep_threads: usize) {
    // 65,600+ blocks of 512 bytes: block numbers wrap 65535 -> 0.
    let len = 33_554_432 + 40_000 + 7;
    let data = pattern(len, 7);
    let mut h = Files::new().file("big", &data).serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    // Windowed, then lockstep (the case the dedicated thread serves).
    for window in [Some(16), None] {
        let o = opts(Some(512), window, true);
        let d = client::get(h.addr, "big", &o).await.unwrap();
        assert_eq!(d.data.len(), len);
        assert!(d.data == data, "content differs after rollover (window {window:?})");
        assert_eq!(d.stats.blocks, len as u64 / 512 + 1);
        let r = h.report().await;
        assert_eq!(r.outcome, Outcome::Complete);
        assert_eq!(r.blocks, len as u64 / 512 + 1);
        assert_engine(&r, lockstep_threads);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn handler_refusal_is_sent_and_reported() {
    let mut h = Files::new().serve(test_config()).await;
    match client::get(h.addr, "missing", &opts(None, None, false)).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, TftpError::FILE_NOT_FOUND),
        other => panic!("expected not found, got {other:?}"),
    }
    let r = h.report().await;
    assert_eq!(r.outcome, Outcome::Refused(TftpError::not_found()));
    assert_eq!(r.path, "missing");
    match client::get(h.addr, "forbidden", &opts(Some(1468), None, true)).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, TftpError::ACCESS_VIOLATION),
        other => panic!("expected access violation, got {other:?}"),
    }
    h.report().await;
    h.shutdown().await;
}

async fn simulated_loss_is_recovered(lockstep_threads: usize) {
    // From disk and larger than one read-ahead chunk (128 KiB), so losses
    // also land around chunk boundaries.
    let data = pattern(300_000, 3);
    let mut h = Files::new().file("f", &data).serve(TftpConfig { lockstep_threads, ..test_config() }).await;
    // Lockstep: the server must time out and resend blocks 3 and 257 (the
    // latter past the first chunk of the file).
    let mut o = opts(Some(512), None, false);
    o.simulate_loss = vec![3, 257];
    let d = client::get(h.addr, "f", &o).await.unwrap();
    assert!(d.data == data);
    let r = h.report().await;
    assert_eq!(r.outcome, Outcome::Complete);
    assert!(r.retransmits >= 2, "{r:?}");
    assert_engine(&r, lockstep_threads);
    // Windowed: a gap in the middle and at the start of a window are both
    // signalled by the client's ACK and resent from the next block.
    let mut o = opts(Some(512), Some(8), false);
    o.simulate_loss = vec![5, 17, 60, 61, 129, 256, 257, 385, 586];
    let d = client::get(h.addr, "f", &o).await.unwrap();
    assert!(d.data == data);
    let r = h.report().await;
    assert_eq!(r.outcome, Outcome::Complete);
    assert!(r.retransmits >= 4, "{r:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn window_gap_is_resent_without_waiting_for_timeout() {
    let data = pattern(20_000, 4);
    let config = TftpConfig { timeout: Duration::from_secs(3), ..TftpConfig::default() };
    let mut h = Files::new().bytes("f", data.clone()).serve(config).await;
    // Block 9 is the first of the second window: the client re-ACKs 8.
    let mut o = opts(Some(512), Some(8), false);
    o.simulate_loss = vec![1, 9, 12];
    let started = std::time::Instant::now();
    let d = client::get(h.addr, "f", &o).await.unwrap();
    assert!(d.data == data);
    assert!(started.elapsed() < Duration::from_secs(1), "waited for a timeout");
    assert_eq!(h.report().await.outcome, Outcome::Complete);
    h.shutdown().await;
}
