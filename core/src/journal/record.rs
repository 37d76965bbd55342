//! One journal record: something a machine did (a DHCP exchange, a TFTP transfer, an HTTP
//! request, an answer-file fetch, an installer event) or an operator did to it (a re-arm), with
//! the decision and the rule that decided, and how it ended.
//!
//! Records are what the daemon's journal file holds, one JSON object per line, so every type
//! here serialises and deserialises; strings stand for the core's richer types (a `Rule`, a
//! `Firmware`) so that an old line still reads after those types grow.

use crate::decide::{Decision, Outcome};
use crate::events::EventKind;
use crate::mac::MacAddr;
use crate::tftp;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::Ipv4Addr;

/// One record. `at` is Unix milliseconds; `mac` is `None` when the request could not be tied to
/// a machine (a TFTP request from an address no lease, DHCP or neighbour entry names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Dhcp(Dhcp),
    Tftp(Tftp),
    Http(Http),
    Answer(Answer),
    Installer(Installer),
    Rearm(Rearm),
}

/// What `decide` said, in words: the outcome, the machine as the catalog names it, and the
/// two rules (architecture, target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// `DHCP`, `iPXE script`, `pxelinux.cfg`, `grub.cfg`. Words that are the same in every
    /// record are borrowed, not allocated: a record is made for every request, and its
    /// allocations (freed on the journal's writer thread) were a third of its cost.
    pub stage: Cow<'static, str>,
    /// What was handed out, as `explain` says it ("profile live version 0123…", "ignore (…)").
    pub outcome: String,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Cow<'static, str>>,
    pub arch_rule: String,
    pub target_rule: String,
    /// Why the machine was not served, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl Decided {
    pub fn new(d: &Decision) -> Decided {
        let (profile, version) = match &d.outcome {
            Outcome::Boot { profile, version } => (Some(profile.clone()), Some(version.clone())),
            _ => (None, None),
        };
        let ignored = match &d.outcome {
            Outcome::Ignore { reason } => Some(reason.to_string()),
            _ => None,
        };
        Decided {
            stage: Cow::Borrowed(d.stage.as_str()),
            outcome: outcome_words(&d.outcome),
            hostname: d.machine.hostname.clone(),
            profile,
            version,
            arch: d.arch.map(|a| Cow::Borrowed(a.as_str())),
            arch_rule: d.arch_rule.to_string(),
            target_rule: d.target_rule.to_string(),
            ignored,
        }
    }
}

fn outcome_words(o: &Outcome) -> String {
    match o {
        Outcome::Ignore { reason } => format!("ignore ({reason})"),
        Outcome::BootFile { file, transport } => {
            format!(
                "boot file {} by {}",
                file.file_name(),
                if *transport == crate::decide::Transport::Http { "HTTP" } else { "TFTP" }
            )
        }
        Outcome::BootImage { shim } => format!("boot image with {} (Secure Boot, HTTP Boot)", shim.file_name()),
        Outcome::IpxeScript => "iPXE script".into(),
        Outcome::Boot { profile, version } => format!("profile {profile} version {version}"),
        Outcome::Menu { menu } => format!("menu {menu}"),
        Outcome::Local => "boot from local disk".into(),
    }
}

/// A DHCP request and what we answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dhcp {
    /// DISCOVER, REQUEST, INFORM, … (fixed words are borrowed: see [`Decided::stage`]).
    pub request: Cow<'static, str>,
    /// OFFER, ACK, NAK; `None`: no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Cow<'static, str>>,
    /// server, proxy or off.
    pub mode: Cow<'static, str>,
    /// 67 or 4011.
    pub port: u16,
    pub firmware: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_arch: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_class: Option<String>,
    /// The address handed out (`yiaddr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The boot file or URL in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decided>,
    /// Why nothing or less than usual was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A DHCP message type as records spell it (DISCOVER, OFFER, …).
