//! Answer files: per-machine files an installer fetches (a debian-installer preseed, cloud-init
//! `user-data` and `meta-data`, a kickstart, an Ignition config), rendered from the
//! operator's minijinja templates at `GET /answers/<mac>/<name>`.
//!
//! A profile names its templates (`answers: { user-data: cloud/user-data.j2 }`, paths in the
//! config directory). They are compiled when the config is validated, in one environment with
//! strict undefined and no auto-escaping (`tojson` is there for JSON), and see what the
//! kernel command line sees (`render::context`). After rendering, an answer whose file or name
//! says JSON (`*.json`, `*.ign`, `ignition`) must parse as JSON, and one that starts with
//! `#cloud-config` must parse as a YAML mapping: a file the installer would choke on is an
//! error here, not a failed install.
//!
//! `check_all` renders every answer (and every command line) for every machine of the MAC
//! database, one sample machine per vendor rule and one unknown machine, each on every
//! architecture it may boot, with the check-only token key: a template that fails for any of
//! them is a config error (`FILE:LINE:COL: answers.NAME: …`), and the config is refused.
//!
//! Pure: the templates' texts arrive from the caller through the `FileProbe`.

use crate::arch::Arch;
use crate::catalog::{Catalog, Profile, Target};
use crate::client::{Client, Learned};
use crate::config::error::ConfigError;
use crate::decide::{decide, target_of, Decision, Identity, Stage};
use crate::mac::MacAddr;
use crate::render::context::template_context;
use crate::render::ServerInfo;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A machine no MAC database entry names, for `check_all` (from the range RFC 7042 sets aside
/// for documentation).
pub const SAMPLE_UNKNOWN: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);

/// One answer file of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    /// The template, relative to the config directory.
    pub path: PathBuf,
    /// The template as errors name it (the config directory joined with `path`).
    pub file: PathBuf,
    pub format: Format,
}

/// What a rendered answer must parse as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON (Ignition): checked with serde_json.
    Json,
    /// Anything else; one starting with `#cloud-config` is checked as a YAML mapping.
    Text,
}

impl Format {
    /// JSON for a template named `*.json[.j2]` or `*.ign[.j2]`, or an answer named `ignition`,
    /// `*.json` or `*.ign`.
    pub fn of(name: &str, template: &Path) -> Format {
        let file = template.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let file = [".j2", ".jinja", ".jinja2"].iter().find_map(|s| file.strip_suffix(s)).unwrap_or(file);
        let json = |s: &str| s.ends_with(".json") || s.ends_with(".ign");
        if json(file) || json(name) || name == "ignition" {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// The compiled templates of every profile's answers, keyed `<profile>/<answer>`.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.templates().map(|(n, _)| n).collect();
        f.debug_struct("Templates").field("names", &names).finish()
    }
}

impl Default for Templates {
    fn default() -> Templates {
        Templates::builder().build()
    }
}

/// Collects templates while a config is validated.
pub struct Builder {
    env: Environment<'static>,
}

impl Templates {
    pub fn builder() -> Builder {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Positions of errors in release builds too.
        env.set_debug(true);
        // The answers are not HTML: `{{ x }}` writes x as it is (an Ignition template uses
        // `tojson`), whatever the file is called.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        Builder { env }
    }

    fn key(profile: &str, name: &str) -> String {
        format!("{profile}/{name}")
    }
}

impl Builder {
    /// Compiles `text`, the template of answer `name` of `profile`; a syntax error comes back
    /// positioned in the template's own file (`answer.file`).
    pub fn add(&mut self, profile: &str, answer: &Answer, text: String) -> Result<(), ConfigError> {
        let source = text.clone();
        self.env
            .add_template_owned(Templates::key(profile, &answer.name), text)
            .map_err(|e| template_error(answer, &source, &e, describe(&e)))
    }

    pub fn build(self) -> Templates {
        Templates { env: Arc::new(self.env) }
    }
}

/// A rendered answer file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub content_type: &'static str,
}

/// Why an answer was not rendered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("profile {profile} has no answer file named {name:?}")]
    NoSuchAnswer { profile: String, name: String },
    #[error("{}: {}", .file.display(), describe(.source))]
    Template { file: PathBuf, source: minijinja::Error },
    #[error("{}: renders invalid JSON: {error}", .file.display())]
    Json { file: PathBuf, error: String },
    #[error("{}: renders a #cloud-config that is not a YAML mapping: {error}", .file.display())]
    CloudConfig { file: PathBuf, error: String },
}

