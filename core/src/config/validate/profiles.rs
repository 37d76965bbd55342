//! Profile files: per-architecture artifact sets, their sources and versions.

use super::*;

pub(super) fn validate_profiles(
    input: &Input,
    probe: &dyn FileProbe,
    templates: &mut crate::answers::Builder,
    errs: &mut Errors,
) -> BTreeMap<String, Arc<Profile>> {
    let mut out = BTreeMap::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for src in &input.profiles {
        let doc = src.doc();
        let Some(wire) = doc.parse::<ProfileFile>(errs) else {
            continue;
        };
        if !valid_name(&wire.name) {
            errs.at(
                &doc,
                "name",
                format!("{:?} is not a valid profile name (letters, digits, '-', '_', '.')", wire.name),
            );
            continue;
        }
        if let Some(other) = seen.get(&wire.name) {
            errs.at(&doc, "name", format!("profile {:?} is already defined in {}", wire.name, other.display()));
            continue;
        }
        seen.insert(wire.name.clone(), src.path.clone());
        if wire.arch.is_empty() {
            errs.at(&doc, "arch", "a profile needs at least one architecture");
        }
        let mut arches = BTreeMap::new();
        for (arch_name, a) in &wire.arch {
            let base = key("arch", arch_name);
            let arch = match parse_arch(arch_name) {
                Ok(arch) => arch,
                Err(e) => {
                    errs.at(&doc, &base, e);
                    continue;
                }
            };
            let cmdline = a.cmdline.clone().unwrap_or_else(|| wire.cmdline.clone());
            let cmd_field = if a.cmdline.is_some() { key(&base, "cmdline") } else { "cmdline".to_string() };
            if let Err(e) = crate::render::check_template(&cmdline) {
                errs.at(&doc, &cmd_field, format!("template does not compile: {e}"));
            }
            let deb_arch = debian_arch(arch);
            let mut names: HashMap<String, String> = HashMap::new();
            let mut artifact = |role: &str, field: String, s: &SourceWire, default_name: &str, errs: &mut Errors| {
                let a = source(s, &field, default_name, deb_arch, &doc, probe, errs)?;
                if let Some(prev) = names.insert(a.name.clone(), field.clone()) {
                    errs.at(&doc, &field, format!("{role} file name {:?} is also used by {prev}", a.name));
                    return None;
                }
                Some(a)
            };
            let kernel = artifact("kernel", key(&base, "kernel"), &a.kernel, "", errs);
            let initrds: Vec<_> = a
                .initrd
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let default = if a.initrd.len() == 1 { "initrd.img".to_string() } else { format!("initrd{i}.img") };
                    artifact("initrd", index(&key(&base, "initrd"), i), s, &default, errs)
                })
                .collect();
            let fdt = a.fdt.as_ref().map(|s| artifact("fdt", key(&base, "fdt"), s, "", errs));
            let image = a.image.as_ref().map(|s| {
                let field = key(&base, "image");
                let image = artifact("image", field.clone(), s, "", errs)?;
                if matches!(image.source, Source::Cpio { .. }) {
                    // The installer checks the bytes it writes against `artifacts.image.sha256`,
                    // which only a file source pins.
                    errs.at(&doc, &field, "an image is a file (`path`, `deb` or `url`), not a `cpio` recipe");
                    return None;
                }
                Some(image)
            });
            let optional = |a: Option<Option<Artifact>>| a.map_or(Some(None), |a| a.map(Some));
            let (Some(kernel), Some(initrds), Some(fdt), Some(image)) =
                (kernel, initrds.into_iter().collect::<Option<Vec<_>>>(), optional(fdt), optional(image))
            else {
                continue;
            };
            let version = crate::version::set_version(arch, &cmdline, &kernel, &initrds, fdt.as_ref(), image.as_ref());
            arches.insert(arch, ArtifactSet { kernel, initrds, fdt, image, cmdline, version });
        }
        let answers = answers(input, &wire, &doc, probe, templates, errs);
        out.insert(
            wire.name.clone(),
            Arc::new(Profile {
                name: wire.name.clone(),
                description: wire.description.clone(),
                arches,
                answers,
                file: src.path.clone(),
                vars: serde_json::to_value(&wire.vars).unwrap_or(serde_json::Value::Null),
            }),
        );
    }
    out
}

