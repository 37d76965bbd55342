//! Config loading: any bytes as a config directory's YAML files (cut at 0x00 into
//! appliance.yaml, machines.yaml, menus.yaml, a profile and an overlay), decoded and validated
//! by the core as the daemon loads a directory; local artifact files all exist with one
//! digest. It must end in a catalog or in errors, each with a file, a position (line and
//! column from 1) and a message.
#![no_main]

use appliance_core::catalog::Digest;
use appliance_core::config::{validate, ConfigError, FileProbe, Input, ProbeError, SourceFile};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

struct AnyFile;

impl FileProbe for AnyFile {
    fn digest(&self, _: &Path) -> Result<Digest, ProbeError> {
        Ok([7; 32])
    }
}

/// Every error names its file and says where in it, and what.
fn check(errors: &[ConfigError]) {
    for e in errors {
        assert!(!e.message.is_empty() && e.file.as_os_str().len() > 0, "{e:?}");
        assert!(e.line >= 1 && e.col >= 1, "no position: {e}");
    }
}

const NAMES: [&str; 4] = ["appliance.yaml", "machines.yaml", "menus.yaml", "profile.yaml"];

fuzz_target!(|data: &[u8]| {
    let dir = PathBuf::from("/cfg");
    let mut parts = data.split(|&b| b == 0);
    let files: Vec<SourceFile> = NAMES
        .iter()
        .zip(parts.by_ref())
        .map(|(name, text)| SourceFile::from_bytes(dir.join(name), text.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| check(&[e]))
        .unwrap_or_default();
    let overlay = parts
        .next()
        .and_then(|t| SourceFile::from_bytes(dir.join("overlay.yaml"), t.to_vec()).map_err(|e| check(&[e])).ok());
    if let Err(errors) = validate(&Input::from_dir(dir, files, overlay), &AnyFile) {
        check(&errors.0);
    }
});
