//! Our GRUB network images carry a small embedded config with a fixed-length placeholder where
//! the appliance's address goes; the daemon writes its address over it when it serves the
//! image. GRUB 2.06's efinet takes its server from the firmware's DHCP ACK only, so with
//! proxyDHCP (the site's ACK names another or no next-server) it would look for its config in
//! the wrong place; with the address inside the image it always asks us.
//!
//! Pure: bytes in, bytes out.

use std::net::Ipv4Addr;

/// Replaced in place by the server address padded with spaces; the length never changes, so
/// nothing else in the image moves.
pub const SERVER_PLACEHOLDER: &str = "@appliance-server-address-placeholder@@@@@@@@@@";

/// The config `cargo xtask fetch` embeds (`grub-mkimage -c`).
pub fn early_config() -> String {
    format!(
        "# Embedded by cargo xtask fetch; the appliance writes its address over the placeholder\n\
         # when it serves this image, so GRUB asks it for grub.cfg even behind proxyDHCP.\n\
         set appliance_server={SERVER_PLACEHOLDER}\n\
         if regexp '^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$' \"$appliance_server\"; then\n\
         \tset root=(tftp,$appliance_server)\n\
         \tset prefix=(tftp,$appliance_server)/grub\n\
         fi\n"
    )
}

/// Writes `server` over the placeholder; `None` when the image has no placeholder (a GRUB
/// image not built by `cargo xtask fetch`), which is then served as it is.
pub fn patch(image: &[u8], server: Ipv4Addr) -> Option<Vec<u8>> {
    let needle = SERVER_PLACEHOLDER.as_bytes();
    let at = image.windows(needle.len()).position(|w| w == needle)?;
    let addr = server.to_string();
    let mut out = image.to_vec();
    let slot = &mut out[at..at + needle.len()];
    slot.fill(b' ');
    slot[..addr.len()].copy_from_slice(addr.as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_in_place_once() {
        let cfg = early_config();
        let image = [b"\x7fELF..".as_slice(), cfg.as_bytes(), b"..tail"].concat();
        let patched = patch(&image, Ipv4Addr::new(10, 77, 0, 1)).unwrap();
        assert_eq!(patched.len(), image.len());
        let text = String::from_utf8_lossy(&patched);
        assert!(text.contains("set appliance_server=10.77.0.1 "), "{text}");
        assert!(!text.contains(SERVER_PLACEHOLDER));
        assert!(text.ends_with("..tail"));
        assert_eq!(patch(b"no placeholder here", Ipv4Addr::LOCALHOST), None);
    }
}