/// The profile's answer files: valid names, templates inside the config directory that read
/// and compile (a syntax error is reported at its line and column in the template's file).
fn answers(
    input: &Input,
    wire: &ProfileFile,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    templates: &mut crate::answers::Builder,
    errs: &mut Errors,
) -> BTreeMap<String, crate::answers::Answer> {
    let mut out = BTreeMap::new();
    for (name, path) in &wire.answers {
        let field = key("answers", name);
        if !valid_name(name) {
            errs.at(doc, &field, format!("{name:?} is not a valid answer name (letters, digits, '-', '_', '.')"));
            continue;
        }
        if !contained(path) {
            errs.at(doc, &field, format!("{path:?} must be a relative path inside the config directory"));
            continue;
        }
        let text = match probe.text(Path::new(path)) {
            Ok(t) => t,
            Err(e) => {
                errs.at(doc, &field, format!("answer template {path:?}: {e}"));
                continue;
            }
        };
        let answer = crate::answers::Answer {
            name: name.clone(),
            path: PathBuf::from(path),
            file: input.dir.join(path),
            format: crate::answers::Format::of(name, Path::new(path)),
        };
        match templates.add(&wire.name, &answer, text) {
            Ok(()) => {
                out.insert(name.clone(), answer);
            }
            Err(e) => errs.push(e),
        }
    }
    out
}

pub fn debian_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
        Arch::X86 => "i386",
        Arch::Arm => "armhf",
        Arch::Riscv64 => "riscv64",
        Arch::Riscv32 => "riscv32",
        Arch::Loongarch64 => "loong64",
    }
}

/// Validates the parts every source kind shares (path/deb/url with a checksum).
#[allow(clippy::too_many_arguments)]
fn simple_source(
    path: Option<&String>,
    deb: Option<&String>,
    deb_arch: Option<&String>,
    file: Option<&String>,
    url: Option<&String>,
    deb_sha256: Option<&String>,
    sha256: Option<&String>,
    default_arch: &str,
    field: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<(Source, Digest)> {
    let sha = match sha256.map(|s| parse_sha256(s)) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            errs.at(doc, &key(field, "sha256"), e);
            return None;
        }
        None => None,
    };
    match (path, deb, url) {
        (Some(p), None, None) => {
            if !contained(p) {
                errs.at(doc, &key(field, "path"), format!("{p:?} must be a relative path inside the config directory"));
                return None;
            }
            let digest = match probe.digest(Path::new(p)) {
                Ok(d) => d,
                Err(e) => {
                    errs.at(doc, &key(field, "path"), format!("artifact file {p:?}: {e}"));
                    return None;
                }
            };
            if let Some(want) = sha {
                if want != digest {
                    errs.at(
                        doc,
                        &key(field, "sha256"),
                        format!(
                            "checksum mismatch for {p}: expected {}, file has {}",
                            hex::encode(want),
                            hex::encode(digest)
                        ),
                    );
                    return None;
                }
            }
            Some((Source::Path(PathBuf::from(p)), digest))
        }
        (None, Some(pkg), url) => {
            let download = match (url, deb_sha256) {
                (None, None) => None,
                (Some(u), Some(d)) => {
                    if !is_http_url(u) {
                        errs.at(doc, &key(field, "url"), format!("{u:?} is not an http:// or https:// URL"));
                        return None;
                    }
                    match parse_sha256(d) {
                        Ok(sha256) => Some(DebDownload { url: u.clone(), sha256 }),
                        Err(e) => {
                            errs.at(doc, &key(field, "deb_sha256"), e);
                            return None;
                        }
                    }
                }
                (Some(_), None) => {
                    errs.at(
                        doc,
                        field,
                        format!("a deb source with `url` needs `deb_sha256`: the sha256 of {pkg}'s .deb"),
                    );
                    return None;
                }
                (None, Some(_)) => {
                    errs.at(
                        doc,
                        &key(field, "deb_sha256"),
                        "`deb_sha256` pins the .deb that `url` names: give `url` too",
                    );
                    return None;
                }
            };
            let Some(file) = file else {
                errs.at(doc, field, format!("a deb source needs `file`: the path of the file inside package {pkg}"));
                return None;
            };
            let Some(sha) = sha else {
                errs.at(doc, field, format!("a deb source needs `sha256` of {file} inside {pkg}"));
                return None;
            };
            let deb_arch = deb_arch.cloned().unwrap_or_else(|| default_arch.to_string());
            let source = Source::Deb {
                package: pkg.clone(),
                deb_arch,
                file: file.trim_start_matches('/').to_string(),
                sha256: sha,
                download,
            };
            Some((source, sha))
        }
        (None, None, Some(u)) if deb_sha256.is_none() => {
            if !is_http_url(u) {
                errs.at(doc, &key(field, "url"), format!("{u:?} is not an http:// or https:// URL"));
                return None;
            }
            let Some(sha) = sha else {
                errs.at(doc, field, "a url source needs `sha256`");
                return None;
            };
            Some((Source::Url { url: u.clone(), sha256: sha }, sha))
        }
        _ => {
            errs.at(
                doc,
                field,
                "give exactly one source: `path`, `deb` (optionally with `url` and `deb_sha256`), `url` or `cpio`",
            );
            None
        }
    }
}