pub fn message_words(kind: dhcproto::v4::MessageType) -> Cow<'static, str> {
    use dhcproto::v4::MessageType as M;
    Cow::Borrowed(match kind {
        M::Discover => "DISCOVER",
        M::Offer => "OFFER",
        M::Request => "REQUEST",
        M::Decline => "DECLINE",
        M::Ack => "ACK",
        M::Nak => "NAK",
        M::Release => "RELEASE",
        M::Inform => "INFORM",
        other => return Cow::Owned(format!("{other:?}").to_ascii_uppercase()),
    })
}

/// How a TFTP transfer ended, from the transfer machine's `Outcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum TftpEnd {
    Complete,
    /// EDK2 asked for the size only (tsize, then ERROR 8): normal before every download.
    SizeProbe,
    NotFound,
    Refused {
        code: u16,
        message: String,
    },
    ClientError {
        code: u16,
        message: String,
    },
    /// The client stopped acknowledging: `block` (0: the OACK) was sent `sends` times.
    TimedOut {
        block: u64,
        sends: u32,
    },
    Failed {
        message: String,
    },
    Shutdown,
    /// Ended to make room for another request after stalling (fair shares).
    Evicted,
}

impl TftpEnd {
    pub fn new(o: &tftp::Outcome) -> TftpEnd {
        match o {
            tftp::Outcome::Complete => TftpEnd::Complete,
            tftp::Outcome::SizeProbe { .. } => TftpEnd::SizeProbe,
            tftp::Outcome::ClientError { code, message } => {
                TftpEnd::ClientError { code: *code, message: message.clone() }
            }
            tftp::Outcome::TimedOut { block, sends } => TftpEnd::TimedOut { block: *block, sends: *sends },
            tftp::Outcome::Refused(e) if e.code == tftp::TftpError::FILE_NOT_FOUND => TftpEnd::NotFound,
            tftp::Outcome::Refused(e) => TftpEnd::Refused { code: e.code, message: e.message.clone() },
            tftp::Outcome::Failed(m) => TftpEnd::Failed { message: m.clone() },
            tftp::Outcome::Shutdown => TftpEnd::Shutdown,
            tftp::Outcome::Evicted => TftpEnd::Evicted,
        }
    }

    /// The sentence an operator reads.
    pub fn words(&self) -> String {
        match self {
            TftpEnd::Complete => "complete".into(),
            TftpEnd::SizeProbe => "EDK2 size probe (tsize asked, then error 8; the real download follows)".into(),
            TftpEnd::NotFound => "not found".into(),
            TftpEnd::Refused { code, message } => format!("refused (error {code}: {message})"),
            TftpEnd::ClientError { code, message } => format!("client aborted with error {code} ({message})"),
            TftpEnd::TimedOut { block: 0, sends } => {
                format!("client never acknowledged the option reply (sent {sends} times)")
            }
            TftpEnd::TimedOut { block, sends } => {
                format!("client stopped acknowledging at block {block} (sent {sends} times)")
            }
            TftpEnd::Failed { message } => format!("server error: {message}"),
            TftpEnd::Shutdown => "cut off by the server's shutdown".into(),
            TftpEnd::Evicted => "ended to make room for another request after stalling (fair shares)".into(),
        }
    }

    /// The short label metrics use.
    pub fn label(&self) -> &'static str {
        match self {
            TftpEnd::Complete => "complete",
            TftpEnd::SizeProbe => "size_probe",
            TftpEnd::NotFound => "not_found",
            TftpEnd::Refused { .. } => "refused",
            TftpEnd::ClientError { .. } => "client_error",
            TftpEnd::TimedOut { .. } => "timed_out",
            TftpEnd::Failed { .. } => "failed",
            TftpEnd::Shutdown => "shutdown",
            TftpEnd::Evicted => "evicted",
        }
    }
}

/// One TFTP transfer (or a refused request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tftp {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Bytes the client acknowledged.
    pub bytes: u64,
    pub blksize: u16,
    pub windowsize: u16,
    pub retransmits: u64,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub end: TftpEnd,
    /// For rendered configs and (with `--dhcp off`) boot programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decided>,
}

