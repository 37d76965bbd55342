//! The admin listener (`--admin-listen`, default 127.0.0.1:9090): a separate HTTP server for
//! operators and their tools, never for machines, which never serves an artifact.
//!
//! Routes are a table (`ROUTES`): method, path pattern (`{name}` matches one segment), who may
//! call it, and the handler; adding a route is adding a line. Each route says its access:
//! [`Access::Admin`] needs `Authorization: Bearer <admin token>` (401 without, 403 with a wrong
//! one), compared in constant time; the token is `<state>/admin.token` (created once, 0600) or
//! the file `--admin-token-file` names. The routes:
//!
//! - `POST /admin/rearm/<mac>`: re-arm a machine (its next netboot is decided by its target
//!   again), written durably to the install log before the 200.
//! - Read-only, [`Access::Public`] (`crate::observe::status`): `GET /status` (the machines
//!   table, transfers in progress, the catalog and its reloads), `GET /status/machines/<mac>`
//!   (a machine's timeline and what `explain` says for it), `GET /api/machines` and
//!   `GET /api/machines/<mac>` (the same as JSON), `GET /metrics` (Prometheus).

use crate::fair_share::Slot;
use crate::install_store::{self, InstallStore};
use crate::observe::status;
use appliance_core::fair_share::ShareLimits;
use appliance_core::install::RearmedBy;
use appliance_core::mac::MacAddr;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest as _, Sha256};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// What the admin routes work with.
pub struct AdminContext {
    pub installs: Arc<InstallStore>,
    /// The catalog, the per-MAC memory and the telemetry the read-only routes show.
    pub shared: Arc<crate::state::Shared>,
    /// The bearer token `Access::Admin` routes require.
    pub token: String,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the listener (for read-only routes that reveal nothing secret).
    Public,
    /// Only with the admin bearer token.
    Admin,
}

pub(crate) type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type Handler = fn(Arc<AdminContext>, Vec<String>, Request<Incoming>) -> Reply;

struct Route {
    method: Method,
    /// Segments; `{…}` matches any one segment, handed to the handler in order.
    pattern: &'static str,
    access: Access,
    handler: Handler,
}

const ROUTES: &[Route] = &[
    Route { method: Method::POST, pattern: "/admin/rearm/{mac}", access: Access::Admin, handler: rearm },
    Route { method: Method::GET, pattern: "/status", access: Access::Public, handler: status::overview_page },
    Route {
        method: Method::GET,
        pattern: "/status/machines/{mac}",
        access: Access::Public,
        handler: status::machine_page,
    },
    Route { method: Method::GET, pattern: "/api/machines", access: Access::Public, handler: status::machines_json },
    Route {
        method: Method::GET,
        pattern: "/api/machines/{mac}",
        access: Access::Public,
        handler: status::machine_json,
    },
    Route { method: Method::GET, pattern: "/metrics", access: Access::Public, handler: status::metrics },
];

/// The route for a path, and the values of its `{…}` segments.
fn find(path: &str) -> Option<(&'static Route, Vec<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().find_map(|r| {
        let pattern: Vec<&str> = r.pattern.trim_start_matches('/').split('/').collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, s) in pattern.iter().zip(&segments) {
            if p.starts_with('{') && p.ends_with('}') && !s.is_empty() {
                params.push(s.to_string());
            } else if p != s {
                return None;
            }
        }
        Some((r, params))
    })
}

/// Serves the admin routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<AdminContext>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(5);
    crate::http::accept_until(listener, "admin", ADMIN_LIMITS, grace, shutdown, move |stream, peer, slot| {
        connection(stream, peer, ctx.clone(), slot)
    })
    .await
}

/// Fair shares on the admin listener: an operator's browser, `appliance status` and a
/// Prometheus scraper need a handful of connections; when the recipe opens the listener on the
/// boot network, one host holding idle connections must not lock the others out.
const ADMIN_LIMITS: ShareLimits = ShareLimits { per_source: 16, total: 128, evict_after: Duration::from_secs(5) };

