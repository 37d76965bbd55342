//! The host preparation as a pure function: from what dpkg and apt say (parsed here from their
//! output) and what a command needs, to the `dpkg`/`apt-get` commands that make the host ready.
//!
//! Nothing here runs a program or reads a file: `host/mod.rs` gathers the text and executes
//! the steps, so every decision can be tested on captured output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A binary package of one architecture, as dpkg and apt name it (`qemu-utils`,
/// `grub-efi-arm64-bin:arm64`); the architecture is always filled in, native when the name
/// has no qualifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageRef {
    pub name: String,
    pub arch: String,
}

impl PackageRef {
    pub fn new(name: &str, arch: &str) -> PackageRef {
        PackageRef { name: name.to_owned(), arch: arch.to_owned() }
    }

    /// `name` or `name:arch`, as dpkg-query and apt-cache print it.
    fn parse(text: &str, native: &str) -> PackageRef {
        match text.split_once(':') {
            Some((name, arch)) => PackageRef::new(name, arch),
            None => PackageRef::new(text, native),
        }
    }

    /// How apt-get is told about it: qualified only when foreign.
    pub fn spec(&self, native: &str) -> String {
        if self.arch == native {
            self.name.clone()
        } else {
            format!("{}:{}", self.name, self.arch)
        }
    }
}

/// A version pinned in `xtask/debian.lock` that `apt-get download` still has to fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinnedDownload {
    pub package: PackageRef,
    pub version: String,
}

/// What one command needs from the host.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Architectures dpkg must know (the native one always counts as known).
    pub architectures: BTreeSet<String>,
    /// Packages that must be installed.
    pub install: Vec<PackageRef>,
    /// Pinned versions apt must be able to download.
    pub download: Vec<PinnedDownload>,
}

/// What dpkg knows.
#[derive(Debug, Clone)]
pub struct Dpkg {
    pub native: String,
    pub foreign: BTreeSet<String>,
    /// Packages in the installed state.
    pub installed: BTreeSet<PackageRef>,
}

impl Dpkg {
    fn knows(&self, arch: &str) -> bool {
        arch == self.native || self.foreign.contains(arch)
    }
}

/// `dpkg-query -W -f '${binary:Package}\t${db:Status-Abbrev}\n'`: the installed packages.
/// The status is desired action, state and error flag (`ii `, `rc `, `iU `, `iiR`); a package
/// counts when its state is `i` (installed) and it is not marked as needing reinstallation.
pub fn parse_dpkg_query(text: &str, native: &str) -> BTreeSet<PackageRef> {
    text.lines()
        .filter_map(|line| {
            let (package, status) = line.split_once('\t')?;
            let status: Vec<char> = status.chars().collect();
            let installed = status.get(1) == Some(&'i') && status.get(2) != Some(&'R');
            installed.then(|| PackageRef::parse(package.trim(), native))
        })
        .collect()
}

/// `dpkg --print-foreign-architectures`.
pub fn parse_architectures(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// What apt knows about one package (one stanza of `apt-cache policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The version `apt-get install` would pick; `None` when apt prints `(none)`.
    pub candidate: Option<String>,
    /// Versions some package list offers (so `apt-get download` can fetch them); versions
    /// only in `/var/lib/dpkg/status` (installed, but from no list) are not here.
    pub downloadable: BTreeSet<String>,
}

/// What apt knows, from one `apt-cache policy pkg[:arch]...` call. A package apt has never
/// heard of gets no stanza at all.
#[derive(Debug, Clone, Default)]
pub struct Apt {
    packages: BTreeMap<PackageRef, Policy>,
}

impl Apt {
    /// The stanza for `package`. apt heads an `Architecture: all` package's stanza with its bare
    /// name even when asked for `name:arch`, which parses as the native architecture: that
    /// stanza answers for any architecture.
    fn get(&self, package: &PackageRef, native: &str) -> Option<&Policy> {
        self.packages.get(package).or_else(|| self.packages.get(&PackageRef::new(&package.name, native)))
    }
}

