//! Serving one open file: validators (`ETag`, `Last-Modified`), conditional requests (304),
//! a single byte range (206/416), exact `Content-Length`, and HEAD.
//!
//! Range and date parsing are pure and tested here; the response never redirects and never
//! names another file.

use super::body::Body;
use appliance_core::calendar::{civil_from_days, days_from_civil};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use std::fs::{File, Metadata};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a file may be cached, and what it is.
pub(super) struct Validators {
    /// Strong entity tag, quotes included.
    pub etag: String,
    pub cache_control: &'static str,
    pub content_type: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// No usable `Range`: send the whole file.
    Full,
    /// Inclusive byte positions, within the file.
    Partial { start: u64, end: u64 },
    /// Syntactically fine but nothing of it lies inside the file.
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `len` bytes. Only one range is honoured:
/// a multi-range request is answered with the whole file (RFC 9110 lets a server ignore
/// `Range`, and no boot firmware asks for several ranges; multipart/byteranges is not worth
/// its complexity here). Malformed values are ignored the same way.
pub(super) fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeRequest::Full };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Digits too many for u64 still name a position past any file.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 }
            }
        }
        // `a-` and `a-b`.
        (false, Some(start), end) if b.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return RangeRequest::Full;
            }
            if start >= len {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial { start, end: end.map_or(len - 1, |e| e.min(len - 1)) }
        }
        _ => RangeRequest::Full,
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as RFC 9110 asks).
pub(super) fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if_none_match.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// Whether the file may change while it is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mutability {
    /// Published once and never rewritten (the artifact store): the body may map it.
    Immutable,
    /// May be replaced or rewritten in place: the body reads it.
    Mutable,
}

/// Builds the response for `file`. The caller has opened it (and checked it is a regular file);
/// `head` leaves the body out but keeps every header, `Content-Length` included.
pub(super) fn respond(
    headers: &HeaderMap,
    head: bool,
    (file, meta, mutability): (File, &Metadata, Mutability),
    v: &Validators,
) -> Response<Body> {
    let len = meta.len();
    let modified = meta.modified().ok().map(http_date);
    let header_str = |name| headers.get(name).and_then(|h: &HeaderValue| h.to_str().ok());

    let not_modified = match (header_str(header::IF_NONE_MATCH), header_str(header::IF_MODIFIED_SINCE)) {
        (Some(inm), _) => etag_matches(inm, &v.etag),
        (None, Some(ims)) => match (parse_http_date(ims), meta.modified().ok()) {
            (Some(since), Some(m)) => m.duration_since(UNIX_EPOCH).map_or(true, |d| d.as_secs() <= secs(since)),
            _ => false,
        },
        (None, None) => false,
    };

    let mut range = header_str(header::RANGE).map_or(RangeRequest::Full, |r| parse_range(r, len));
    // If-Range: honour the range only if the client's copy is the current one.
    if let Some(cond) = header_str(header::IF_RANGE) {
        if cond.trim() != v.etag && Some(cond.trim()) != modified.as_deref() {
            range = RangeRequest::Full;
        }
    }

    let mut builder = Response::builder()
        .header(header::ETAG, &v.etag)
        .header(header::CACHE_CONTROL, v.cache_control)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(m) = &modified {
        builder = builder.header(header::LAST_MODIFIED, m);
    }
    if not_modified {
        return finish(builder.status(StatusCode::NOT_MODIFIED), Body::empty());
    }
    builder = builder.header(header::CONTENT_TYPE, v.content_type);
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let b = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, 0);
            return finish(b, Body::empty());
        }
    };
    let body = match (head, mutability) {
        (true, _) => Body::empty(),
        (false, Mutability::Immutable) => Body::immutable_file(file, start, count),
        (false, Mutability::Mutable) => Body::file(file, start, count),
    };
    finish(builder.status(status).header(header::CONTENT_LENGTH, count), body)
}

fn finish(builder: hyper::http::response::Builder, body: Body) -> Response<Body> {
    // Every header value above is ASCII built here, so the builder cannot fail; a 500 keeps
    // the connection usable should that ever change.
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(super) fn http_date(t: SystemTime) -> String {
    let s = secs(t);
    let days = s / 86400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = s % 86400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate (the only format HTTP/1.1 clients send); `None` for anything else.
pub(super) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else { return None };
    let d: u32 = day.parse().ok()?;
    let m = MONTHS.iter().position(|x| *x == month)? as u32 + 1;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, min, sec] = hms[..] else { return None };
    if !(1..=31).contains(&d) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86400 + h * 3600 + min * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn check(value: &str, len: u64, expected: RangeRequest) {
        assert_eq!(parse_range(value, len), expected, "{value:?} of {len}");
    }

    #[test]
    fn single_ranges() {
        check("bytes=0-99", 1000, Partial { start: 0, end: 99 });
        check("bytes=100-", 1000, Partial { start: 100, end: 999 });
        check("bytes=-100", 1000, Partial { start: 900, end: 999 });
        check("bytes=-5000", 1000, Partial { start: 0, end: 999 });
        check("bytes=990-5000", 1000, Partial { start: 990, end: 999 });
        check(" bytes= 5 - 9 ", 1000, Partial { start: 5, end: 9 });
        check("bytes=999-999", 1000, Partial { start: 999, end: 999 });
    }

    #[test]
    fn unsatisfiable_ranges() {
        check("bytes=1000-", 1000, Unsatisfiable);
        check("bytes=1000-2000", 1000, Unsatisfiable);
        check("bytes=-0", 1000, Unsatisfiable);
        check("bytes=0-", 0, Unsatisfiable);
        check("bytes=99999999999999999999999-", 1000, Unsatisfiable);
    }

    #[test]
    fn ignored_ranges_serve_the_whole_file() {
        check("bytes=0-1,5-6", 1000, Full);
        check("bytes=9-5", 1000, Full);
        check("items=0-5", 1000, Full);
        check("bytes=abc", 1000, Full);
        check("bytes=-", 1000, Full);
        check("bytes=1-x", 1000, Full);
        check("bytes=+1-2", 1000, Full);
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"v1-vmlinuz\"", "\"v1-vmlinuz\""));
        assert!(etag_matches("\"x\", W/\"v1-vmlinuz\"", "\"v1-vmlinuz\""));
        assert!(etag_matches("*", "\"v1-vmlinuz\""));
        assert!(!etag_matches("\"v2-vmlinuz\"", "\"v1-vmlinuz\""));
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(http_date(leap), "Thu, 29 Feb 2024 12:34:56 GMT");
        assert_eq!(parse_http_date(&http_date(leap)), Some(leap));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }
}