/// One admin client: requests are small, so a stop ends the connection after its request.
async fn connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<AdminContext>, slot: Slot) {
    // The slot is held (and the connection counted) until this returns.
    let mut stop = slot.stop.clone();
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    if tokio::select! { _ = conn.as_mut() => true, _ = stop.changed() => false } {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

async fn handle(ctx: Arc<AdminContext>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = match find(&path) {
        None => reply(StatusCode::NOT_FOUND, "not found"),
        Some((route, _)) if route.method != method => {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            if let Ok(v) = HeaderValue::from_str(route.method.as_str()) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            r
        }
        Some((route, params)) => match refusal(route.access, &ctx.token, &req) {
            Some(r) => r,
            None => (route.handler)(ctx.clone(), params, req).await,
        },
    };
    tracing::info!(%method, path = %path, status = response.status().as_u16(), %peer, "admin request");
    response
}

/// The 401 or 403 to send when the request may not call a route with `access`.
fn refusal<B>(access: Access, token: &str, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if access == Access::Public {
        return None;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    match presented {
        None => {
            let mut r = reply(StatusCode::UNAUTHORIZED, "this route needs Authorization: Bearer <admin token>");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Some(t) if same_secret(&t, token) => None,
        Some(_) => Some(reply(StatusCode::FORBIDDEN, "wrong admin token")),
    }
}

/// Compares two secrets in time independent of where they differ (their digests, so also of
/// their lengths).
fn same_secret(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{value}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /admin/rearm/<mac>`.
fn rearm(ctx: Arc<AdminContext>, params: Vec<String>, _req: Request<Incoming>) -> Reply {
    Box::pin(async move {
        let Some(Ok(mac)) = params.first().map(|m| MacAddr::parse(m)) else {
            return reply(StatusCode::BAD_REQUEST, "not a MAC address");
        };
        let installs = ctx.installs.clone();
        let at = install_store::now();
        let done =
            tokio::task::spawn_blocking(move || installs.update(|log| log.rearm(mac, at, RearmedBy::Admin))).await;
        match done {
            Ok(Ok(was_installed)) => {
                tracing::info!(%mac, was_installed, "re-armed through the admin API: its next netboot follows its target");
                let by = RearmedBy::Admin.to_string();
                let event = appliance_core::journal::Event::Rearm(appliance_core::journal::Rearm { by, was_installed });
                ctx.shared.telemetry.journal.record(Some(mac), None, event);
                json(
                    StatusCode::OK,
                    serde_json::json!({ "mac": mac.to_string(), "rearmed": true, "was_installed": was_installed }),
                )
            }
            Ok(Err(e)) => {
                tracing::error!(%mac, "re-arming failed: {e}");
                reply(StatusCode::INTERNAL_SERVER_ERROR, "writing the install log failed (see the appliance log)")
            }
            Err(e) => {
                tracing::error!(%mac, "re-arming failed: {e}");
                reply(StatusCode::INTERNAL_SERVER_ERROR, "re-arming failed (see the appliance log)")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_paths_and_hand_over_their_parameters() {
        let (r, p) = find("/admin/rearm/52:54:00:00:00:01").unwrap();
        assert_eq!(
            (r.pattern, r.access, p),
            ("/admin/rearm/{mac}", Access::Admin, vec!["52:54:00:00:00:01".to_string()])
        );
        for miss in ["/admin/rearm", "/admin/rearm/", "/admin/rearm/a/b", "/admin/other/x", "/"] {
            assert!(find(miss).is_none(), "{miss}");
        }
    }

    #[test]
    fn the_status_routes_are_public_and_read_only() {
        for path in ["/status", "/status/machines/52:54:00:00:00:01", "/api/machines", "/api/machines/x", "/metrics"] {
            let (r, _) = find(path).unwrap();
            assert_eq!((&r.method, r.access), (&Method::GET, Access::Public), "{path}");
        }
        assert!(find("/artifacts/live/0123/vmlinuz").is_none(), "the admin listener serves no artifact");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "abc"));
    }
}
