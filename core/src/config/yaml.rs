//! Reading YAML with positioned errors: the machinery every validation of a YAML file shares,
//! the appliance's config and the image recipes (`xtask`) alike.
//!
//! - `Doc`: one document (its text and the file name errors show), with the position of each
//!   of its fields (`position::PosIndex`), and deserialisation that turns a serde error into
//!   one error at serde's own position and field path.
//! - `Errors`: every error found, in order, each at `FILE:LINE:COL: field.path: message`.
//!
//! A validation deserialises into wire structs (`deny_unknown_fields`, so a typo is an error),
//! then checks values and records each mistake with `Errors::at(doc, field, message)`; the
//! field path is looked up in the document, so an error found after deserialisation still
//! points at the line to fix. Field paths are built with `position::key` and `position::index`.

use super::error::{ConfigError, ConfigErrors};
use super::position::{index, key, PosIndex};
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::path::Path;

/// One YAML document under validation.
#[derive(Debug)]
pub struct Doc<'a> {
    file: &'a Path,
    text: &'a str,
    index: PosIndex,
}

impl<'a> Doc<'a> {
    /// `file` is the name errors give the document.
    pub fn new(file: &'a Path, text: &'a str) -> Doc<'a> {
        Doc { file, text, index: PosIndex::build(text) }
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    /// Line and column (both 1-based) of `field`, or of its nearest ancestor in the document.
    pub fn position(&self, field: &str) -> (usize, usize) {
        self.index.at(field)
    }

    /// Where `field` (or its nearest written ancestor) is.
    pub fn origin(&self, field: &str) -> crate::catalog::Origin {
        let (line, col) = self.position(field);
        crate::catalog::Origin { file: self.file.to_path_buf(), line, col, field: field.to_string() }
    }

    /// An error about `field`, at its position.
    pub fn error(&self, field: &str, message: impl Display) -> ConfigError {
        let (line, col) = self.position(field);
        ConfigError { file: self.file.to_path_buf(), line, col, field: field.to_string(), message: message.to_string() }
    }

    /// Deserialises the whole document. On failure records one error, at serde's position
    /// (else the field's) and with serde's field path, and returns `None`.
    ///
    /// A blank file (nothing but white space) is an error rather than an empty document: it is
    /// what a copy or an editor leaves half-way, or a full disk, and taking it as "no machines"
    /// or "no settings" would change what is served without anyone having meant it. A key
    /// written twice is reported at the second one, for each such key.
    pub fn parse<T: DeserializeOwned>(&self, errs: &mut Errors) -> Option<T> {
        if self.text.trim().is_empty() {
            let message = "the file is empty: write its content, or remove it";
            errs.push(ConfigError {
                file: self.file.to_path_buf(),
                line: 1,
                col: 1,
                field: String::new(),
                message: message.into(),
            });
            return None;
        }
        if !self.index.duplicates().is_empty() {
            for d in self.index.duplicates() {
                let message = format!("duplicate key, first at line {} column {}", d.first.0, d.first.1);
                let (line, col) = d.at;
                errs.push(ConfigError { file: self.file.to_path_buf(), line, col, field: d.path.clone(), message });
            }
            return None;
        }
        let de = serde_yaml::Deserializer::from_str(self.text);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Some(v),
            Err(e) => {
                let field = field_path("", e.path());
                let inner = e.into_inner();
                let (line, col) = match inner.location() {
                    Some(l) => (l.line(), l.column()),
                    None => self.position(&field),
                };
                let message = serde_message(&field, &inner.to_string());
                errs.push(ConfigError { file: self.file.to_path_buf(), line, col, field, message });
                None
            }
        }
    }

    /// As `parse`, but a document of comments only is the default (someone wrote it so; a
    /// blank file is still an error).
    pub fn parse_or_default<T: DeserializeOwned + Default>(&self, errs: &mut Errors) -> Option<T> {
        let blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
        if !self.text.trim().is_empty() && self.text.lines().all(blank) {
            return Some(T::default());
        }
        self.parse(errs)
    }

    /// Deserialises one entry that was kept as raw YAML (`serde_yaml::Value`) at field `base`,
    /// so one bad entry does not hide the errors of the others.
    pub fn parse_value<T: DeserializeOwned>(&self, v: &serde_yaml::Value, base: &str, errs: &mut Errors) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let field = field_path(base, e.path());
                let message = serde_message(&field, &e.into_inner().to_string());
                errs.at(self, &field, message);
                None
            }
        }
    }
}

/// Every error of one validation, in the order found.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    pub fn new() -> Errors {
        Errors::default()
    }

    /// Records `message` about `field` of `doc`, at the field's position.
    pub fn at(&mut self, doc: &Doc<'_>, field: &str, message: impl Display) {
        self.0.push(doc.error(field, message));
    }

    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was recorded.
    pub fn check(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into())
        }
    }
}

impl From<Errors> for ConfigErrors {
    fn from(e: Errors) -> ConfigErrors {
        ConfigErrors(e.0)
    }
}

/// serde_path_to_error's path in our spelling (`machines."52:54:00:12:34:56".profile`).
fn field_path(base: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = base.to_string();
    for seg in path.iter() {
        out = match seg {
            Segment::Seq { index: i } => index(&out, *i),
            Segment::Map { key: k } => key(&out, k),
            Segment::Enum { variant } => key(&out, variant),
            Segment::Unknown => out,
        };
    }
    out
}

/// serde_yaml's message without what the error line says anyway: the position (` at line ..`)
/// and the field path it may start with (`server: unknown field ..`).
fn serde_message(field: &str, msg: &str) -> String {
    let msg = msg.rfind(" at line ").map_or(msg, |i| &msg[..i]);
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_string(),
        _ => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Wire {
        server: Option<Server>,
        #[serde(default)]
        list: Vec<u16>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        address: String,
    }

    fn parse(text: &str) -> Result<Wire, Vec<String>> {
        let doc = Doc::new(Path::new("x.yaml"), text);
        let mut errs = Errors::new();
        let wire = doc.parse_or_default::<Wire>(&mut errs);
        match errs.check() {
            Ok(()) => Ok(wire.unwrap()),
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn serde_errors_keep_position_and_path_once() {
        let errs = parse("server:\n  address: a\n  adress: b\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("x.yaml:3:3: server.adress: unknown field `adress`, expected `address`"),
            "{errs:?}"
        );
        let errs = parse("list: [1, 2, big]\n").unwrap_err();
        assert!(errs[0].starts_with("x.yaml:1:"), "{errs:?}");
        assert!(errs[0].contains(": list[2]: invalid type"), "{errs:?}");
    }

    #[test]
    fn empty_documents_are_the_default() {
        assert!(parse("# nothing here\n\n").unwrap().server.is_none());
    }

    #[test]
    fn errors_found_later_point_at_their_field() {
        let text = "server:\n  address: 10.0.0.999\n";
        let doc = Doc::new(Path::new("x.yaml"), text);
        let mut errs = Errors::new();
        errs.at(&doc, "server.address", "bad");
        errs.at(&doc, "server.missing", "points at its parent");
        let lines: Vec<String> = ConfigErrors::from(errs).0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines, ["x.yaml:2:3: server.address: bad", "x.yaml:1:1: server.missing: points at its parent"]);
    }
}
