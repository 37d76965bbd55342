//! A deterministic newc ("070701") cpio writer, for initrds built from a recipe: the same
//! entries always give the same bytes (inode numbers in order, owner root, mtime 0, parent
//! directories added implicitly, entries sorted by path).
//!
//! Pure: takes bytes, returns bytes.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device (`/dev/console` for an init that starts before devtmpfs is mounted).
    CharDevice {
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds an archive from `(path, mode, node)` entries. Later entries with the same path win.
pub fn archive(entries: impl IntoIterator<Item = (String, u32, Node)>) -> Vec<u8> {
    let mut tree: BTreeMap<String, (u32, Node)> = BTreeMap::new();
    for (path, mode, node) in entries {
        let path = path.trim_matches('/').to_string();
        if path.is_empty() {
            continue;
        }
        // Parent directories first, so the kernel can create every entry.
        let mut parent = String::new();
        for comp in path.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            tree.entry(parent.clone()).or_insert((0o755, Node::Dir));
        }
        tree.insert(path, (mode & 0o7777, node));
    }
    let mut out = Vec::new();
    for (ino, (path, (mode, node))) in tree.iter().enumerate() {
        let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match node {
            Node::Dir => (S_IFDIR, &[], (0, 0)),
            Node::File(d) => (S_IFREG, d, (0, 0)),
            Node::Symlink(t) => (S_IFLNK, t.as_bytes(), (0, 0)),
            Node::CharDevice { major, minor } => (S_IFCHR, &[], (*major, *minor)),
        };
        let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
        header(&mut out, Header { ino: ino as u32 + 1, mode: kind | mode, nlink, size: data.len() as u32, rdev }, path);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, Header { ino: 0, mode: 0, nlink: 1, size: 0, rdev: (0, 0) }, "TRAILER!!!");
    out
}

/// The newc header fields we set; owner, mtime and the device of the archive itself stay 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    /// Major and minor number of a device node.
    rdev: (u32, u32),
}

fn header(out: &mut Vec<u8>, h: Header, name: &str) {
    let fields = [h.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rdev.0, h.rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Gzip with a zeroed header timestamp, so compressed initrds are reproducible too.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    enc.write_all(data).expect("write to memory");
    enc.finish().expect("finish in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_with_implicit_parents() {
        let a = archive(vec![
            ("bin/busybox".to_string(), 0o755, Node::File(b"BB".to_vec())),
            ("init".to_string(), 0o755, Node::File(b"#!/bin/sh\n".to_vec())),
            ("bin/sh".to_string(), 0o777, Node::Symlink("busybox".into())),
        ]);
        let b = archive(vec![
            ("init".to_string(), 0o755, Node::File(b"#!/bin/sh\n".to_vec())),
            ("bin/sh".to_string(), 0o777, Node::Symlink("busybox".into())),
            ("bin/busybox".to_string(), 0o755, Node::File(b"BB".to_vec())),
        ]);
        assert_eq!(a, b);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        let bin = text.find("bin\0").unwrap();
        assert!(bin < text.find("bin/busybox\0").unwrap());
        assert!(text.ends_with("TRAILER!!!\0\0\0\0") || text.contains("TRAILER!!!"));
        assert_eq!(gzip(&a), gzip(&b));
    }

    /// What the real cpio tool lists for `archive` with `flag` (`-t`, or `-tv` for modes).
    // A test may run the real tool to check what the core writes; the core itself never does.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    fn cpio_list(flag: &str, archive: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("cpio")
            .args([flag, "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the `cpio` tool is missing: apt-get install cpio");
        child.stdin.take().unwrap().write_all(archive).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }

    /// The real cpio tool reads what we write.
    #[test]
    fn cpio_tool_lists_archive() {
        let a = archive(vec![("etc/motd".to_string(), 0o644, Node::File(b"hello\n".to_vec()))]);
        assert_eq!(cpio_list("-t", &a), "etc\netc/motd\n");
    }

    #[test]
    fn device_nodes_are_listed_by_cpio() {
        let a = archive(vec![("dev/console".to_string(), 0o600, Node::CharDevice { major: 5, minor: 1 })]);
        let listing = cpio_list("-tv", &a);
        let console = listing.lines().last().unwrap_or_default();
        assert!(console.starts_with("crw-------"), "{listing}");
        assert!(console.contains("5,") && console.trim_end().ends_with("dev/console"), "{listing}");
    }
}
