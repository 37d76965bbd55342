//! The `appliance` command: parses the command line, sets up logging and dispatches.

use anyhow::{Context, Result};
use appliance_core::explain::{self, Query};
use appliance_core::mac::MacAddr;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Network-boot appliance: serves DHCP (or proxyDHCP), TFTP and HTTP so that x86 BIOS, x86 UEFI
/// and ARM64 (U-Boot and UEFI) machines boot what the YAML profiles say.
#[derive(Parser)]
#[command(name = "appliance", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from.
#[derive(Args)]
struct ConfigArgs {
    /// Config directory: appliance.yaml, machines.yaml, menus.yaml and one YAML file per profile.
    #[arg(long, default_value = "profiles")]
    config: PathBuf,
    /// On-site MAC database overlay, merged over machines.yaml entry by entry (the overlay wins).
    #[arg(long)]
    overlay: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config directory; prints a one-line summary, or every error as
    /// FILE:LINE:COL: field.path: message and exits non-zero.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Fetched deb/url artifact bytes, one file per sha256 (`cargo xtask fetch` writes
        /// target/blobs): their kernels are checked for a Secure Boot signature too.
        #[arg(long)]
        blobs: Option<PathBuf>,
    },
    /// Show, without any network, what a client would be handed and which rule decided it,
    /// with the full rendered config or script.
    Explain {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The client's MAC address.
        #[arg(long)]
        mac: MacAddr,
        /// DHCP option 93 (client system architecture): 0 BIOS, 7 x64 UEFI, 11 ARM64 UEFI,
        /// 16 x64 UEFI HTTP, 22 ARM64 U-Boot, ...
        #[arg(long)]
        client_arch: Option<u16>,
        /// DHCP option 60, e.g. PXEClient:Arch:00007:UNDI:003000, HTTPClient, U-Boot.armv8.
        #[arg(long)]
        vendor_class: Option<String>,
        /// DHCP option 77, e.g. iPXE.
        #[arg(long)]
        user_class: Option<String>,
        /// A TFTP path the client requests (pxelinux.cfg/..., grub/grub.cfg-...), to explain
        /// that stage instead of the DHCP one.
        #[arg(long)]
        path: Option<String>,
        /// Assume this MAC was already handed the iPXE binary (the chained iPXE asking).
        #[arg(long)]
        chained: bool,
        /// The daemon's state directory: show the machine's install state and events, and
        /// render its token with the daemon's key.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Re-arm a machine that reported `installed`: its next netboot is decided by its target
    /// again (with `after_install: local` it booted its disk until now). Writes the install
    /// log in the state directory; a running daemon sees the change at the machine's next
    /// request.
    Rearm {
        /// The daemon's state directory.
        #[arg(long, default_value = "/var/lib/appliance")]
        state: PathBuf,
        /// The machine's MAC address.
        mac: MacAddr,
    },
    /// Print the machines table of a running daemon (its admin listener's /api/machines):
    /// each machine's last stage, profile and version, install state and last error.
    Status {
        /// The admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        url: String,
    },
    /// Serve DHCP (or proxyDHCP), TFTP and HTTP. SIGHUP reloads the config (an invalid one is
    /// refused and the old one keeps serving); SIGTERM or Ctrl-C shuts down gracefully.
    Serve(Box<ServeArgs>),
    /// Write every config the catalog can produce into a folder, for review as a diff in git.
    Render {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Output folder (its previous contents are replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Writable state: leases and the versioned artifact store (<state>/artifacts).
    #[arg(long, default_value = "/var/lib/appliance")]
    state: PathBuf,
    /// Bootloader binaries (undionly.kpxe, ipxe.efi, snponly.efi, grubnet*.efi), as
    /// `cargo xtask fetch` writes them to target/bootloaders.
    #[arg(long)]
    bootloaders: Option<PathBuf>,
    /// Fetched deb/url artifact bytes, one file per sha256 [default: <state>/blobs].
    #[arg(long)]
    blobs: Option<PathBuf>,
    /// Read-only fallback TFTP root for files that are neither configs nor artifacts.
    #[arg(long)]
    tftp_root: Option<PathBuf>,
    /// Network interface to serve on (binds DHCP to it with SO_BINDTODEVICE).
    #[arg(long)]
    interface: Option<String>,
    /// DHCP mode, overriding appliance.yaml: server (addresses + boot info), proxy (boot info
    /// beside the site's DHCP server, also on port 4011), off (no DHCP; only listen).
    #[arg(long, value_enum)]
    dhcp: Option<DhcpModeArg>,
    /// Address to listen on for TFTP and HTTP.
    #[arg(long, default_value = "0.0.0.0")]
    listen: std::net::Ipv4Addr,
    /// Address clients reach us at, overriding appliance.yaml's server.address.
    #[arg(long)]
    advertise: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    #[arg(long, default_value_t = 69)]
    tftp_port: u16,
    /// DHCP server port (clients' replies go to 68); the proxy also listens on 4011.
    #[arg(long, default_value_t = 67)]
    dhcp_port: u16,
    /// ProxyDHCP port for PXE clients' follow-up requests.
    #[arg(long, default_value_t = 4011)]
    proxy_port: u16,
    /// Do not watch the config dir for changes (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
    /// CPU wake-up latency (microseconds) requested through /dev/cpu_dma_latency while TFTP
    /// transfers and HTTP responses run, released 100 ms after the last one; `off` to never ask.
    /// An idle CPU in a deep sleep state (or a halted vCPU) adds its wake-up time to every
    /// lockstep TFTP block: 0 keeps idle CPUs polling during boots. Needs root; without it the
    /// daemon warns once and serves as before.
    #[arg(long, default_value = "0", value_name = "MICROSECONDS|off", value_parser = parse_cpu_latency)]
    cpu_latency: CpuLatencyArg,
    /// Lockstep TFTP transfers (windowsize 1: most firmware, GRUB, U-Boot) that may each run on
    /// a thread of their own, waiting for ACKs in a blocking `recv`: fewer system calls and no
    /// scheduler hop between an ACK and the next block. Further lockstep transfers, and all
    /// windowed ones, run on the async engine. 0 keeps every transfer on the async engine
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    tftp_lockstep_threads: Option<usize>,
    /// How long (microseconds) a lockstep thread polls for the client's next ACK before it
    /// sleeps. A client that answers within it (same host, fast LAN) saves both sides a sleep
    /// and a wake-up per block; one that answers slower, like most firmware, stops being
    /// polled after a miss (backing off up to 1,023 blocks). No thread polls while more
    /// transfers run than there are lockstep threads. 0 never polls.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 20)]
    tftp_spin: u64,
    /// Address of the admin API (`POST /admin/rearm/<mac>`, bearer token), or `off`. Keep it
    /// on loopback or a management network: it is for operators, never for machines.
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDRESS:PORT|off", value_parser = parse_admin_listen)]
    admin_listen: AdminListenArg,
    /// The boot journal: every DHCP exchange, TFTP transfer and HTTP request per machine, kept
    /// in memory for the status page and appended to <state>/journal/journal.jsonl; `off` makes
    /// no records at all.
    #[arg(long, value_enum, default_value = "on")]
    journal: OnOff,
    /// Machines the journal keeps in memory (the least recently heard go first).
    #[arg(long, default_value_t = appliance_core::journal::Limits::default().machines, value_name = "N")]
    journal_machines: usize,
    /// Records the journal keeps in memory per machine.
    #[arg(long, default_value_t = appliance_core::journal::Limits::default().records, value_name = "N")]
    journal_records: usize,
    /// Size (KiB) at which the journal file is rotated.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    journal_file_kib: u64,
    /// Rotated journal files kept (journal.jsonl.1 …).
    #[arg(long, default_value_t = 3, value_name = "N")]
    journal_keep: usize,
    /// File holding the admin API's bearer token [default: <state>/admin.token, created once
    /// with a random token, mode 0600].
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// TFTP transfers at once. Past it, a request takes the place of the transfer that made no
    /// progress (no new ACK) for longest, if it has made none for 3 s; otherwise it is dropped
    /// and the client asks again. Lowered to fit the file descriptor limit, if need be.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    tftp_max_transfers: usize,
    /// TFTP transfers at once from one source address, with the same rule among its own.
    #[arg(long, value_name = "N", default_value_t = 32)]
    tftp_max_per_source: usize,
    /// Longest retransmission timeout (seconds) a client's RFC 2349 `timeout` option is
    /// granted; a longer one is ignored, as the RFC allows (U-Boot asks for 5).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=255))]
    tftp_max_timeout: u64,
    /// HTTP connections at once. Past it, a new connection takes the place of the one idle
    /// longest (no byte either way for 5 s), or is closed at once. Lowered to fit the file
    /// descriptor limit, if need be.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    http_max_connections: usize,
    /// HTTP connections at once from one source address, with the same rule among its own.
    #[arg(long, value_name = "N", default_value_t = 64)]
    http_max_per_source: usize,
    /// Once every socket is bound, become this user (started as root): the state dir is given
    /// to it, every capability is dropped but CAP_NET_RAW when router advertisements are sent
    /// (--interface), and no-new-privileges is set. The appliance image runs it as `appliance`.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// `--admin-listen`: an address, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AdminListenArg(Option<std::net::SocketAddr>);

/// clap's value parser (see `parse_cpu_latency` for why a `String` error).
fn parse_admin_listen(s: &str) -> Result<AdminListenArg, String> {
    if s == "off" {
        return Ok(AdminListenArg(None));
    }
    s.parse().map(|a| AdminListenArg(Some(a))).map_err(|_| format!("expected ADDRESS:PORT or `off`, got {s:?}"))
}

/// `--cpu-latency`: microseconds, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuLatencyArg(Option<i32>);

/// clap's value parser: clap prints the message and exits, no caller branches on it, so a
/// `String` is all the error needs to be.
fn parse_cpu_latency(s: &str) -> Result<CpuLatencyArg, String> {
    if s == "off" {
        return Ok(CpuLatencyArg(None));
    }
    match s.parse::<i32>() {
        Ok(us) if us >= 0 => Ok(CpuLatencyArg(Some(us))),
        _ => Err(format!("expected a number of microseconds (0 or more) or `off`, got {s:?}")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DhcpModeArg {
    Server,
    Proxy,
    Off,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(
    config: &std::path::Path,
    overlay: Option<&std::path::Path>,
) -> Result<appliance_core::catalog::Catalog, ExitCode> {
    appliance::config_dir::load(config, overlay).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("{e}");
        }
        eprintln!("{} error{} in {}", errs.0.len(), if errs.0.len() == 1 { "" } else { "s" }, config.display());
        ExitCode::FAILURE
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { cfg: ConfigArgs { config, overlay }, blobs } => {
            let catalog = match load(&config, overlay.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let sets: usize = catalog.profiles().map(|p| p.arches.len()).sum();
            let answers: usize = catalog.profiles().map(|p| p.answers.len()).sum();
            // Every answer file was rendered for every machine that may get it (validation does).
            let answers = match answers {
                0 => String::new(),
                1 => ", 1 answer file".to_string(),
                n => format!(", {n} answer files"),
            };
            println!(
                "{}: ok: {} profiles ({} artifact sets{answers}), {} machines, {} vendor rules, {} menus, dhcp {}",
                config.display(),
                catalog.profiles().len(),
                sets,
                catalog.machines().len(),
                catalog.vendors().len(),
                catalog.menus().len(),
                catalog.settings().dhcp.mode,
            );
            // Warnings only: the machine may have Secure Boot off.
            for w in appliance::kernel_signatures::warnings(&catalog, blobs.as_deref()) {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            cfg: ConfigArgs { config, overlay },
            mac,
            client_arch,
            vendor_class,
            user_class,
            path,
            chained,
            state,
        } => {
            let catalog = match load(&config, overlay.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let mut q =
                Query { mac: Some(mac), client_arch, vendor_class, user_class, path, chained, ..Query::default() };
            if let Some(state) = &state {
                let installs = appliance::install_store::InstallStore::new(state);
                q.install = Some(installs.machine(mac).unwrap_or_default());
                q.tokens = appliance::secret_files::existing_token_key(state)
                    .with_context(|| format!("reading the token key in {}", state.display()))?;
            }
            print!("{}", explain::explain(&catalog, &q)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rearm { state, mac } => {
            let installs = appliance::install_store::InstallStore::new(&state);
            let before = installs.installed(mac);
            let at = appliance::install_store::now();
            installs
                .update(|log| log.rearm(mac, at, appliance_core::install::RearmedBy::Command))
                .with_context(|| format!("writing {}", installs.path().display()))?;
            match before {
                Some(i) => println!(
                    "{mac}: re-armed (it reported installed {}); its next netboot follows its target",
                    appliance_core::install::utc(i.at)
                ),
                None => {
                    println!("{mac}: re-armed (it had not reported installed); its next netboot follows its target")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(*args),
        Command::Status { url } => {
            print!("{}", appliance::status_cli::run(&url)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { cfg: ConfigArgs { config, overlay }, out } => {
            let catalog = match load(&config, overlay.as_deref()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let files = explain::render_all(&catalog)?;
            if out.exists() {
                std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
            }
            for f in &files {
                let p = out.join(&f.path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&p, &f.bytes).with_context(|| format!("writing {}", p.display()))?;
            }
            println!("wrote {} files to {}", files.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    use appliance_core::catalog::DhcpMode;
    let mode = args.dhcp.map(|m| match m {
        DhcpModeArg::Server => DhcpMode::Server,
        DhcpModeArg::Proxy => DhcpMode::Proxy,
        DhcpModeArg::Off => DhcpMode::Off,
    });
    let mut opts = appliance::serve::ServeOptions::new(args.cfg.config, args.state.clone());
    opts.overlay = args.cfg.overlay;
    opts.bootloaders = args.bootloaders;
    if let Some(b) = args.blobs {
        opts.blobs = b;
    }
    opts.tftp_root = args.tftp_root;
    opts.dhcp_mode = mode;
    opts.advertise = args.advertise;
    opts.interface = args.interface.clone();
    opts.watch = (!args.no_watch).then_some(std::time::Duration::from_secs(2));
    if let CpuLatencyArg(Some(us)) = args.cpu_latency {
        opts.cpu_latency =
            appliance::latency::CpuLatency::new(appliance::latency::DEVICE, us, appliance::latency::DEFAULT_LINGER);
    }
    if let Some(n) = args.tftp_lockstep_threads {
        opts.tftp.lockstep_threads = n;
    }
    opts.tftp.lockstep_spin = std::time::Duration::from_micros(args.tftp_spin);
    opts.tftp.max_per_source = args.tftp_max_per_source;
    opts.tftp.max_timeout = std::time::Duration::from_secs(args.tftp_max_timeout);
    opts.http_limits.per_source = args.http_max_per_source;
    let limit = match appliance::descriptors::raise_limit() {
        Ok((before, now)) => {
            if now > before {
                tracing::info!(from = before, to = now, "raised the open file limit");
            }
            now
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the open file limit: {e}");
            1024
        }
    };
    let (tftp_total, http_total) =
        appliance::descriptors::fit(limit, args.tftp_max_transfers, args.http_max_connections);
    if (tftp_total, http_total) != (args.tftp_max_transfers, args.http_max_connections) {
        tracing::warn!(
            open_file_limit = limit,
            tftp_max_transfers = tftp_total,
            http_max_connections = http_total,
            "lowered the TFTP and HTTP totals to fit the open file limit"
        );
    }
    opts.tftp.max_transfers = tftp_total;
    opts.http_limits.total = http_total;
    opts.admin_token_file = args.admin_token_file.clone();
    opts.journal.enabled = args.journal == OnOff::On;
    opts.journal.limits =
        appliance_core::journal::Limits { machines: args.journal_machines, records: args.journal_records };
    opts.journal.file_bytes = args.journal_file_kib * 1024;
    opts.journal.keep = args.journal_keep;

    // Every socket is bound here, on the only thread, so that privileges can be dropped
    // before the runtime starts its threads (see `appliance::privileges`).
    let tftp = std::net::UdpSocket::bind((args.listen, args.tftp_port))
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .with_context(|| format!("binding TFTP to {}:{}", args.listen, args.tftp_port))?;
    let http = bind_http((args.listen, args.http_port).into())
        .with_context(|| format!("binding HTTP to {}:{}", args.listen, args.http_port))?;
    let dhcp = appliance::dhcp::DhcpSockets::bind(args.dhcp_port, Some(args.proxy_port), args.interface.as_deref())
        .with_context(|| format!("binding DHCP to port {}", args.dhcp_port))?;
    let admin = match args.admin_listen {
        AdminListenArg(Some(addr)) => {
            Some(bind_http(addr).with_context(|| format!("binding the admin API to {addr}"))?)
        }
        AdminListenArg(None) => None,
    };
    if let Some(name) = &args.user {
        let user = appliance::privileges::lookup(name)?;
        if let Err(e) = opts.cpu_latency.keep_open() {
            tracing::warn!("cpu latency: cannot open {} before dropping privileges: {e}", appliance::latency::DEVICE);
        }
        appliance::privileges::hand_over(&args.state, &user)?;
        let keep = appliance::privileges::kept(args.interface.is_some());
        appliance::privileges::drop_to(&user, &keep)?;
        let kept: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
        tracing::info!(user = %name, uid = %user.uid, capabilities = ?kept, "dropped privileges");
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let tftp = tokio::net::UdpSocket::from_std(tftp).context("registering the TFTP socket")?;
        let http = tokio::net::TcpListener::from_std(http).context("registering the HTTP socket")?;
        let admin =
            admin.map(tokio::net::TcpListener::from_std).transpose().context("registering the admin API socket")?;
        let listeners = appliance::serve::Listeners { dhcp: Some(dhcp), tftp, http, admin };
        let reload = std::sync::Arc::new(tokio::sync::Notify::new());
        let r = reload.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                r.notify_one();
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            }
        };
        appliance::serve::run(opts, listeners, reload, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The HTTP listener as tokio binds one (address reuse, so a restart need not wait out
/// TIME_WAIT; a backlog of 1,024), non-blocking for the runtime to take over.
fn bind_http(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let argv = ["appliance", "serve"].iter().chain(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_admin_api_listens_on_loopback_unless_told_otherwise() {
        assert_eq!(serve_args(&[]).admin_listen, AdminListenArg(Some("127.0.0.1:9090".parse().unwrap())));
        assert_eq!(serve_args(&["--admin-listen", "off"]).admin_listen, AdminListenArg(None));
        assert_eq!(serve_args(&["--admin-listen", "10.1.0.1:8443"]).admin_listen.0.unwrap().port(), 8443);
        let err = Cli::try_parse_from(["appliance", "serve", "--admin-listen", "9090"]).err().unwrap().to_string();
        assert!(err.contains("ADDRESS:PORT or `off`"), "{err}");
    }

    #[test]
    fn the_journal_is_on_unless_told_off() {
        let a = serve_args(&[]);
        assert_eq!((a.journal, a.journal_machines, a.journal_records), (OnOff::On, 4096, 200));
        assert_eq!(serve_args(&["--journal", "off"]).journal, OnOff::Off);
    }

    #[test]
    fn cpu_latency_defaults_to_zero_and_takes_off_or_microseconds() {
        assert_eq!(serve_args(&[]).cpu_latency, CpuLatencyArg(Some(0)));
        assert_eq!(serve_args(&["--cpu-latency", "off"]).cpu_latency, CpuLatencyArg(None));
        assert_eq!(serve_args(&["--cpu-latency", "50"]).cpu_latency, CpuLatencyArg(Some(50)));
        for bad in ["--cpu-latency=-1", "--cpu-latency=soon"] {
            let err = Cli::try_parse_from(["appliance", "serve", bad]).err().unwrap().to_string();
            assert!(err.contains("microseconds"), "{err}");
        }
    }
}
