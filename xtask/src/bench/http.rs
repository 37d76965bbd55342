//! HTTP: a big artifact to 1 and to many concurrent clients, against nginx serving the same
//! file (`sendfile on`), and small responses per second: our rendered per-machine iPXE
//! scripts (`/ipxe/script?mac=...`, decide + render for every request) and answer files
//! (`/answers/<mac>/user-data`, a cloud-config rendered with the machine's token), each against
//! nginx serving a static file of the same size (the reference: nothing can be faster than a
//! static file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::httpc::{Checker, Conn};
use super::ours;
use super::peers::{self, MemSampler, Proc};
use super::report::{median, mib, num, percentile, ratio, Report, Table};
use super::Ctx;

struct Target<'a> {
    label: &'static str,
    addr: SocketAddr,
    big: String,
    proc: &'a Proc,
}

/// One small-response case: what is requested (`path` of the request number) from whom.
struct Small<'a> {
    /// Key in the report: `script` or `answers`.
    case: &'static str,
    target: &'a Target<'a>,
    what: &'static str,
    path: Arc<dyn Fn(u64) -> String + Send + Sync>,
}

/// A different (unknown) machine per request number.
fn mac(i: u64) -> String {
    format!("02-be-00-{:02x}-{:02x}-{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn script_path(i: u64) -> String {
    format!("/ipxe/script?mac={}&buildarch=x86_64&platform=efi", mac(i))
}

fn answer_path(i: u64) -> String {
    format!("/answers/{}/user-data", mac(i))
}

pub fn start_nginx(ctx: &Ctx, root: &Path) -> Result<(Proc, SocketAddr)> {
    let dir = ctx.scratch("nginx")?;
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let port = peers::free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let d = |p: &Path| p.display().to_string();
    let conf = format!(
        "worker_processes auto;\nuser root root;\npid {pid};\nerror_log {err};\ndaemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  default_type application/octet-stream;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n  \
         keepalive_requests 1000000;\n  access_log {acc};\n  client_body_temp_path {t};\n  proxy_temp_path {t};\n  \
         fastcgi_temp_path {t};\n  uwsgi_temp_path {t};\n  scgi_temp_path {t};\n  \
         server {{ listen {addr}; root {root}; }}\n}}\n",
        pid = d(&dir.join("nginx.pid")),
        err = d(&dir.join("error.log")),
        acc = d(&dir.join("access.log")),
        t = d(&tmp),
        root = d(root),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = ctx.peers.command(&ctx.peers.nginx);
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path).args(["-e", "stderr"]);
    let mut p = Proc::start("nginx", cmd, &ctx.work.join("nginx.log"))?;
    peers::wait_ready(&mut p, Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok())?;
    Ok((p, addr))
}

/// Big file: `clients` connections at once, each downloading `repeats` times in a row.
/// Returns (wall seconds, per-client completion seconds).
fn big_once(
    ctx: &Ctx,
    addr: SocketAddr,
    path: &str,
    clients: usize,
    repeats: usize,
    expected: &Arc<Vec<u8>>,
    full_check: bool,
) -> Result<(f64, Vec<f64>)> {
    ctx.rt.block_on(async {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (exp, path) = (expected.clone(), path.to_string());
            set.spawn(async move {
                let mut c = Conn::connect(addr).await?;
                for _ in 0..repeats {
                    let mut check = Checker::new(&exp, full_check);
                    let (status, _) = c.get(&path, |b| check.feed(b)).await?;
                    if status != 200 || !check.ok() {
                        bail!("GET {path}: status {status}, body {} bytes, matches: {}", check.offset, !check.mismatch);
                    }
                }
                Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
            });
        }
        let mut done = Vec::new();
        while let Some(j) = set.join_next().await {
            done.push(j??);
        }
        Ok((start.elapsed().as_secs_f64(), done))
    })
}

