//! Loading a config directory from disk: reading the YAML files (the only I/O of a load), then
//! handing them to the core's pure validation. A load either yields a complete `Catalog` or
//! every error it found. The layout of a config directory is described in
//! `appliance_core::config`.

use appliance_core::catalog::{Catalog, Digest};
use appliance_core::config::{self, ConfigError, ConfigErrors, FileProbe, Input, ProbeError, SourceFile};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads and validates the config directory `dir`, with an optional on-site overlay of the
/// MAC database that wins entry by entry.
pub fn load(dir: &Path, overlay: Option<&Path>) -> Result<Catalog, ConfigErrors> {
    let input = read_input(dir, overlay)?;
    config::validate(&input, &DirProbe { root: dir.to_path_buf() })
}

/// [`load`], with the configuration's version (`appliance_core::version::catalog_version`)
/// from the very files it read.
pub fn load_versioned(dir: &Path, overlay: Option<&Path>) -> Result<(Catalog, String), ConfigErrors> {
    let input = read_input(dir, overlay)?;
    let catalog = config::validate(&input, &DirProbe { root: dir.to_path_buf() })?;
    let version = appliance_core::version::catalog_version(&input, &catalog);
    Ok((catalog, version))
}

fn read_input(dir: &Path, overlay: Option<&Path>) -> Result<Input, ConfigErrors> {
    let io_err = |path: &Path, e: std::io::Error| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }])
    };
    let read = |path: &Path| -> Result<SourceFile, ConfigErrors> {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        SourceFile::from_bytes(path.to_path_buf(), bytes).map_err(|e| ConfigErrors(vec![e]))
    };
    let paths = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && config::is_yaml(p));
    // Every file that cannot be read is reported, not only the first.
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for result in paths.chain(overlay.map(Path::to_path_buf)).map(|p| read(&p)) {
        match result {
            Ok(file) => files.push(file),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| a.file.cmp(&b.file));
        return Err(ConfigErrors(errors));
    }
    // The overlay was read last (it may also sit in the directory, as before).
    let overlay = overlay.and_then(|o| files.iter().rposition(|f| f.path == o)).map(|i| files.remove(i));
    Ok(Input::from_dir(dir.to_path_buf(), files, overlay))
}

/// Hashes local artifact files, refusing any that resolve outside the config directory
/// (through `..` or a symlink).
pub struct DirProbe {
    pub root: PathBuf,
}

impl DirProbe {
    /// The file's real path, if it stays inside the root.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, ProbeError> {
        let root = self.root.canonicalize().map_err(ProbeError::ConfigDir)?;
        let full =
            root.join(rel).canonicalize().map_err(|error| ProbeError::NotFound { dir: self.root.clone(), error })?;
        if !full.starts_with(&root) {
            return Err(ProbeError::Outside(full));
        }
        if !full.is_file() {
            return Err(ProbeError::NotAFile);
        }
        Ok(full)
    }
}

impl FileProbe for DirProbe {
    fn digest(&self, rel: &Path) -> Result<Digest, ProbeError> {
        let full = self.resolve(rel)?;
        sha256_file(&full).map_err(ProbeError::Read)
    }

    fn text(&self, rel: &Path) -> Result<String, ProbeError> {
        let full = self.resolve(rel)?;
        std::fs::read_to_string(&full).map_err(ProbeError::Read)
    }
}

/// The sha256 of a file, read in chunks (also used by xtask for downloaded packages).
pub fn sha256_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