/// One HTTP request on the boot port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    /// GET, HEAD, POST: borrowed for the methods the routes serve (see [`Decided::stage`]).
    pub method: Cow<'static, str>,
    pub path: String,
    pub status: u16,
    /// Body bytes sent, and how many the response announced.
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decided>,
    /// What the request did, where the route says more than the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An answer file fetched by an installer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub name: String,
    pub status: u16,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decided>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An installer's report on `POST /events/<mac>`, or a refused one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installer {
    /// `None` when the report was refused before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The operator re-armed the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rearm {
    /// Who: `appliance rearm`, the admin API, a changed config entry.
    pub by: String,
    pub was_installed: bool,
}

/// Where in its boot a record puts a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Dhcp,
    /// iPXE, GRUB, U-Boot's script: the program the firmware loads.
    BootProgram,
    /// pxelinux.cfg, grub.cfg, the iPXE script.
    Config,
    /// Kernel, initrds, device tree.
    Artifact,
    Answer,
    Installer,
    Rearm,
    Other,
}

/// How a record bears on "why didn't it boot?".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    /// Expected on the way (a U-Boot path probe answered "not found", EDK2's size probe).
    Note,
    Error,
}

impl Record {
    /// The step of the boot this record is.
    pub fn step(&self) -> Step {
        match &self.event {
            Event::Dhcp(_) => Step::Dhcp,
            Event::Tftp(t) => path_step(&t.path),
            Event::Http(h) => path_step(&h.path),
            Event::Answer(_) => Step::Answer,
            Event::Installer(_) => Step::Installer,
            Event::Rearm(_) => Step::Rearm,
        }
    }

    /// One line saying what happened, for the timeline and the "last stage" column.
    pub fn what(&self) -> String {
        match &self.event {
            Event::Dhcp(d) => {
                let reply = d.reply.as_deref().unwrap_or("no reply");
                let mut s = format!("DHCP {} -> {reply}", d.request);
                if let Some(a) = d.address {
                    s.push_str(&format!(" {a}"));
                }
                if let Some(b) = &d.boot {
                    s.push_str(&format!(", boot {b}"));
                }
                s
            }
            Event::Tftp(t) => format!("TFTP {}", t.path),
            Event::Http(h) => format!("HTTP {} {}", h.method, h.path),
            Event::Answer(a) => format!("answer file {}", a.name),
            Event::Installer(i) => match i.event {
                Some(k) => format!("installer: {k}"),
                None => "installer report".into(),
            },
            Event::Rearm(r) => format!("re-armed ({})", r.by),
        }
    }

    /// How it ended, in words.
    pub fn result(&self) -> String {
        match &self.event {
            Event::Dhcp(d) => match (&d.decision, &d.note) {
                (Some(dec), _) => dec.outcome.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => "-".into(),
            },
            Event::Tftp(t) => {
                let mut s = t.end.words();
                if t.end == TftpEnd::Complete || matches!(t.end, TftpEnd::TimedOut { .. } | TftpEnd::ClientError { .. })
                {
                    s.push_str(&format!(
                        ", {} bytes in {} ms, blksize {}, windowsize {}, {} retransmitted",
                        t.bytes, t.duration_ms, t.blksize, t.windowsize, t.retransmits
                    ));
                }
                s
            }
            Event::Http(h) => {
                let mut s = format!("{} {}", h.status, status_words(h.status));
                match h.length {
                    Some(len) if h.bytes < len => {
                        s.push_str(&format!(", client stopped after {} of {len} bytes", h.bytes))
                    }
                    _ => s.push_str(&format!(", {} bytes", h.bytes)),
                }
                s.push_str(&format!(" in {} ms", h.duration_ms));
                if let Some(n) = &h.note {
                    s.push_str(&format!(" ({n})"));
                }
                s
            }
            Event::Answer(a) => {
                let mut s = format!("{} {}", a.status, status_words(a.status));
                if let Some(n) = &a.note {
                    s.push_str(&format!(" ({n})"));
                }
                s
            }
            Event::Installer(i) => {
                let mut s = match &i.message {
                    Some(m) => format!("{m:?}"),
                    None => String::new(),
                };
                if i.status != 200 {
                    let n = i.note.as_deref().unwrap_or(status_words(i.status));
                    s = format!("{s}{}refused: {} {n}", if s.is_empty() { "" } else { "; " }, i.status);
                }
                if s.is_empty() {
                    s = "recorded".into();
                }
                s
            }
            Event::Rearm(r) => if r.was_installed {
                "its next netboot follows its target again"
            } else {
                "it had not reported installed"
            }
            .into(),
        }
    }

