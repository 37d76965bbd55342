//! The daemon's secrets in its state directory, each created once with random bytes from the
//! operating system and readable by its owner only (0600), never logged:
//!
//! - `token.key`: the key machine tokens are computed under (`appliance_core::token`); a
//!   restart keeps it, so tokens rendered before the restart still verify after it.
//! - `admin.token`: the bearer token of the admin listener, in hex, for an operator to copy
//!   (`--admin-token-file` names another file instead).
//!
//! A file is written under a temporary name and linked into place, so two processes starting
//! at once agree on one secret and nobody reads a half-written one.

use appliance_core::token::{TokenKey, SECRET_BYTES};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_KEY_FILE: &str = "token.key";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The shortest secret accepted from a file an operator wrote.
const MIN_SECRET: usize = 16;

/// The machine token key of the state directory `state`, created if missing.
pub fn token_key(state: &Path) -> io::Result<TokenKey> {
    let bytes = load_or_create(&state.join(TOKEN_KEY_FILE), |random| random.to_vec())?;
    Ok(TokenKey::new(&bytes))
}

/// The machine token key of `state` if the daemon created one (`explain --state` never creates it).
pub fn existing_token_key(state: &Path) -> io::Result<Option<TokenKey>> {
    match std::fs::read(state.join(TOKEN_KEY_FILE)) {
        Ok(bytes) => check_length(&state.join(TOKEN_KEY_FILE), bytes).map(|b| Some(TokenKey::new(&b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The admin bearer token: read from `file` if given, else `<state>/admin.token` (created if
/// missing). Surrounding white space is not part of it.
pub fn admin_token(state: &Path, file: Option<&Path>) -> io::Result<String> {
    let bytes = match file {
        Some(f) => check_length(f, std::fs::read(f)?)?,
        None => {
            load_or_create(&state.join(ADMIN_TOKEN_FILE), |random| format!("{}\n", hex::encode(random)).into_bytes())?
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))?;
    Ok(text.trim().to_string())
}

fn check_length(path: &Path, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    if bytes.iter().filter(|b| !b.is_ascii_whitespace()).count() < MIN_SECRET {
        let msg = format!("{} holds fewer than {MIN_SECRET} bytes: too short for a secret", path.display());
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    Ok(bytes)
}

/// The file's bytes; if it does not exist, creates it (0600) from fresh random bytes first.
fn load_or_create(path: &Path, contents: impl FnOnce(&[u8; SECRET_BYTES]) -> Vec<u8>) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => return check_length(path, bytes),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut random = [0u8; SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let tmp: PathBuf =
        dir.join(format!(".{}.tmp-{}", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&contents(&random))?;
        f.sync_all()?;
        // Fails if another process created the file meanwhile: then its secret is the one.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => std::fs::File::open(dir)?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    let bytes = std::fs::read(path)?;
    check_length(path, bytes)
}

/// Whether anyone but the owner may read the file (a secret an operator should protect).
pub fn readable_by_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::mac::MacAddr;

    #[test]
    fn secrets_are_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_token_key(dir.path()).unwrap(), None);
        let key = token_key(dir.path()).unwrap();
        let path = dir.path().join(TOKEN_KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), SECRET_BYTES);
        assert!(!readable_by_others(&path));
        // A restart (or `explain --state`) reads the same key: tokens stay valid.
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(token_key(dir.path()).unwrap().token(mac), key.token(mac));
        assert_eq!(existing_token_key(dir.path()).unwrap().unwrap().token(mac), key.token(mac));

        let admin = admin_token(dir.path(), None).unwrap();
        assert_eq!(admin.len(), 2 * SECRET_BYTES);
        assert!(admin.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(admin_token(dir.path(), None).unwrap(), admin);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(token_key(other.path()).unwrap().token(mac), key.token(mac), "random per state directory");
        // No temporary files are left.
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, [ADMIN_TOKEN_FILE, TOKEN_KEY_FILE]);
    }

    #[test]
    fn an_operators_token_file_is_read_and_a_short_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my-token");
        std::fs::write(&file, "  correct-horse-battery-staple\n").unwrap();
        assert_eq!(admin_token(dir.path(), Some(&file)).unwrap(), "correct-horse-battery-staple");
        assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists(), "the default file is not created");
        std::fs::write(&file, "short\n").unwrap();
        let err = admin_token(dir.path(), Some(&file)).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }
}
