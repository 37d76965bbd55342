//! Request routing: a plain `match (method, path)` over the few things we serve. Boot decisions
//! come from `decide` and scripts from `render`; this file only reads requests, calls them and
//! writes responses, one log line per request.

use super::body::Body;
use super::files::{self, Mutability, Validators};
use super::HttpContext;
use crate::artifacts;
use appliance_core::boot_file::BootFile;
use appliance_core::client::{self, TftpRequest};
use appliance_core::decide::{decide, Decision, Outcome, Stage};
use appliance_core::http_path::{check_path, second_stage_path};
use appliance_core::log_text::escaped;
use appliance_core::mac::MacAddr;
use appliance_core::render::{self, Format};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::fs::{File, Metadata};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// What the log line of one request says besides method, path, status and size.
#[derive(Default)]
pub(super) struct Notes {
    pub mac: Option<MacAddr>,
    pub decision: Option<String>,
    pub rule: Option<String>,
    /// For artifacts: the version to mark as used when the transfer ends.
    pub touch: Option<(String, String)>,
    /// The decision behind the response, for the journal.
    pub decided: Option<appliance_core::journal::Decided>,
    /// The request fetched this answer file.
    pub answer: Option<String>,
    /// The request was an installer's report: what it said, once it was read.
    pub installer: Option<(Option<appliance_core::events::EventKind>, Option<String>)>,
}

pub(super) async fn handle(ctx: &HttpContext, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let latency = ctx.cpu_latency.hold();
    let mut notes = Notes::default();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let telemetry = ctx.shared.telemetry.clone();
    telemetry.metrics.http.in_flight.inc();
    let response = match (&method, path.strip_prefix("/events/")) {
        (&Method::POST, Some(rest)) if check_path(&path).is_ok() => {
            notes.installer = Some((None, None));
            super::provisioning::event(ctx, req, rest, &mut notes).await
        }
        _ => route(ctx, &req, peer, &mut notes).await,
    };
    let status = response.status().as_u16();
    let length = (method != Method::HEAD)
        .then(|| response.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok())
        .flatten();
    let running = super::observe::running(ctx, &notes, peer, &path, length);
    let touches = ctx.touches.clone();
    let shared = ctx.shared.clone();
    response.map(move |body| {
        body.on_drop(move |bytes| {
            drop(latency);
            if let Some((profile, version)) = &notes.touch {
                touches.touch(profile, version, SystemTime::now());
            }
            // Method and path are the client's bytes: escaped and bounded (log_text).
            tracing::info!(
                method = %escaped(method.as_str()),
                path = %escaped(&path),
                status,
                bytes,
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                %peer,
                mac = notes.mac.map(tracing::field::display),
                decision = notes.decision,
                rule = notes.rule,
                "http request"
            );
            // Last: the journal's record takes the notes and the path rather than copies.
            let done = super::observe::Done { method: &method, path, status, bytes, length, started, peer };
            super::observe::finished(&shared, notes, done, running);
        })
    })
}

async fn route(ctx: &HttpContext, req: &Request<Incoming>, peer: SocketAddr, notes: &mut Notes) -> Response<Body> {
    let path = second_stage_path(req.uri().path());
    let head = req.method() == Method::HEAD;
    if let Err(why) = check_path(path) {
        return text(StatusCode::BAD_REQUEST, why, head);
    }
    // Boot programs from the bootloader directory (UEFI HTTP Boot fetches `ipxe.efi`).
    let boot_program = path.strip_prefix('/').and_then(BootFile::from_file_name).filter(|b| b.is_bootloader());
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/boot.ipxe") => match render::ipxe_entry(&ctx.shared.server()) {
            Ok(script) => script_response(script, head),
            Err(e) => internal_error(format_args!("rendering the iPXE entry script: {e:#}"), head),
        },
        (&Method::GET | &Method::HEAD, "/ipxe/script") => {
            script(ctx, req.uri().query().unwrap_or(""), peer, notes, head)
        }
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/artifacts/") => {
            artifact(ctx, req, &p["/artifacts/".len()..], notes).await
        }
        (&Method::GET | &Method::HEAD, p) if boot_image_name(p).is_some() => {
            boot_image(ctx, req, boot_image_name(p).unwrap_or_default(), notes).await
        }
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/answers/") => {
            super::provisioning::answer(ctx, &p["/answers/".len()..], req.uri().query().unwrap_or(""), notes, head)
        }
        (_, p) if p.starts_with("/events/") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "events are posted", head);
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/grub/") || p.starts_with("/debian-installer/") => {
            grub_file(ctx, p, peer, notes, head)
        }
        (&Method::GET | &Method::HEAD, _) => match boot_program {
            Some(file) => bootloader(ctx, req, file).await,
            None => not_found(head),
        },
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here", false);
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
}

