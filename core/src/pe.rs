//! Whether a PE image (an EFI program, or a Linux kernel with its EFI stub) carries an
//! Authenticode signature: a non-empty security data directory (the attribute certificate
//! table) in its optional header. Firmware with Secure Boot on, and shim, refuse an image
//! without one; whether a signature is one they trust is theirs to judge, not ours.
//!
//! Pure: the caller reads the first `HEAD_LEN` bytes of the file and passes them with the
//! file's length.

/// How much of a file `authenticode` needs: the DOS and PE headers and the optional header's
/// data directories sit in the first page of every image we serve.
pub const HEAD_LEN: usize = 4096;

/// Index of the security (certificate table) entry among the data directories.
const SECURITY_DIRECTORY: usize = 4;

/// What the headers say about a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticode {
    /// A certificate table of `len` bytes at file offset `offset`.
    Signed { offset: u32, len: u32 },
    /// No certificate table.
    Unsigned,
}

/// Why the bytes are not a PE image we can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    #[error("not a PE image (no MZ header)")]
    NoMz,
    #[error("not a PE image (no PE signature where the DOS header points)")]
    NoPeSignature,
    #[error("the PE headers end past the first {0} bytes read")]
    Truncated(usize),
    #[error("unknown PE optional header magic {0:#06x}")]
    OptionalHeaderMagic(u16),
    #[error("the certificate table ({offset:#x}, {len} bytes) lies outside the {file_len}-byte file")]
    CertificatesOutside { offset: u32, len: u32, file_len: u64 },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the security data directory of the PE image whose first bytes are `head` and whose
/// length is `file_len`.
pub fn authenticode(head: &[u8], file_len: u64) -> Result<Authenticode, PeError> {
    let truncated = || PeError::Truncated(head.len());
    if head.get(..2) != Some(b"MZ".as_slice()) {
        return Err(PeError::NoMz);
    }
    let pe = u32_at(head, 0x3c).ok_or_else(truncated)? as usize;
    match head.get(pe..pe + 4) {
        Some(b"PE\0\0") => {}
        Some(_) => return Err(PeError::NoPeSignature),
        None => return Err(truncated()),
    }
    // COFF header (20 bytes) after the signature, then the optional header.
    let optional = pe + 24;
    let magic = u16_at(head, optional).ok_or_else(truncated)?;
    // PE32 and PE32+ differ in the width of four fields before the directory count.
    let count_at = match magic {
        0x10b => optional + 92,
        0x20b => optional + 108,
        other => return Err(PeError::OptionalHeaderMagic(other)),
    };
    let count = u32_at(head, count_at).ok_or_else(truncated)? as usize;
    if count <= SECURITY_DIRECTORY {
        // Kernels' EFI stubs declare only the directories they use (six, for Debian's).
        return Ok(Authenticode::Unsigned);
    }
    let entry = count_at + 4 + SECURITY_DIRECTORY * 8;
    let (offset, len) = (u32_at(head, entry).ok_or_else(truncated)?, u32_at(head, entry + 4).ok_or_else(truncated)?);
    if offset == 0 || len == 0 {
        return Ok(Authenticode::Unsigned);
    }
    if u64::from(offset) + u64::from(len) > file_len {
        return Err(PeError::CertificatesOutside { offset, len, file_len });
    }
    Ok(Authenticode::Signed { offset, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ header with `dirs` data directories and the security one at `security`.
    fn image(dirs: u32, security: (u32, u32)) -> Vec<u8> {
        image_of(0x20b, 108, dirs, security)
    }

    fn image_of(magic: u16, count_at: usize, dirs: u32, security: (u32, u32)) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let optional = 0x80 + 24;
        b[optional..optional + 2].copy_from_slice(&magic.to_le_bytes());
        b[optional + count_at..optional + count_at + 4].copy_from_slice(&dirs.to_le_bytes());
        let entry = optional + count_at + 4 + 4 * 8;
        b[entry..entry + 4].copy_from_slice(&security.0.to_le_bytes());
        b[entry + 4..entry + 8].copy_from_slice(&security.1.to_le_bytes());
        b
    }

    #[test]
    fn a_certificate_table_is_a_signature() {
        assert_eq!(
            authenticode(&image(16, (0x1000, 1472)), 0x2000),
            Ok(Authenticode::Signed { offset: 0x1000, len: 1472 })
        );
        assert_eq!(authenticode(&image(16, (0, 0)), 0x2000), Ok(Authenticode::Unsigned));
        // Debian's kernels declare six directories; an EFI stub with four has no security entry.
        assert_eq!(authenticode(&image(6, (0x1000, 8)), 0x2000), Ok(Authenticode::Signed { offset: 0x1000, len: 8 }));
        assert_eq!(authenticode(&image(4, (0x1000, 8)), 0x2000), Ok(Authenticode::Unsigned));
        // PE32 (32-bit EFI programs) puts the directory count 16 bytes earlier.
        let pe32 = image_of(0x10b, 92, 16, (0x800, 16));
        assert_eq!(authenticode(&pe32, 0x2000), Ok(Authenticode::Signed { offset: 0x800, len: 16 }));
    }

    #[test]
    fn what_is_not_a_readable_pe_image_says_why() {
        assert_eq!(authenticode(b"\x7fELF....", 100), Err(PeError::NoMz));
        let mut no_pe = image(16, (0, 0));
        no_pe[0x80] = b'X';
        assert_eq!(authenticode(&no_pe, 600), Err(PeError::NoPeSignature));
        assert_eq!(authenticode(&image(16, (0, 0))[..0x90], 600), Err(PeError::Truncated(0x90)));
        let mut pe32 = image(16, (0, 0));
        pe32[0x98..0x9a].copy_from_slice(&0x107u16.to_le_bytes());
        assert_eq!(authenticode(&pe32, 600), Err(PeError::OptionalHeaderMagic(0x107)));
        assert_eq!(
            authenticode(&image(16, (0x1000, 1472)), 0x1000),
            Err(PeError::CertificatesOutside { offset: 0x1000, len: 1472, file_len: 0x1000 })
        );
    }
}
