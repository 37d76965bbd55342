//! The `appliance` command: parses the command line, sets up logging and dispatches.

use anyhow::{Context, Result};
use appliance_core::explain::{self, Query};
use clap::Parser;
use std::process::ExitCode;

mod cli_args;
use cli_args::*;

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
            if let Some(blobs) = &blobs {
                let missing = appliance::obtain::unobtainable(
                    &catalog,
                    std::path::Path::new("/nonexistent"),
                    &appliance::artifacts::Blobs::dir(blobs),
                );
                if !missing.is_empty() {
                    for m in &missing {
                        eprintln!("{}: {m}", config.display());
                    }
                    eprintln!("{} source(s) cannot be obtained", missing.len());
                    return Ok(ExitCode::FAILURE);
                }
            }
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
            serving,
        } => {
            let (config, origin) = match state.as_deref().filter(|_| serving) {
                Some(s) => appliance::follow::record::serving_config(s)
                    .with_context(|| format!("{} records no commit served from git", s.display()))?,
                None => (config, appliance_core::catalog::ConfigSource::Dir),
            };
            let catalog = match load(&config, overlay.as_deref()) {
                Ok(c) => c.with_config_source(origin),
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
        Command::GrowData { partition, mount } => {
            println!("{}", appliance::grow_data::grow(&partition, &mount)?);
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

    if let Some(url) = &args.git.config_git {
        let g = &args.git;
        let tls = appliance::http_client::Tls { ca_file: g.ca_file.clone() };
        let auth = appliance::follow::git::Auth {
            token_file: g.git_token_file.clone(),
            user: g.git_user.clone(),
            ssh_key: g.git_ssh_key.clone(),
            known_hosts: Some(args.state.join("git").join("known_hosts")),
        };
        let remote = appliance::follow::git::Remote { url: url.clone(), reference: g.git_ref.clone(), auth, tls };
        opts.git = Some(appliance::follow::GitSource { remote, poll: g.poll, subdir: g.config_subdir.clone() });
    }

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
    let code = rt.block_on(async move {
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
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    // A download or fetch may still run on a blocking thread: it is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
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
