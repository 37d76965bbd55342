//! HTTP: any bytes as a request head, parsed as hyper parses it (httparse), then the router's
//! pure parts in the daemon's order: shim's `//` for its GRUB, the path check, and for paths it lets through, the iPXE query, the boot program
//! names and, for TFTP's sake, the same text as a TFTP path. A path that passes the check
//! never holds a `..` segment, a `%`, a backslash or a control character.
#![no_main]

use appliance_core::boot_file::BootFile;
use appliance_core::client;
use appliance_core::http_path::{check_path, second_stage_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let target = match req.parse(data) {
        Ok(_) => req.path.unwrap_or_default().to_string(),
        Err(_) => String::from_utf8_lossy(data).into_owned(),
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = second_stage_path(path);
    if check_path(path).is_ok() {
        assert!(!path.split('/').any(|s| s == ".." || s == "."), "{path:?}");
        assert!(!path.bytes().any(|b| b == b'%' || b == b'\\' || b.is_ascii_control()), "{path:?}");
        let _ = path.strip_prefix('/').and_then(BootFile::from_file_name);
    }
    let _ = client::from_http_query(query);
    let _ = client::classify_tftp(&target);
});
