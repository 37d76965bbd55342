//! Reading one file of one version out of the store, safely.

use super::is_plain_name;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `<store>/<profile>/<version>/<file>` for reading.
///
/// Refuses (with `InvalidInput`) any component that is not a plain name, and (with
/// `PermissionDenied`) a path that resolves outside the store through a symlink. A missing
/// profile, version or file, or one that is not a regular file, is `NotFound`.
pub fn open(store: &Path, profile: &str, version: &str, file: &str) -> io::Result<(File, Metadata)> {
    for part in [profile, version, file] {
        if !is_plain_name(part) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{part:?} is not a plain file name")));
        }
    }
    let root = store.canonicalize()?;
    let real = root.join(profile).join(version).join(file).canonicalize()?;
    if !real.starts_with(&root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{profile}/{version}/{file} resolves outside the artifact store"),
        ));
    }
    // `real` has no symlinks left; O_NOFOLLOW refuses one swapped in since.
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&real)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{profile}/{version}/{file} is not a regular file"),
        ));
    }
    Ok((f, meta))
}