    /// The decision the record carries, if any.
    pub fn decision(&self) -> Option<&Decided> {
        match &self.event {
            Event::Dhcp(d) => d.decision.as_ref(),
            Event::Tftp(t) => t.decision.as_ref(),
            Event::Http(h) => h.decision.as_ref(),
            Event::Answer(a) => a.decision.as_ref(),
            Event::Installer(_) | Event::Rearm(_) => None,
        }
    }

    pub fn severity(&self) -> Severity {
        match &self.event {
            Event::Dhcp(d) => match d.decision.as_ref().and_then(|x| x.ignored.as_ref()) {
                // A plain OS renewing its lease, or GRUB: not a boot that failed.
                Some(_) if d.firmware == "unknown" || d.firmware == "grub" => Severity::Ok,
                Some(_) => Severity::Error,
                None => Severity::Ok,
            },
            Event::Tftp(t) => match &t.end {
                TftpEnd::Complete => Severity::Ok,
                TftpEnd::SizeProbe | TftpEnd::Shutdown => Severity::Note,
                // U-Boot and GRUB walk a list of names; only a file we hand out must exist.
                TftpEnd::NotFound if matches!(path_step(&t.path), Step::Config | Step::Other) => Severity::Note,
                _ => Severity::Error,
            },
            Event::Http(h) => match (h.status, h.length) {
                (500.., _) => Severity::Error,
                (400.., _) => Severity::Error,
                (_, Some(len)) if h.bytes < len && h.method != "HEAD" => Severity::Error,
                _ => Severity::Ok,
            },
            Event::Answer(a) if a.status >= 400 => Severity::Error,
            Event::Answer(_) => Severity::Ok,
            Event::Installer(i) if i.status >= 400 || i.event == Some(EventKind::Failed) => Severity::Error,
            Event::Installer(_) | Event::Rearm(_) => Severity::Ok,
        }
    }

    /// `(profile, version)` this record names: its decision's, or the artifact path's.
    pub fn profile_version(&self) -> Option<(String, String)> {
        if let Some(d) = self.decision() {
            if let (Some(p), Some(v)) = (&d.profile, &d.version) {
                return Some((p.clone(), v.clone()));
            }
        }
        let path = match &self.event {
            Event::Tftp(t) => &t.path,
            Event::Http(h) => &h.path,
            _ => return None,
        };
        match crate::client::classify_tftp(path.trim_start_matches('/')) {
            crate::client::TftpRequest::Artifact { profile, version, .. } => Some((profile, version)),
            _ => None,
        }
    }
}

fn path_step(path: &str) -> Step {
    use crate::client::{classify_tftp, TftpRequest};
    let p = path.trim_start_matches('/');
    if p == "ipxe/script" || p == "boot.ipxe" {
        return Step::Config;
    }
    match classify_tftp(p) {
        TftpRequest::Pxelinux(_) | TftpRequest::GrubConfig(_) | TftpRequest::GrubAux { .. } => Step::Config,
        TftpRequest::IpxeEntry => Step::Config,
        TftpRequest::UbootScript => Step::BootProgram,
        TftpRequest::Artifact { .. } => Step::Artifact,
        TftpRequest::Other(name) => match crate::boot_file::BootFile::from_file_name(&name) {
            Some(_) => Step::BootProgram,
            None => Step::Other,
        },
    }
}

fn status_words(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "partial content",
        304 => "not modified",
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        413 => "too large",
        416 => "range not satisfiable",
        500 => "internal error",
        503 => "unavailable",
        _ => "",
    }
}