/// Parses `apt-cache policy` output:
///
/// ```text
/// grub-efi-arm64-bin:arm64:
///   Installed: (none)
///   Candidate: 2.06-13+deb12u2
///   Version table:
///      2.06-13+deb12u2 500
///         500 http://deb.debian.org/debian bookworm/main arm64 Packages
///  *** 2.06-13+deb12u1 100
///         100 /var/lib/dpkg/status
/// ```
///
/// apt indents a version by five columns (` *** ` marks the installed one) and each of its
/// sources by eight.
pub fn parse_policy(text: &str, native: &str) -> Apt {
    let mut packages = BTreeMap::new();
    let mut current: Option<(PackageRef, Policy)> = None;
    // Inside the version table: the version whose sources follow.
    let mut table: Option<Option<String>> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            if let Some((package, policy)) = current.take() {
                packages.insert(package, policy);
            }
            let header = line.trim_end().trim_end_matches(':');
            current = Some((PackageRef::parse(header, native), Policy::default()));
            table = None;
            continue;
        }
        let Some((_, policy)) = current.as_mut() else { continue };
        let trimmed = line.trim();
        match &mut table {
            None if trimmed == "Version table:" => table = Some(None),
            None => {
                if let Some(candidate) = trimmed.strip_prefix("Candidate:").map(str::trim) {
                    policy.candidate = (candidate != "(none)" && !candidate.is_empty()).then(|| candidate.to_owned());
                }
            }
            Some(version) if line.starts_with("        ") => {
                // A source of the version above: a package list, or dpkg's status file.
                let source = trimmed.split_whitespace().nth(1);
                if let (Some(v), Some(source)) = (version.as_ref(), source) {
                    if source != "/var/lib/dpkg/status" {
                        policy.downloadable.insert(v.clone());
                    }
                }
            }
            Some(version) => *version = trimmed.trim_start_matches("***").split_whitespace().next().map(str::to_owned),
        }
    }
    if let Some((package, policy)) = current {
        packages.insert(package, policy);
    }
    Apt { packages }
}

/// The packages to ask `apt-cache policy` about: those not installed and the pinned downloads.
/// Empty when everything is installed and cached, so a ready host never loads apt's cache.
pub fn apt_questions(needs: &Needs, dpkg: &Dpkg) -> Vec<String> {
    let missing = needs.install.iter().filter(|p| !dpkg.installed.contains(p));
    let pinned = needs.download.iter().map(|d| &d.package);
    let specs: BTreeSet<String> = missing.chain(pinned).map(|p| format!("{}:{}", p.name, p.arch)).collect();
    specs.into_iter().collect()
}

/// One thing the host lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// dpkg does not know this architecture.
    Architecture(String),
    /// Not installed; `candidate` says whether apt could install it as its lists stand.
    NotInstalled { package: PackageRef, candidate: bool },
    /// No package list offers this pinned version.
    PinUnknown(PinnedDownload),
}

/// Everything the host lacks for `needs`, in the order the steps fix it.
pub fn unmet(needs: &Needs, dpkg: &Dpkg, apt: &Apt) -> Vec<Unmet> {
    let mut unmet: Vec<Unmet> = needs
        .architectures
        .iter()
        .filter(|arch| !dpkg.knows(arch))
        .map(|arch| Unmet::Architecture(arch.clone()))
        .collect();
    let install: BTreeSet<&PackageRef> = needs.install.iter().collect();
    for package in install {
        if !dpkg.installed.contains(package) {
            let candidate = apt.get(package, &dpkg.native).is_some_and(|p| p.candidate.is_some());
            unmet.push(Unmet::NotInstalled { package: package.clone(), candidate });
        }
    }
    let download: BTreeSet<&PinnedDownload> = needs.download.iter().collect();
    for pin in download {
        if !apt.get(&pin.package, &dpkg.native).is_some_and(|p| p.downloadable.contains(&pin.version)) {
            unmet.push(Unmet::PinUnknown(pin.clone()));
        }
    }
    unmet
}

/// One command that prepares the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddArchitecture(String),
    Update,
    /// Package specs as apt-get takes them (`name`, or `name:arch` when foreign).
    Install(Vec<String>),
}

impl Step {
    /// The command line, run as is (and printed as is for whoever has to run it as root).
    pub fn argv(&self) -> Vec<String> {
        let words: Vec<&str> = match self {
            Step::AddArchitecture(arch) => vec!["dpkg", "--add-architecture", arch],
            Step::Update => vec!["apt-get", "update"],
            Step::Install(specs) => {
                let mut words = vec!["apt-get", "install", "--no-install-recommends", "-y"];
                words.extend(specs.iter().map(String::as_str));
                words
            }
        };
        words.into_iter().map(str::to_owned).collect()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// The steps that fix `unmet`, in order: new architectures, then `apt-get update` when an
/// architecture was added (its lists are not there yet) or apt lacks a package or a pinned
/// version (the lists may be stale or missing), then one `apt-get install` of everything not
/// installed.
pub fn plan(unmet: &[Unmet], native: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = unmet
        .iter()
        .filter_map(|u| match u {
            Unmet::Architecture(arch) => Some(Step::AddArchitecture(arch.clone())),
            _ => None,
        })
        .collect();
    let update = unmet.iter().any(|u| match u {
        Unmet::Architecture(_) | Unmet::PinUnknown(_) => true,
        Unmet::NotInstalled { candidate, .. } => !candidate,
    });
    if update {
        steps.push(Step::Update);
    }
    let install: Vec<String> = unmet
        .iter()
        .filter_map(|u| match u {
            Unmet::NotInstalled { package, .. } => Some(package.spec(native)),
            _ => None,
        })
        .collect();
    if !install.is_empty() {
        steps.push(Step::Install(install));
    }
    steps
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
