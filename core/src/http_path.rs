//! The pure part of the HTTP router: which request paths may be served at all. A path that
//! could climb out of a directory or hide a name in an encoding is refused before any route
//! sees it; nothing we serve needs an escaped character, so a path is never percent-decoded.
//! The daemon's `http::routes` calls it first; a fuzz target feeds it whatever a client could
//! send.

/// Refuses paths that could climb out of a directory or hide a name in an encoding: we never
/// percent-decode a path, since nothing we serve needs an escaped character.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("the request path must start with /");
    }
    if path.bytes().any(|b| b == b'%' || b == b'\\' || b.is_ascii_control()) {
        return Err("escaped characters, backslashes and control characters are not served");
    }
    if path.len() > 1 && path[1..].split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err("empty, . and .. path segments are not served");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_that_could_escape_are_refused() {
        for ok in ["/", "/boot.ipxe", "/artifacts/live/0123/vmlinuz", "/a..b"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/artifacts/../x",
            "/artifacts/live/%2e%2e/x",
            "/..%2fx",
            "/a\\..\\b",
            "/x\0",
            "//etc/passwd",
            "/artifacts/./x",
            "/artifacts/live/",
            "relative",
            "/..",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
