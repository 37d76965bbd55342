//! One file out of a Debian package, in Rust: a `.deb` is an `ar` archive whose `data.tar`
//! member (xz, zstd, gzip or plain) holds the files. The file is written next to its final
//! name and renamed into place only when its sha256 is the pinned one.

use appliance_core::catalog::Digest;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{}: not a Debian package: {error}", deb.display())]
    NotADeb { deb: PathBuf, error: String },
    #[error("{}: no data.tar member (found: {found})", deb.display())]
    NoData { deb: PathBuf, found: String },
    #[error("{}: unsupported compression of {member}", deb.display())]
    Compression { deb: PathBuf, member: String },
    #[error("{}: no regular file matches {pattern}", deb.display())]
    NoSuchFile { deb: PathBuf, pattern: String },
    #[error("{} in {}: sha256 mismatch: expected {expected}, found {actual}", file, deb.display())]
    Checksum { deb: PathBuf, file: String, expected: String, actual: String },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
}

/// Extracts the file matching `pattern` (a path inside the package; `*` in its last component
/// matches any run of characters) from `deb` into `dest`, checking its sha256. When several
/// files match, the one with the pinned content is taken.
pub fn extract(deb: &Path, pattern: &str, want: &Digest, dest: &Path) -> Result<(), DebError> {
    let tmp = dest.with_extension("extracting");
    let result = extract_to(deb, pattern, want, &tmp);
    match result {
        Ok(()) => std::fs::rename(&tmp, dest).map_err(|error| DebError::Io { path: dest.to_path_buf(), error }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn extract_to(deb: &Path, pattern: &str, want: &Digest, tmp: &Path) -> Result<(), DebError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DebError::Io { path, error }
    };
    let not_a_deb = |error: io::Error| DebError::NotADeb { deb: deb.to_path_buf(), error: error.to_string() };
    let mut archive = ar::Archive::new(File::open(deb).map_err(io(deb))?);
    let mut found = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(not_a_deb)?;
        let member = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !member.starts_with("data.tar") {
            found.push(member);
            continue;
        }
        let reader: Box<dyn Read> = match member.as_str() {
            "data.tar" => Box::new(entry),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar.zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|e| DebError::NotADeb { deb: deb.to_path_buf(), error: format!("{member}: {e}") })?,
            ),
            "data.tar.xz" => Box::new(XzReader::new(entry, deb, &member)?),
            _ => return Err(DebError::Compression { deb: deb.to_path_buf(), member }),
        };
        return copy_match(reader, deb, pattern, want, tmp);
    }
    Err(DebError::NoData { deb: deb.to_path_buf(), found: found.join(", ") })
}

/// Walks the data tar for regular files matching `pattern`; the first with the pinned sha256
/// is written to `tmp`.
fn copy_match(
    reader: Box<dyn Read + '_>,
    deb: &Path,
    pattern: &str,
    want: &Digest,
    tmp: &Path,
) -> Result<(), DebError> {
    let tar_err = |error: io::Error| DebError::NotADeb { deb: deb.to_path_buf(), error: error.to_string() };
    let mut tar = tar::Archive::new(reader);
    let mut mismatch = None;
    for entry in tar.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = entry.path().map_err(tar_err)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").trim_start_matches('/').to_string();
        if !entry.header().entry_type().is_file() || !matches(pattern, &path) {
            continue;
        }
        let mut out = File::create(tmp).map_err(|error| DebError::Io { path: tmp.to_path_buf(), error })?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(tar_err)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|error| DebError::Io { path: tmp.to_path_buf(), error })?;
        }
        let got: Digest = hash.finalize().into();
        if got == *want {
            out.sync_all().map_err(|error| DebError::Io { path: tmp.to_path_buf(), error })?;
            return Ok(());
        }
        mismatch = Some((path, hex::encode(got)));
    }
    Err(match mismatch {
        Some((file, actual)) => {
            DebError::Checksum { deb: deb.to_path_buf(), file, expected: hex::encode(want), actual }
        }
        None => DebError::NoSuchFile { deb: deb.to_path_buf(), pattern: pattern.to_string() },
    })
}

