//! The pure part of the HTTP router: which request paths may be served at all. A path that
//! could climb out of a directory or hide a name in an encoding is refused before any route
//! sees it; nothing we serve needs an escaped character, so a path is never percent-decoded.
//! The daemon's `http::routes` calls `second_stage_path` and then `check_path` first; a fuzz
//! target feeds them whatever a client could send.

use crate::boot_file::BootFile;

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

/// shim fetches its GRUB from the directory of its own URL, and for shim at the root it asks
/// for `//grubx64.efi` (measured with OVMF HTTP Boot, docs/firmware.md#the-shim-chain). That
/// one empty segment is read as the root; every other path is judged as it is.
pub fn second_stage_path(path: &str) -> &str {
    match path.strip_prefix("//").and_then(BootFile::from_file_name) {
        Some(file) if file.is_second_stage() => &path[1..],
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn shims_double_slash_is_read_as_the_root_for_its_grub_only() {
        assert_eq!(second_stage_path("//grubx64.efi"), "/grubx64.efi");
        assert_eq!(second_stage_path("//grubaa64.efi"), "/grubaa64.efi");
        for kept in ["/grubx64.efi", "//shimx64.efi", "//artifacts/x", "///grubx64.efi", "//grubnetx64.efi"] {
            assert_eq!(second_stage_path(kept), kept);
        }
    }
}