/// Small responses: `conns` keep-alive connections requesting for `secs`. Returns
/// (requests per second, latencies in ms).
fn small_once(ctx: &Ctx, case: &Small<'_>, conns: usize, secs: f64) -> Result<(f64, Vec<f64>)> {
    let addr = case.target.addr;
    ctx.rt.block_on(async move {
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(secs);
        let mut set = tokio::task::JoinSet::new();
        for c in 0..conns {
            let path_of = case.path.clone();
            set.spawn(async move {
                let mut conn = Conn::connect(addr).await?;
                let mut lat = Vec::new();
                let mut i = c as u64 * 1_000_000;
                while Instant::now() < until {
                    let path = path_of(i);
                    i += 1;
                    let t0 = Instant::now();
                    let (status, len) = conn.get(&path, |_| {}).await?;
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    if status != 200 || len == 0 {
                        bail!("GET {path}: status {status}, {len} bytes");
                    }
                }
                Ok::<Vec<f64>, anyhow::Error>(lat)
            });
        }
        let mut all = Vec::new();
        while let Some(j) = set.join_next().await {
            all.extend(j??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        Ok((all.len() as f64 / elapsed, all))
    })
}

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let plan = &ctx.plan;
    let size = plan.http_big_size;
    let mb = size as f64 / 1e6;
    let big = ours::data_file(ctx, "http", size)?;
    let config = ctx.scratch("http-config")?;
    ours::write_config_with_answers(&config, &big, &ours::data_file(ctx, "small-initrd", 50_000)?)?;
    eprintln!("bench: http: starting our daemon (publishes the {mb:.0} MB artifact) and nginx");
    let ours = ours::start_loopback(ctx, "http-ours", &config, None, None, &[])?;
    let big_path = ours.artifact_path("vmlinuz")?;
    // nginx serves the same bytes, and static files as big as one of our scripts and answers.
    let root: PathBuf = ctx.scratch("nginx-root")?;
    ours::link_or_copy(&big, &root.join("vmlinuz"))?;
    let (script, answer) = ctx.rt.block_on(async {
        let mut c = Conn::connect(ours.http).await?;
        Ok::<_, anyhow::Error>((c.get_body(&script_path(0)).await?, c.get_body(&answer_path(0)).await?))
    })?;
    if !script.starts_with(b"#!ipxe") {
        bail!("our script does not look like an iPXE script: {}", String::from_utf8_lossy(&script));
    }
    if !answer.starts_with(b"#cloud-config") {
        bail!("our answer file does not look like cloud-config: {}", String::from_utf8_lossy(&answer));
    }
    std::fs::write(root.join("script.ipxe"), &script)?;
    std::fs::write(root.join("user-data"), &answer)?;
    let (nginx, naddr) = start_nginx(ctx, &root)?;
    let expected = Arc::new(std::fs::read(&big)?);
    let targets = [
        Target { label: "ours", addr: ours.http, big: big_path, proc: &ours.proc },
        Target { label: "nginx", addr: naddr, big: "/vmlinuz".into(), proc: &nginx },
    ];
    let [ours_t, nginx_t] = &targets;
    let fixed = |p: &'static str| -> Arc<dyn Fn(u64) -> String + Send + Sync> { Arc::new(move |_| p.to_string()) };
    let smalls = [
        Small { case: "script", target: ours_t, what: "rendered /ipxe/script", path: Arc::new(script_path) },
        Small { case: "script", target: nginx_t, what: "static file, script's size", path: fixed("/script.ipxe") },
        Small {
            case: "answers",
            target: ours_t,
            what: "rendered /answers/<mac>/user-data",
            path: Arc::new(answer_path),
        },
        Small { case: "answers", target: nginx_t, what: "static file, answer's size", path: fixed("/user-data") },
    ];
    let sizes = BTreeMap::from([("script", script.len()), ("answers", answer.len())]);

    let mut walls: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let mut completions: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let mut mem: BTreeMap<(usize, &str), (u64, Option<u64>)> = BTreeMap::new();
    let mut rps: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let mut client_cpu: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let mut lat: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut small_cpu: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for &clients in &plan.http_clients {
            let repeats = if clients == 1 { plan.http_big_single_repeats } else { 1 };
            for t in &targets {
                let pid = t.proc.pid();
                let cpu_before = t.proc.cpu_secs();
                let client_before = peers::self_cpu_secs();
                let sampler = MemSampler::start(pid, Duration::from_millis(100));
                let (wall, done) = big_once(ctx, t.addr, &t.big, clients, repeats, &expected, round == 0)
                    .with_context(|| format!("{} big file, {clients} clients", t.label))?;
                let peak = sampler.stop();
                cpu.entry((clients, t.label)).or_default().push(t.proc.cpu_secs() - cpu_before);
                client_cpu.entry((clients, t.label)).or_default().push(peers::self_cpu_secs() - client_before);
                let hwm = (t.label == "ours").then(|| peers::vm_hwm_kib(pid)).flatten();
                // Memory only from the first round: the servers start fresh and the cases go from
                // fewest to most clients, so each peak is that case's (freed memory is not always
                // returned to the system, which would carry a bigger case's peak into later rounds).
                if round == 0 {
                    mem.insert((clients, t.label), (peak.pss_kib, hwm));
                }
                let bytes = (clients * repeats) as f64 * mb;
                eprintln!(
                    "bench: http: round {}/{} {clients:>3} client(s) x {repeats} x {mb:.0} MB {:<6} {:>6.2} s \
                     {:>7.0} MB/s",
                    round + 1,
                    plan.rounds,
                    t.label,
                    wall,
                    bytes / wall
                );
                walls.entry((clients, t.label)).or_default().push(wall);
                completions.entry((clients, t.label)).or_default().extend(done);
            }
        }
        for small in &smalls {
            let (t, key) = (small.target, (small.case, small.target.label));
            let cpu_before = t.proc.cpu_secs();
            let (r, l) = small_once(ctx, small, plan.http_script_conns, plan.http_script_secs)
                .with_context(|| format!("{} small responses ({})", t.label, small.what))?;
            eprintln!(
                "bench: http: round {}/{} small responses {:<7} {:<6} {:>8.0} req/s, p99 {:.2} ms",
                round + 1,
                plan.rounds,
                small.case,
                t.label,
                r,
                percentile(&l, 99.0)
            );
            rps.entry(key).or_default().push(r);
            small_cpu.entry(key).or_default().push((t.proc.cpu_secs() - cpu_before) / (r * plan.http_script_secs));
            lat.entry(key).or_default().extend(l);
        }
    }

    let mut table = Table::new(
        format!("HTTP, {mb:.0} MB artifact and small responses (median of {} rounds)", plan.rounds),
        &["case", "server", "time", "throughput", "vs nginx", "p50 / p99", "server CPU", "server peak memory"],
    );
    let mut rows = Vec::new();
    for &clients in &plan.http_clients {
        let repeats = if clients == 1 { plan.http_big_single_repeats } else { 1 };
        let bytes = (clients * repeats) as f64 * mb;
        let reference = median(&walls[&(clients, "nginx")]);
        for t in &targets {
            let w = median(&walls[&(clients, t.label)]);
            let c = &completions[&(clients, t.label)];
            let case = if clients == 1 {
                format!("{mb:.0} MB, 1 client, {repeats} downloads in a row")
            } else {
                format!("{mb:.0} MB, {clients} clients at once")
            };
            let (pss, hwm) = mem[&(clients, t.label)];
            table.row(vec![
                case,
                t.label.to_string(),
                format!("{} s", num(w)),
                format!("{} MB/s", num(bytes / w)),
                ratio(reference / w),
                if clients == 1 {
                    "-".to_string()
                } else {
                    format!("{} / {} s", num(percentile(c, 50.0)), num(percentile(c, 99.0)))
                },
                {
                    let secs = median(&cpu[&(clients, t.label)]);
                    let client = median(&client_cpu[&(clients, t.label)]);
                    format!("{} s ({} ms/GB; client {} s)", num(secs), num(secs * 1e6 / bytes), num(client))
                },
                match hwm {
                    Some(h) => format!("VmHWM {} (PSS {})", mib(h), mib(pss)),
                    None => format!("PSS {}", mib(pss)),
                },
            ]);
            rows.push(json!({
                "case": "big", "clients": clients, "downloads_per_client": repeats, "server": t.label,
                "wall_s": walls[&(clients, t.label)], "median_wall_s": w, "mb_per_s": bytes / w,
                "throughput_vs_nginx": reference / w,
                "completion_p50_s": percentile(c, 50.0), "completion_p99_s": percentile(c, 99.0),
                "server_cpu_s": cpu[&(clients, t.label)], "client_cpu_s": client_cpu[&(clients, t.label)],
                "peak_pss_kib": pss, "vm_hwm_kib": hwm,
            }));
        }
    }
    for small in &smalls {
        let key = (small.case, small.target.label);
        let r = median(&rps[&key]);
        let ref_rps = median(&rps[&(small.case, "nginx")]);
        let l = &lat[&key];
        table.row(vec![
            format!("small responses ({}), {} keep-alive connections", small.case, plan.http_script_conns),
            format!("{} ({})", small.target.label, small.what),
            format!("{} s", num(plan.http_script_secs)),
            format!("{} req/s", num(r)),
            ratio(r / ref_rps),
            format!("{} / {} ms", num(percentile(l, 50.0)), num(percentile(l, 99.0))),
            format!("{} us/request", num(median(&small_cpu[&key]) * 1e6)),
            "-".to_string(),
        ]);
        rows.push(json!({
            "case": "small", "what_case": small.case, "server": small.target.label, "what": small.what,
            "connections": plan.http_script_conns,
            "requests_per_s": rps[&key], "median_requests_per_s": r, "vs_nginx": r / ref_rps,
            "latency_p50_ms": percentile(l, 50.0), "latency_p99_ms": percentile(l, 99.0),
            "bytes": sizes[small.case], "server_cpu_s_per_request": small_cpu[&key],
        }));
    }
    table.notes.push(format!(
        "nginx {}: `worker_processes auto` (2), `sendfile on`, `tcp_nopush on`, access log on (ours logs every \
         request too). Memory (first round; the servers start fresh and the cases run from fewest to most \
         clients): ours VmHWM and peak PSS; nginx peak PSS summed over master and workers. The script \
         responses are {} bytes, the answer files (cloud-config with the machine's token) {} bytes; both \
         servers use keep-alive. Server CPU: user + system time of the server's \
         processes (cpuacct cgroup), median per measurement.",
        ctx.peers.versions.get("nginx").map_or("", String::as_str),
        script.len(),
        answer.len()
    ));
    report.tables.push(table);
    report.sections.insert("http".into(), json!({ "file_bytes": size, "rows": rows }));
    for &clients in &plan.http_clients {
        let r = median(&walls[&(clients, "nginx")]) / median(&walls[&(clients, "ours")]);
        report.target(
            format!("HTTP {mb:.0} MB, {clients} client(s): >= 0.9x nginx's throughput"),
            Some(r >= 0.9),
            format!("{} of nginx", ratio(r)),
        );
    }
    drop(nginx);
    drop(ours);
    Ok(())
}