/// `pattern` against a package path: directories must be equal; the last component may
/// carry `*` wildcards.
fn matches(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
    let (pdir, pname) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    pdir == dir && glob(pname.as_bytes(), name.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// lzma-rs decodes xz into a writer, not as a reader: the decoded tar goes to a temporary
/// file first (a kernel package's tar is tens of MB; the appliance may have little memory).
struct XzReader {
    file: BufReader<File>,
}

impl XzReader {
    fn new(mut xz: impl Read, deb: &Path, member: &str) -> Result<XzReader, DebError> {
        let dir = deb.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile_in(dir).map_err(|error| DebError::Io { path: dir.to_path_buf(), error })?;
        let mut input = BufReader::new(&mut xz);
        lzma_rs::xz_decompress(&mut input, &mut tmp)
            .map_err(|e| DebError::NotADeb { deb: deb.to_path_buf(), error: format!("{member}: {e}") })?;
        use std::io::Seek;
        tmp.rewind().map_err(|error| DebError::Io { path: dir.to_path_buf(), error })?;
        Ok(XzReader { file: BufReader::new(tmp) })
    }
}

impl Read for XzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

/// An unnamed file in `dir` (O_TMPFILE where the file system has it, else created and
/// unlinked at once), so nothing is left behind on a crash.
fn tempfile_in(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile =
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir);
    match tmpfile {
        Ok(f) => Ok(f),
        Err(_) => {
            let path = dir.join(format!(".xz-{}-{:?}", std::process::id(), std::thread::current().id()));
            let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &[u8] = b"a kernel, more or less";

    /// A tar with `./boot/vmlinuz-6.1`, `./boot/config-6.1` and a directory entry.
    fn data_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in [("./boot/config-6.1", &b"CONFIG_X=y"[..]), ("./boot/vmlinuz-6.1", KERNEL)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, bytes).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A `.deb` (ar: debian-binary, control.tar.gz, then `member` with `data`) in `dir`.
    fn deb(dir: &Path, member: &str, data: &[u8]) -> PathBuf {
        let path = dir.join("p.deb");
        let mut ar = ar::Builder::new(File::create(&path).unwrap());
        for (name, bytes) in [("debian-binary", &b"2.0\n"[..]), ("control.tar.gz", &[][..]), (member, data)] {
            ar.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).unwrap();
        }
        path
    }

    fn sha(bytes: &[u8]) -> Digest {
        Sha256::digest(bytes).into()
    }

    #[test]
    fn a_file_comes_out_of_a_gzip_and_an_xz_data_tar() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data_tar()).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &data_tar()[..], &mut xz).unwrap();
        for (member, data) in [("data.tar.gz", gz.finish().unwrap()), ("data.tar.xz", xz), ("data.tar", data_tar())] {
            let d = tempfile::tempdir().unwrap();
            let dest = d.path().join("out");
            extract(&deb(d.path(), member, &data), "boot/vmlinuz-*", &sha(KERNEL), &dest).unwrap();
            assert_eq!(std::fs::read(&dest).unwrap(), KERNEL, "{member}");
        }
    }

    #[test]
    fn a_wrong_sha256_or_a_missing_file_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let pkg = deb(d.path(), "data.tar", &data_tar());
        let dest = d.path().join("out");
        let e = extract(&pkg, "boot/vmlinuz-*", &sha(b"other"), &dest).unwrap_err();
        assert!(matches!(&e, DebError::Checksum { file, .. } if file == "boot/vmlinuz-6.1"), "{e}");
        let e = extract(&pkg, "boot/initrd.img-*", &sha(KERNEL), &dest).unwrap_err();
        assert!(matches!(e, DebError::NoSuchFile { .. }), "{e}");
        let e = extract(&deb(d.path(), "data.tar.bz2", b"x"), "boot/vmlinuz-*", &sha(KERNEL), &dest).unwrap_err();
        assert!(matches!(e, DebError::Compression { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("p.deb")]);
    }

    #[test]
    fn patterns_match_the_last_component_only() {
        assert!(matches("boot/vmlinuz-*", "boot/vmlinuz-6.1"));
        assert!(matches("/usr/lib/*.efi.signed", "usr/lib/grubx64.efi.signed"));
        assert!(!matches("boot/vmlinuz-*", "boot/x/vmlinuz-6.1"));
        assert!(!matches("boot/*", "boot2/a"));
    }
}