/// `/ipxe/script?mac=..&buildarch=..&platform=..`: the per-machine script or menu.
fn script(ctx: &HttpContext, query: &str, peer: SocketAddr, notes: &mut Notes, head: bool) -> Response<Body> {
    let mut client = client::from_http_query(query);
    let Some(mac) = client.mac else {
        let msg = "missing or malformed mac parameter (expected ?mac=52-54-00-12-34-56&buildarch=..&platform=..)";
        return text(StatusCode::BAD_REQUEST, msg, head);
    };
    notes.mac = Some(mac);
    if let Some(dhcp) = ctx.shared.recalled_dhcp(mac, Instant::now()) {
        client.merge_overheard(&dhcp);
    }
    if let std::net::IpAddr::V4(ip) = peer.ip() {
        client.ip = Some(ip);
        // Later TFTP requests from this address (no MAC in their path) are this machine.
        ctx.shared.remember_ip(mac, ip);
    }
    // Installed machines boot their disk (`after_install: local`); a `stat` of the install log.
    client.installed = ctx.installs.installed(mac);
    let catalog = ctx.shared.catalog();
    let server = ctx.shared.server();
    let decision = decide(&catalog, &client, Stage::IpxeScript);
    notes.decision = Some(describe(&decision));
    if ctx.shared.telemetry.journal.enabled() {
        notes.decided = Some(appliance_core::journal::Decided::new(&decision));
    }
    notes.rule = Some(decision.target_rule.to_string());
    match render::render(&catalog, &decision, &server, Format::Ipxe) {
        Ok(Some(script)) => script_response(script, head),
        Ok(None) => text(StatusCode::NOT_FOUND, "no boot script for this machine", head),
        Err(e) => internal_error(format_args!("rendering the iPXE script for {mac}: {e:#}"), head),
    }
}

/// `/grub/…` and `/debian-installer/<arch>/grub/…`: the config a signed GRUB reads, for the
/// machine at the request's source address (its name says nothing of the machine), and a quick
/// 404 for the module lists and anything else it probes.
fn grub_file(ctx: &HttpContext, path: &str, peer: SocketAddr, notes: &mut Notes, head: bool) -> Response<Body> {
    let TftpRequest::GrubConfig(facts) = client::classify_tftp(path) else { return not_found(head) };
    if facts.ip_prefix {
        return not_found(head);
    }
    let peer = match peer.ip() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    let stage = (Stage::Grub, Format::Grub);
    match crate::serve::identify::config_file(&ctx.shared, &ctx.installs, path, &facts, stage, peer) {
        Ok((decision, text)) => {
            notes.mac = decision.machine.mac;
            notes.decision = Some(describe(&decision));
            notes.rule = Some(decision.target_rule.to_string());
            match text {
                Some(text) => script_response(text, head),
                None => not_found(head),
            }
        }
        Err(e) => internal_error(format_args!("rendering the GRUB config at {path}: {e:#}"), head),
    }
}

fn describe(d: &Decision) -> String {
    match &d.outcome {
        Outcome::Boot { profile, version } => format!("boot {profile}/{version}"),
        Outcome::Menu { menu } => format!("menu {menu}"),
        Outcome::Local => "local".into(),
        Outcome::Ignore { reason } => format!("ignore: {reason}"),
        Outcome::IpxeScript => "ipxe script".into(),
        Outcome::BootFile { file, .. } => format!("boot file {}", file.file_name()),
        Outcome::BootImage { shim } => format!("boot image with {}", shim.file_name()),
    }
}

/// The file name in a path under the boot images' URL directory.
fn boot_image_name(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.strip_prefix(appliance_core::boot_image::URL_DIR)?.strip_prefix('/')
}