fn is_http_url(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

fn source(
    s: &SourceWire,
    field: &str,
    default_name: &str,
    deb_arch: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<Artifact> {
    let (source, digest) = if let Some(entries) = &s.cpio {
        if s.path.is_some() || s.deb.is_some() || s.url.is_some() || s.deb_sha256.is_some() {
            errs.at(doc, field, "give exactly one source: `path`, `deb`, `url` or `cpio`");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, e) in entries.iter().enumerate() {
            let f = index(&key(field, "cpio"), i);
            match cpio_entry(e, &f, deb_arch, doc, probe, errs) {
                Some(entry) => out.push(entry),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let digest = crate::version::cpio_digest(&out, s.gzip);
        (Source::Cpio { entries: out, gzip: s.gzip }, digest)
    } else {
        simple_source(
            s.path.as_ref(),
            s.deb.as_ref(),
            s.deb_arch.as_ref(),
            s.file.as_ref(),
            s.url.as_ref(),
            s.deb_sha256.as_ref(),
            s.sha256.as_ref(),
            deb_arch,
            field,
            doc,
            probe,
            errs,
        )?
    };
    let name = match &s.name {
        Some(n) => n.clone(),
        None if !default_name.is_empty() => default_name.to_string(),
        None => default_file_name(&source),
    };
    if !valid_name(&name) {
        errs.at(
            doc,
            &key(field, "name"),
            format!("{name:?} is not a valid file name (letters, digits, '-', '_', '.')"),
        );
        return None;
    }
    Some(Artifact { name, source, digest, origin: doc.origin(field) })
}

fn default_file_name(source: &Source) -> String {
    let from = match source {
        Source::Path(p) => p.to_string_lossy().into_owned(),
        Source::Deb { file, .. } => file.clone(),
        Source::Url { url, .. } => url.split(['?', '#']).next().unwrap_or("").to_string(),
        Source::Cpio { .. } => return "initrd.img".into(),
    };
    let base = from.rsplit('/').next().unwrap_or("").replace('*', "");
    if base.is_empty() {
        "file".into()
    } else {
        base
    }
}

fn cpio_entry(
    e: &CpioEntryWire,
    field: &str,
    deb_arch: &str,
    doc: &Doc<'_>,
    probe: &dyn FileProbe,
    errs: &mut Errors,
) -> Option<CpioEntry> {
    let dest = e.dest.trim_start_matches('/').to_string();
    if !contained(&dest) {
        errs.at(doc, &key(field, "dest"), format!("{:?} must stay inside the archive", e.dest));
        return None;
    }
    let mode = match &e.mode {
        None => None,
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => Some(m),
            _ => {
                errs.at(doc, &key(field, "mode"), format!("{m:?} is not an octal mode like \"0755\""));
                return None;
            }
        },
    };
    let has_file = e.path.is_some() || e.deb.is_some() || e.url.is_some();
    let source = match (e.dir, &e.symlink, has_file) {
        (true, None, false) => CpioSource::Dir,
        (false, Some(t), false) => CpioSource::Symlink(t.clone()),
        (false, None, true) => {
            let (s, digest) = simple_source(
                e.path.as_ref(),
                e.deb.as_ref(),
                e.deb_arch.as_ref(),
                e.file.as_ref(),
                e.url.as_ref(),
                e.deb_sha256.as_ref(),
                e.sha256.as_ref(),
                deb_arch,
                field,
                doc,
                probe,
                errs,
            )?;
            CpioSource::File { source: Box::new(s), digest }
        }
        _ => {
            errs.at(
                doc,
                field,
                "a cpio entry is exactly one of `dir: true`, `symlink`, or a file source (`path`, `deb`, `url`)",
            );
            return None;
        }
    };
    let default_mode = match source {
        CpioSource::Dir => 0o755,
        CpioSource::Symlink(_) => 0o777,
        CpioSource::File { .. } => 0o644,
    };
    Some(CpioEntry { dest, mode: mode.unwrap_or(default_mode), source })
}