/// A minijinja error without its template name and line, which positions say better.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Renders answer `name` of `profile` for `machine`. `set` is the architecture and its artifact
/// set when known; `direct` whether the profile is the machine's own target (not one picked
/// from a menu).
pub fn render(
    catalog: &Catalog,
    profile: &Profile,
    name: &str,
    set: Option<Arch>,
    machine: &Identity,
    server: &ServerInfo,
    direct: bool,
) -> Result<Rendered, AnswerError> {
    let Some(answer) = profile.answers.get(name) else {
        return Err(AnswerError::NoSuchAnswer { profile: profile.name.clone(), name: name.to_string() });
    };
    let set = set.or_else(|| profile.only_arch()).and_then(|a| profile.arches.get(&a).map(|s| (a, s)));
    let ctx = template_context(profile, set, machine, server, direct);
    let templates = &catalog.answer_templates().env;
    let template_error = |source| AnswerError::Template { file: answer.file.clone(), source };
    let text = templates
        .get_template(&Templates::key(&profile.name, name))
        .and_then(|t| t.render(ctx))
        .map_err(template_error)?;
    let content_type = match answer.format {
        Format::Json => {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| AnswerError::Json { file: answer.file.clone(), error: e.to_string() })?;
            "application/json"
        }
        Format::Text if text.starts_with("#cloud-config") => {
            let parsed = serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| e.to_string());
            match parsed {
                Ok(serde_yaml::Value::Mapping(_)) => {}
                Ok(_) => {
                    let error = "the document is not a mapping".to_string();
                    return Err(AnswerError::CloudConfig { file: answer.file.clone(), error });
                }
                Err(error) => return Err(AnswerError::CloudConfig { file: answer.file.clone(), error }),
            }
            "text/cloud-config; charset=utf-8"
        }
        Format::Text => "text/plain; charset=utf-8",
    };
    Ok(Rendered { text, content_type })
}

/// A template error at its position in the template's file.
fn template_error(answer: &Answer, source: &str, e: &minijinja::Error, message: String) -> ConfigError {
    let (line, col) = position(source, e);
    ConfigError { file: answer.file.clone(), line, col, field: format!("answers.{}", answer.name), message }
}

/// Line and column (1-based) of a template error in `source`.
fn position(source: &str, e: &minijinja::Error) -> (usize, usize) {
    match e.range().filter(|r| r.start <= source.len() && source.is_char_boundary(r.start)) {
        Some(r) => {
            let before = &source[..r.start];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            (line, col)
        }
        None => (e.line().unwrap_or(1), 1),
    }
}

/// A config error's file, line, column, field and message: the same failure for many machines.
type ErrorKey = (PathBuf, usize, usize, String, String);

/// One machine `check_all` renders for.
struct Sample {
    mac: MacAddr,
    /// Its architecture, when the MAC database or a vendor rule says it.
    arch: Option<Arch>,
    /// How the errors name it.
    label: String,
}

