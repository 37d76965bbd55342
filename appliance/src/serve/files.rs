//! Serving plain files from a root directory (bootloaders, the fallback TFTP root) without ever
//! leaving it: no `..`, no absolute paths, no NUL or backslash tricks, no symlink out of the root.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Resolves a client-supplied relative path inside `root`, or refuses it.
pub fn resolve(root: &Path, requested: &str) -> io::Result<PathBuf> {
    let refuse = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("{requested:?}: {why}"));
    let rel = requested.trim_start_matches('/');
    if rel.is_empty() {
        return Err(refuse("empty path"));
    }
    if rel.contains('\0') || rel.contains('\\') || requested.starts_with("//") {
        return Err(refuse("invalid characters"));
    }
    for comp in rel.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(refuse("path components may not be empty, '.' or '..'"));
        }
    }
    let root = root.canonicalize()?;
    let full = root.join(rel).canonicalize()?;
    if !full.starts_with(&root) {
        return Err(refuse("resolves outside the served root"));
    }
    if !full.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a regular file"));
    }
    Ok(full)
}

/// Opens a file under `root` (see `resolve`) with its length.
pub fn open(root: &Path, requested: &str) -> io::Result<(File, u64)> {
    let path = resolve(root, requested)?;
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_traversal_and_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.bin"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"y").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub/a", dir.path().join("inner")).unwrap();
        assert!(resolve(dir.path(), "ok.bin").is_ok());
        assert!(resolve(dir.path(), "/ok.bin").is_ok());
        assert!(resolve(dir.path(), "sub/a").is_ok());
        assert!(resolve(dir.path(), "inner").is_ok());
        for bad in
            ["../etc/passwd", "sub/../../etc/passwd", "..\\etc\\passwd", "//etc/passwd", "link", "sub/./a", "a\0b", ""]
        {
            assert!(resolve(dir.path(), bad).is_err(), "{bad:?} was served");
        }
        assert!(resolve(dir.path(), "sub").is_err());
    }
}
