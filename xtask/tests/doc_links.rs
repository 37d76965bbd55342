//! Links into the repository's documents must lead somewhere. Code comments cite
//! `docs/firmware.md` and `docs/benchmarks.md` by section, so renaming a heading there, or
//! naming a document that is not in the repository, fails here instead of leaving readers
//! with a dead pointer. Checked, in every text file outside `target/` and hidden directories:
//!
//! - every `docs/<name>.md` and `docs/<name>.md#<anchor>`: the file exists, and the anchor is
//!   one of its headings (GitHub's slug) or an explicit `<a id>`;
//! - every Markdown link `[text](target)` in a `.md` file that is not a URL: the target exists
//!   relative to that file, with the same anchor rule when it names one;
//! - every all-capitals document name (the style of this repository's top-level documents):
//!   the file exists next to the mention or at the repository root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository").to_path_buf()
}

const TEXT_EXTENSIONS: &[&str] = &["rs", "md", "toml", "yaml", "yml", "j2"];

fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            text_files(&path, out);
        } else if path.extension().is_some_and(|e| TEXT_EXTENSIONS.iter().any(|t| e == *t)) {
            out.push(path);
        }
    }
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation other than `-` and `_`
/// dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a Markdown text defines: its headings (outside code fences; a repeated heading
/// gets `-1`, `-2`, …) and explicit `<a id="…">` / `<a name="…">`.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(&line[hashes..]);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
            *n += 1;
        }
        for attr in ["<a id=\"", "<a name=\""] {
            for (at, _) in line.match_indices(attr) {
                let rest = &line[at + attr.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        }
    }
    out
}

/// A reference found in a file: where, the path as written, the anchor if any.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    line: usize,
    path: String,
    anchor: Option<String>,
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn is_anchor_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-')
}

/// Splits `path#anchor`.
fn split_anchor(target: &str) -> (String, Option<String>) {
    match target.split_once('#') {
        Some((p, a)) => (p.to_string(), Some(a.to_string())),
        None => (target.to_string(), None),
    }
}

/// Mentions of `docs/<name>.md[#anchor]` and of all-capitals `NAME.md` documents, anywhere.
fn mentions(text: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices(".md") {
            let after = &line[at + 3..];
            if after.chars().next().is_some_and(is_path_char) {
                continue;
            }
            let start = line[..at].rfind(|c: char| !is_path_char(c)).map_or(0, |i| i + 1);
            let path = &line[start..at + 3];
            let anchor = after
                .strip_prefix('#')
                .map(|a| a.chars().take_while(|c| is_anchor_char(*c)).collect::<String>())
                .filter(|a| !a.is_empty());
            let name = path.rsplit('/').next().unwrap_or(path);
            let stem = &name[..name.len() - 3];
            let in_docs = path.starts_with("docs/") || path.contains("/docs/");
            let capitals = !stem.is_empty() && stem.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            if in_docs || capitals {
                out.push(Reference { line: n + 1, path: path.to_string(), anchor });
            }
        }
    }
    out
}

/// Markdown link targets `](…)` that are not URLs.
fn markdown_links(text: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = split_anchor(target);
            out.push(Reference { line: n + 1, path, anchor });
        }
    }
    out
}

/// Checks one reference made from `file`; `None` when it resolves.
fn check(root: &Path, file: &Path, r: &Reference, relative_only: bool) -> Option<String> {
    let here = file.parent().unwrap_or(root);
    let target = if r.path.is_empty() {
        Some(file.to_path_buf())
    } else {
        let candidates: Vec<PathBuf> = if relative_only {
            vec![here.join(&r.path)]
        } else {
            // A code comment names repository paths from the root; a document may name its neighbour.
            vec![root.join(r.path.trim_start_matches("../")), here.join(&r.path)]
        };
        candidates.into_iter().find(|p| p.exists())
    };
    let Some(target) = target else {
        return Some(format!("{} does not exist", r.path));
    };
    let anchor = r.anchor.as_ref()?;
    let text = std::fs::read_to_string(&target).ok()?;
    if target.extension().is_some_and(|e| e == "md") && !anchors(&text).contains(anchor) {
        return Some(format!("{}#{anchor}: no heading or <a id> with that anchor", r.path));
    }
    None
}

/// This file: its examples and fixtures are references on purpose.
const THIS_FILE: &str = "xtask/tests/doc_links.rs";

fn broken_links(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    text_files(root, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        if shown == THIS_FILE {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let mut refs: Vec<(Reference, bool)> = mentions(&text).into_iter().map(|r| (r, false)).collect();
        if file.extension().is_some_and(|e| e == "md") {
            refs.extend(markdown_links(&text).into_iter().map(|r| (r, true)));
        }
        // A Markdown link is also a mention: report each line's problem once.
        let found: BTreeSet<(usize, String)> =
            refs.iter().filter_map(|(r, rel)| check(root, file, r, *rel).map(|why| (r.line, why))).collect();
        broken.extend(found.into_iter().map(|(line, why)| format!("{shown}:{line}: {why}")));
    }
    broken
}

#[test]
fn every_document_link_in_the_repository_resolves() {
    let root = repo_root();
    assert!(root.join("docs/firmware.md").exists(), "run from the repository");
    let broken = broken_links(&root);
    assert!(broken.is_empty(), "broken document links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_follow_githubs_rule() {
    assert_eq!(slug(" U-Boot behind proxyDHCP"), "u-boot-behind-proxydhcp");
    assert_eq!(slug(" Full bench run, 2026-12-02"), "full-bench-run-2026-12-02");
    assert_eq!(slug(" `cargo xtask bench`: TFTP"), "cargo-xtask-bench-tftp");
    let text = "# A\n## Same\n```sh\n# not a heading\n```\n## Same\n<a id=\"custom\"></a>\n";
    let found = anchors(text);
    assert_eq!(found, ["a", "custom", "same", "same-1"].into_iter().map(String::from).collect());
}

#[test]
fn finds_and_rejects_dead_references() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("docs/guide.md"), "# Guide\n## The part\nSee [top](#guide), [gone](#nope).\n").unwrap();
    let code =
        "// docs/guide.md#the-part is fine\n// docs/guide.md#renamed is not\n// docs/missing.md\n// OUTSIDE.md\n";
    std::fs::write(root.join("src/lib.rs"), code).unwrap();
    let broken = broken_links(root);
    assert_eq!(
        broken,
        [
            "docs/guide.md:3: #nope: no heading or <a id> with that anchor",
            "src/lib.rs:2: docs/guide.md#renamed: no heading or <a id> with that anchor",
            "src/lib.rs:3: docs/missing.md does not exist",
            "src/lib.rs:4: OUTSIDE.md does not exist",
        ]
    );
}
