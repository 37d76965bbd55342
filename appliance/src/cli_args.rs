//! The `appliance` command line: its subcommands, options and their value parsers, as clap
//! reads them. Part of the binary (`main.rs` dispatches on it), not of the library.

use appliance_core::mac::MacAddr;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Network-boot appliance: serves DHCP (or proxyDHCP), TFTP and HTTP so that x86 BIOS, x86 UEFI
/// and ARM64 (U-Boot and UEFI) machines boot what the YAML profiles say.
#[derive(Parser)]
#[command(name = "appliance", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the configuration comes from.
#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// Config directory: appliance.yaml, machines.yaml, menus.yaml and one YAML file per profile.
    #[arg(long, default_value = "profiles")]
    pub(crate) config: PathBuf,
    /// On-site MAC database overlay, merged over machines.yaml entry by entry (the overlay wins).
    #[arg(long)]
    pub(crate) overlay: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Validate a config directory; prints a one-line summary, or every error as
    /// FILE:LINE:COL: field.path: message and exits non-zero.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Fetched deb/url artifact bytes, one file per sha256 (`cargo xtask fetch` writes
        /// target/blobs): their kernels are checked for a Secure Boot signature too, and every
        /// `deb`/`url` source must be present there or downloadable (`url`, or `deb` with `url`
        /// and `deb_sha256`); each that is neither is named with the reason.
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
        /// Explain with the config the daemon serves from git (the commit recorded in --state)
        /// instead of --config; the output names the repository and commit.
        #[arg(long, requires = "state")]
        serving: bool,
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
    /// Grow the appliance image's data partition (the disk's last GPT partition, mounted) and
    /// its ext4 file system to the end of the disk; does nothing when it already fills it.
    /// The image's boot script runs it, as root, before the daemon starts.
    GrowData {
        /// The data partition's block device, e.g. /dev/vda3.
        partition: PathBuf,
        /// Where its file system is mounted.
        mount: PathBuf,
    },
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
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) cfg: ConfigArgs,
    /// Writable state: leases and the versioned artifact store (<state>/artifacts).
    #[arg(long, default_value = "/var/lib/appliance")]
    pub(crate) state: PathBuf,
    /// Bootloader binaries (undionly.kpxe, ipxe.efi, snponly.efi, grubnet*.efi), as
    /// `cargo xtask fetch` writes them to target/bootloaders.
    #[arg(long)]
    pub(crate) bootloaders: Option<PathBuf>,
    /// Fetched deb/url artifact bytes, one file per sha256 [default: <state>/blobs].
    #[arg(long)]
    pub(crate) blobs: Option<PathBuf>,
    /// Read-only fallback TFTP root for files that are neither configs nor artifacts.
    #[arg(long)]
    pub(crate) tftp_root: Option<PathBuf>,
    /// Network interface to serve on (binds DHCP to it with SO_BINDTODEVICE).
    #[arg(long)]
    pub(crate) interface: Option<String>,
    /// DHCP mode, overriding appliance.yaml: server (addresses + boot info), proxy (boot info
    /// beside the site's DHCP server, also on port 4011), off (no DHCP; only listen).
    #[arg(long, value_enum)]
    pub(crate) dhcp: Option<DhcpModeArg>,
    /// Address to listen on for TFTP and HTTP.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) listen: std::net::Ipv4Addr,
    /// Address clients reach us at, overriding appliance.yaml's server.address.
    #[arg(long)]
    pub(crate) advertise: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value_t = 80)]
    pub(crate) http_port: u16,
    #[arg(long, default_value_t = 69)]
    pub(crate) tftp_port: u16,
    /// DHCP server port (clients' replies go to 68); the proxy also listens on 4011.
    #[arg(long, default_value_t = 67)]
    pub(crate) dhcp_port: u16,
    /// ProxyDHCP port for PXE clients' follow-up requests.
    #[arg(long, default_value_t = 4011)]
    pub(crate) proxy_port: u16,
    /// Do not watch the config dir for changes (SIGHUP still reloads).
    #[arg(long)]
    pub(crate) no_watch: bool,
    /// CPU wake-up latency (microseconds) requested through /dev/cpu_dma_latency while TFTP
    /// transfers and HTTP responses run, released 100 ms after the last one; `off` to never ask.
    /// An idle CPU in a deep sleep state (or a halted vCPU) adds its wake-up time to every
    /// lockstep TFTP block: 0 keeps idle CPUs polling during boots. Needs root; without it the
    /// daemon warns once and serves as before.
    #[arg(long, default_value = "0", value_name = "MICROSECONDS|off", value_parser = parse_cpu_latency)]
    pub(crate) cpu_latency: CpuLatencyArg,
    /// Lockstep TFTP transfers (windowsize 1: most firmware, GRUB, U-Boot) that may each run on
    /// a thread of their own, waiting for ACKs in a blocking `recv`: fewer system calls and no
    /// scheduler hop between an ACK and the next block. Further lockstep transfers, and all
    /// windowed ones, run on the async engine. 0 keeps every transfer on the async engine
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub(crate) tftp_lockstep_threads: Option<usize>,
    /// How long (microseconds) a lockstep thread polls for the client's next ACK before it
    /// sleeps. A client that answers within it (same host, fast LAN) saves both sides a sleep
    /// and a wake-up per block; one that answers slower, like most firmware, stops being
    /// polled after a miss (backing off up to 1,023 blocks). No thread polls while more
    /// transfers run than there are lockstep threads. 0 never polls.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 20)]
    pub(crate) tftp_spin: u64,
    /// Address of the admin API (`POST /admin/rearm/<mac>`, bearer token), or `off`. Keep it
    /// on loopback or a management network: it is for operators, never for machines.
    #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDRESS:PORT|off", value_parser = parse_admin_listen)]
    pub(crate) admin_listen: AdminListenArg,
    /// The boot journal: every DHCP exchange, TFTP transfer and HTTP request per machine, kept
    /// in memory for the status page and appended to <state>/journal/journal.jsonl; `off` makes
    /// no records at all.
    #[arg(long, value_enum, default_value = "on")]
    pub(crate) journal: OnOff,
    /// Machines the journal keeps in memory (the least recently heard go first).
    #[arg(long, default_value_t = appliance_core::journal::Limits::default().machines, value_name = "N")]
    pub(crate) journal_machines: usize,
    /// Records the journal keeps in memory per machine.
    #[arg(long, default_value_t = appliance_core::journal::Limits::default().records, value_name = "N")]
    pub(crate) journal_records: usize,
    /// Size (KiB) at which the journal file is rotated.
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    pub(crate) journal_file_kib: u64,
    /// Rotated journal files kept (journal.jsonl.1 …).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) journal_keep: usize,
    /// File holding the admin API's bearer token [default: <state>/admin.token, created once
    /// with a random token, mode 0600].
    #[arg(long, value_name = "FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// TFTP transfers at once. Past it, a request takes the place of the transfer that made no
    /// progress (no new ACK) for longest, if it has made none for 3 s; otherwise it is dropped
    /// and the client asks again. Lowered to fit the file descriptor limit, if need be.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) tftp_max_transfers: usize,
    /// TFTP transfers at once from one source address, with the same rule among its own.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) tftp_max_per_source: usize,
    /// Longest retransmission timeout (seconds) a client's RFC 2349 `timeout` option is
    /// granted; a longer one is ignored, as the RFC allows (U-Boot asks for 5).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=255))]
    pub(crate) tftp_max_timeout: u64,
    /// HTTP connections at once. Past it, a new connection takes the place of the one idle
    /// longest (no byte either way for 5 s), or is closed at once. Lowered to fit the file
    /// descriptor limit, if need be.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) http_max_connections: usize,
    /// HTTP connections at once from one source address, with the same rule among its own.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub(crate) http_max_per_source: usize,
    /// Once every socket is bound, become this user (started as root): the state dir is given
    /// to it, every capability is dropped but CAP_NET_RAW when router advertisements are sent
    /// (--interface), and no-new-privileges is set. The appliance image runs it as `appliance`.
    #[arg(long, value_name = "NAME")]
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) git: GitArgs,
}

