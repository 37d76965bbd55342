//! From wire structs to a `Catalog`: every check, every error collected (never only the first),
//! each pointing at file, line, column and field.
//!
//! Split by file: `settings`, `profiles`, `menus`, `macdb`.
//!
//! Pure apart from the `FileProbe` the caller passes in, which hashes local artifact files.

mod macdb;
mod menus;
mod profiles;
mod settings;

pub use profiles::debian_arch;

use super::error::{ConfigError, ConfigErrors};
use super::position::{index, key};
use super::values::{parse_arch, parse_ipv4, parse_sha256, parse_subnet, valid_hostname, valid_name};
use super::wire::*;
use super::yaml::{Doc, Errors};
use crate::arch::Arch;
use crate::catalog::*;
use crate::mac::{MacAddr, Oui};
use macdb::validate_macdb;
use menus::validate_menus;
use profiles::validate_profiles;
use settings::validate_settings;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One YAML file's name (as it should appear in messages) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The file as read from disk: text that is not UTF-8 is an error at the line and column
    /// (counted in characters) of its first bad byte.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<SourceFile, ConfigError> {
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile { path, text }),
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                // The prefix up to the bad byte is UTF-8, so it can be counted in characters.
                let before = std::str::from_utf8(&bytes[..good]).unwrap_or_default();
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
                let message = format!("not UTF-8 text: byte 0x{:02x} at offset {good}", bytes[good]);
                Err(ConfigError { file: path, line, col, field: String::new(), message })
            }
        }
    }

    pub fn doc(&self) -> Doc<'_> {
        Doc::new(&self.path, &self.text)
    }
}

/// All the files of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub dir: PathBuf,
    pub settings: Option<SourceFile>,
    pub machines: Option<SourceFile>,
    pub overlay: Option<SourceFile>,
    pub menus: Option<SourceFile>,
    pub profiles: Vec<SourceFile>,
}

impl Input {
    /// Sorts the YAML files of the config directory `dir` into their roles by file name
    /// (`appliance.yaml`, `machines.yaml`, `menus.yaml`; every other one is a profile, taken in
    /// path order), with the on-site overlay of the MAC database beside them.
    pub fn from_dir(dir: PathBuf, files: Vec<SourceFile>, overlay: Option<SourceFile>) -> Input {
        let mut input = Input { dir, overlay, ..Input::default() };
        for file in files {
            let slot = match file.path.file_name().and_then(|n| n.to_str()) {
                Some(crate::config::SETTINGS_FILE) => &mut input.settings,
                Some(crate::config::MACHINES_FILE) => &mut input.machines,
                Some(crate::config::MENUS_FILE) => &mut input.menus,
                _ => {
                    input.profiles.push(file);
                    continue;
                }
            };
            *slot = Some(file);
        }
        input.profiles.sort_by(|a, b| a.path.cmp(&b.path));
        input
    }
}

/// Whether a file of a config directory is YAML (`*.yaml`, `*.yml`) and so one of its files.
pub fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Access to local files, relative to the config directory: the one thing validation needs from
/// the file system, handed in by the caller.
pub trait FileProbe {
    /// The sha256 of the file, or why it cannot be read.
    fn digest(&self, rel: &Path) -> Result<Digest, ProbeError>;

    /// The text of a template (a profile's answer file), or why it cannot be read. A probe
    /// that reads no templates refuses every one.
    fn text(&self, rel: &Path) -> Result<String, ProbeError> {
        let _ = rel;
        Err(ProbeError::Read(std::io::Error::new(std::io::ErrorKind::Unsupported, "this probe reads no templates")))
    }
}

/// Why a local artifact file gives no digest. Reported as `artifact file "PATH": <this>`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The config directory itself cannot be resolved.
    #[error("config directory: {0}")]
    ConfigDir(std::io::Error),
    #[error("not found in {} ({error})", dir.display())]
    NotFound { dir: PathBuf, error: std::io::Error },
    /// The path leaves the config directory (through `..` or a symlink).
    #[error("resolves outside the config directory (to {})", .0.display())]
    Outside(PathBuf),
    #[error("is not a regular file")]
    NotAFile,
    /// The file exists but reading it failed.
    #[error("{0}")]
    Read(std::io::Error),
}

/// A relative path that cannot climb out of the directory it is relative to.
fn contained(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Validates a config: every file on its own, every reference between them, and then every
/// template rendered for every machine (`answers::check_all`).
pub fn validate(input: &Input, probe: &dyn FileProbe) -> Result<Catalog, ConfigErrors> {
    let mut errs = Errors::default();
    let settings = validate_settings(input, &mut errs);
    let mut templates = crate::answers::Templates::builder();
    let profiles = validate_profiles(input, probe, &mut templates, &mut errs);
    let menus = validate_menus(input, &profiles, &mut errs);
    let macdb = validate_macdb(input, &profiles, &menus, settings.as_ref(), &mut errs);
    let (true, Some(settings)) = (errs.is_empty(), settings) else { return Err(errs.into()) };
    let catalog = Catalog::new(Parts {
        dir: input.dir.clone(),
        settings,
        profiles,
        machines: macdb.machines,
        vendors: macdb.vendors,
        unknown: macdb.unknown,
        unknown_policy: macdb.unknown_policy,
        menus,
        answer_templates: templates.build(),
    });
    let cmdline_field = |profile: &Profile, arch: Arch| {
        let text = input.profiles.iter().find(|f| f.path == profile.file).map_or("", |f| f.text.as_str());
        let doc = Doc::new(&profile.file, text);
        let arch_field = key(&key("arch", arch.as_str()), "cmdline");
        let field = if doc.position(&arch_field) != doc.position(&key("arch", arch.as_str())) {
            arch_field
        } else {
            "cmdline".to_string()
        };
        doc.error(&field, "")
    };
    for e in crate::answers::check_all(&catalog, &cmdline_field) {
        errs.push(e);
    }
    errs.check().map(|()| catalog)
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", v.join(", "))
    }
}