/// Renders every command line and answer for every machine of the catalog, a sample machine
/// per vendor rule and a sample unknown machine, on each architecture they may boot, with
/// the check-only token key. Every failure is an error; the same failure for many machines
/// is reported once, for the first, with the count of the others.
pub fn check_all(catalog: &Catalog, cmdline_field: &dyn Fn(&Profile, Arch) -> ConfigError) -> Vec<ConfigError> {
    let server = ServerInfo::from_catalog(catalog);
    let mut samples: Vec<Sample> = catalog
        .machines()
        .map(|m| Sample {
            mac: m.mac,
            arch: m.arch.or_else(|| catalog.vendor_rule(m.mac).and_then(|v| v.arch)),
            label: format!("machine {} ({})", m.mac, m.hostname),
        })
        .collect();
    for v in catalog.vendors() {
        let o = v.oui.0;
        let mac = MacAddr([o[0], o[1], o[2], 0x00, 0x53, 0x01]);
        if catalog.machine(mac).is_none() {
            samples.push(Sample { mac, arch: v.arch, label: format!("a machine of vendor rule {} ({mac})", v.oui) });
        }
    }
    samples.push(Sample { mac: SAMPLE_UNKNOWN, arch: None, label: format!("an unknown machine ({SAMPLE_UNKNOWN})") });

    // An error without the machine it is about -> the first machine's label, how many.
    let mut found: BTreeMap<ErrorKey, (String, usize)> = BTreeMap::new();
    let mut report = |e: ConfigError, label: String| {
        found.entry((e.file, e.line, e.col, e.field, e.message)).or_insert((label, 0)).1 += 1;
    };
    // A profile no sample reaches is rendered for the unknown sample as if sent to it.
    let mut reached: Vec<&str> = Vec::new();
    let unreached = |reached: &[&str]| -> Vec<&Profile> {
        catalog.profiles().filter(|p| !p.answers.is_empty() && !reached.contains(&p.name.as_str())).collect()
    };
    let mut plan: Vec<(&Sample, Vec<(&Profile, bool)>)> = Vec::new();
    for s in &samples {
        let (target, _) = target_of(catalog, Some(s.mac));
        let profiles: Vec<(&Profile, bool)> = match target {
            Target::Profile(p) => vec![(&**p, true)],
            Target::Menu(m) => m
                .entries
                .iter()
                .filter_map(|e| match &e.action {
                    crate::catalog::MenuAction::Profile(p) => Some((&**p, false)),
                    _ => None,
                })
                .collect(),
            Target::Local | Target::Ignore => continue,
        };
        reached.extend(profiles.iter().map(|(p, _)| p.name.as_str()));
        plan.push((s, profiles));
    }
    let orphan =
        Sample { mac: SAMPLE_UNKNOWN, arch: None, label: format!("an unknown machine ({SAMPLE_UNKNOWN}) sent to it") };
    let orphans: Vec<(&Profile, bool)> = unreached(&reached).into_iter().map(|p| (p, true)).collect();
    if !orphans.is_empty() {
        plan.push((&orphan, orphans));
    }
    for (s, profiles) in plan {
        for (profile, direct) in profiles {
            let arches: Vec<Arch> = match s.arch {
                Some(a) if profile.arches.contains_key(&a) => vec![a],
                // A menu leaves out profiles not built for the machine; a direct target of the
                // wrong architecture is reported by validation already.
                Some(_) => continue,
                None => profile.arches.keys().copied().collect(),
            };
            for arch in arches {
                let mut client = Client::new(crate::arch::Firmware::Unknown).with_mac(s.mac, Learned::Chaddr);
                client.arch_hint = Some((arch, Learned::Chaddr));
                let d: Decision = decide(catalog, &client, Stage::IpxeScript);
                let label = format!("{} on {arch}", s.label);
                if let Some(set) = profile.arches.get(&arch) {
                    if let Err(e) = crate::render::render_cmdline(profile, arch, set, &d, &server) {
                        report(
                            ConfigError { message: cmdline_problem(&e), ..cmdline_field(profile, arch) },
                            label.clone(),
                        );
                    }
                }
                for (name, answer) in &profile.answers {
                    if let Err(e) = render(catalog, profile, name, Some(arch), &d.machine, &server, direct) {
                        report(answer_error(answer, catalog, profile, &e), label.clone());
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .map(|((file, line, col, field, message), (label, count))| {
            let more = match count {
                1 => String::new(),
                2 => " (and for 1 more)".to_string(),
                n => format!(" (and for {} more)", n - 1),
            };
            ConfigError { file, line, col, field, message: format!("for {label}{more}: {message}") }
        })
        .collect()
}

fn cmdline_problem(e: &crate::render::RenderError) -> String {
    match e {
        crate::render::RenderError::Cmdline { source, .. } => describe(source),
        other => other.to_string(),
    }
}

/// An answer's rendering failure as a config error, positioned in its template where it can be.
fn answer_error(answer: &Answer, catalog: &Catalog, profile: &Profile, e: &AnswerError) -> ConfigError {
    let field = format!("answers.{}", answer.name);
    match e {
        AnswerError::Template { source, .. } => {
            let text = catalog
                .answer_templates()
                .env
                .get_template(&Templates::key(&profile.name, &answer.name))
                .map(|t| t.source().to_string())
                .unwrap_or_default();
            let (line, col) = position(&text, source);
            ConfigError { file: answer.file.clone(), line, col, field, message: describe(source) }
        }
        other => ConfigError { file: answer.file.clone(), line: 1, col: 1, field, message: problem(other) },
    }
}

/// The error without the file name it starts with.
fn problem(e: &AnswerError) -> String {
    match e {
        AnswerError::Json { error, .. } => format!("renders invalid JSON: {error}"),
        AnswerError::CloudConfig { error, .. } => {
            format!("renders a #cloud-config that is not a YAML mapping: {error}")
        }
        other => other.to_string(),
    }
}