/// `/boot-image/<mac>.<arch>.img`: the machine's RAM-disk image (`super::boot_image`).
async fn boot_image(ctx: &HttpContext, req: &Request<Incoming>, name: &str, notes: &mut Notes) -> Response<Body> {
    use super::boot_image::{self as image, ImageError, Sources};
    let head = req.method() == Method::HEAD;
    notes.mac = appliance_core::boot_image::parse_file_name(name).map(|(mac, _)| mac);
    let (shared, store, bootloaders, cache, installs) =
        (ctx.shared.clone(), ctx.store.clone(), ctx.bootloaders.clone(), ctx.boot_images.clone(), ctx.installs.clone());
    let name = name.to_string();
    let built = tokio::task::spawn_blocking(move || {
        let src = Sources {
            shared: &shared,
            store: &store,
            bootloaders: bootloaders.as_deref(),
            cache: &cache,
            installs: &installs,
        };
        image::open(&src, &name)
    })
    .await;
    match built {
        Ok(Ok(built)) => {
            notes.decision = Some(format!(
                "{}, image {} ({})",
                describe(&built.decision),
                built.key,
                if built.written { "built" } else { "cached" }
            ));
            notes.rule = Some(built.decision.target_rule.to_string());
            image::respond(req.headers(), head, built)
        }
        Ok(Err(ImageError::NoImage { decision })) => {
            if let Some(d) = decision {
                notes.decision = Some(describe(&d));
                notes.rule = Some(d.target_rule.to_string());
            }
            not_found(head)
        }
        Ok(Err(e)) => internal_error(format_args!("boot image {}: {e}", req.uri().path()), head),
        Err(e) => internal_error(format_args!("boot image {}: {e}", req.uri().path()), head),
    }
}

/// `/artifacts/<profile>/<version>/<file>` from the versioned store.
async fn artifact(ctx: &HttpContext, req: &Request<Incoming>, rest: &str, notes: &mut Notes) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let parts: Vec<&str> = rest.split('/').collect();
    let [profile, version, file] = parts[..] else { return not_found(head) };
    let (store, p, v, f) = (ctx.store.clone(), profile.to_string(), version.to_string(), file.to_string());
    let opened = blocking(move || artifacts::open(&store, &p, &v, &f)).await;
    let (file_handle, meta) = match opened {
        Ok(x) => x,
        Err(e) => return open_error(e, head),
    };
    ctx.touches.touch(profile, version, SystemTime::now());
    notes.touch = Some((profile.to_string(), version.to_string()));
    // Same version and file name means the same bytes, so this tag is strong without hashing.
    let validators = Validators {
        etag: format!("\"{version}-{file}\""),
        cache_control: "public, max-age=31536000, immutable",
        content_type: "application/octet-stream",
    };
    files::respond(req.headers(), head, (file_handle, &meta, Mutability::Immutable), &validators)
}

/// A boot program from the bootloader directory. The name is a `BootFile`'s, so a request
/// cannot choose the path; symlinks are followed, as an operator may link the distribution's
/// files in.
async fn bootloader(ctx: &HttpContext, req: &Request<Incoming>, file: BootFile) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let Some(dir) = ctx.bootloaders.clone() else { return not_found(head) };
    let opened = blocking(move || open_regular(&dir.join(file.file_name()))).await;
    let (handle, meta) = match opened {
        Ok(x) => x,
        Err(e) => return open_error(e, head),
    };
    // These files can be replaced in place, so the tag follows size and modification time.
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let validators = Validators {
        etag: format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanos()),
        cache_control: "no-cache",
        content_type: if file.is_efi() { "application/efi" } else { "application/octet-stream" },
    };
    files::respond(req.headers(), head, (handle, &meta, Mutability::Mutable), &validators)
}

pub(super) fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let f = File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a regular file"));
    }
    Ok((f, meta))
}

/// Runs a file-system call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

fn open_error(e: io::Error, head: bool) -> Response<Body> {
    match e.kind() {
        io::ErrorKind::InvalidInput => text(StatusCode::BAD_REQUEST, "not a plain file name", head),
        // A symlink out of the store looks like any missing file from outside.
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory => not_found(head),
        _ => internal_error(format_args!("opening a file to serve: {e}"), head),
    }
}

pub(super) fn script_response(script: String, head: bool) -> Response<Body> {
    let mut r = bytes_response(StatusCode::OK, "text/plain; charset=utf-8", script.into_bytes(), head);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn not_found(head: bool) -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found", head)
}

pub(super) fn internal_error(what: std::fmt::Arguments<'_>, head: bool) -> Response<Body> {
    tracing::error!("{what}");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error (see the appliance log)", head)
}

pub(super) fn text(status: StatusCode, message: &str, head: bool) -> Response<Body> {
    bytes_response(status, "text/plain; charset=utf-8", format!("{message}\n").into_bytes(), head)
}

fn bytes_response(status: StatusCode, content_type: &'static str, bytes: Vec<u8>, head: bool) -> Response<Body> {
    let len = bytes.len();
    let body = if head { Body::empty() } else { Body::full(bytes) };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