/// Following a git repository instead of a config directory.
#[derive(Args)]
pub(crate) struct GitArgs {
    /// Follow this git repository (https://, http://, git://, ssh:// or user@host:path): each
    /// new commit of --ref is fetched, checked like `check`, its artifacts obtained and
    /// published, and only then served; a commit that fails is refused (every error in the log
    /// and on GET /admin/git) and the last good one keeps serving. --config then names a
    /// directory served only until the first good commit.
    #[arg(long, value_name = "URL")]
    pub(crate) config_git: Option<String>,
    /// The branch (or full ref, refs/tags/...) to follow.
    #[arg(long = "ref", default_value = "main", requires = "config_git")]
    pub(crate) git_ref: String,
    /// How often to fetch (POST /hooks/git on the admin API and SIGHUP fetch at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "config_git")]
    pub(crate) poll: std::time::Duration,
    /// The config directory inside the repository ("" for its root).
    #[arg(long, default_value = "profiles", requires = "config_git")]
    pub(crate) config_subdir: PathBuf,
    /// HTTPS: a file with an access token, sent as the password of HTTP basic authentication.
    #[arg(long, value_name = "FILE", requires = "config_git")]
    pub(crate) git_token_file: Option<PathBuf>,
    /// HTTPS: the user name sent with the token.
    #[arg(long, default_value = "git", requires = "git_token_file")]
    pub(crate) git_user: String,
    /// SSH: a deploy key (private key file) for the system's ssh program.
    #[arg(long, value_name = "FILE", requires = "config_git")]
    pub(crate) git_ssh_key: Option<PathBuf>,
    /// Extra trusted CA certificates (PEM) for HTTPS, besides the built-in Mozilla roots: for
    /// the git server and for `url:` artifact downloads.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// clap's value parser for durations: `30s`, `2m`, `500ms`, `1h`, or seconds.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    appliance_core::config::values::parse_duration(s).map_err(|e| e.to_string())
}

/// `--admin-listen`: an address, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdminListenArg(pub(crate) Option<std::net::SocketAddr>);

/// clap's value parser (see `parse_cpu_latency` for why a `String` error).
pub(crate) fn parse_admin_listen(s: &str) -> Result<AdminListenArg, String> {
    if s == "off" {
        return Ok(AdminListenArg(None));
    }
    s.parse().map(|a| AdminListenArg(Some(a))).map_err(|_| format!("expected ADDRESS:PORT or `off`, got {s:?}"))
}

/// `--cpu-latency`: microseconds, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CpuLatencyArg(pub(crate) Option<i32>);

/// clap's value parser: clap prints the message and exits, no caller branches on it, so a
/// `String` is all the error needs to be.
pub(crate) fn parse_cpu_latency(s: &str) -> Result<CpuLatencyArg, String> {
    if s == "off" {
        return Ok(CpuLatencyArg(None));
    }
    match s.parse::<i32>() {
        Ok(us) if us >= 0 => Ok(CpuLatencyArg(Some(us))),
        _ => Err(format!("expected a number of microseconds (0 or more) or `off`, got {s:?}")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum DhcpModeArg {
    Server,
    Proxy,
    Off,
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
