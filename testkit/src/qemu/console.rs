//! Reading what a VM said on its serial console: terminal control sequences removed, the
//! boot payload's marker, and the texts that mean a run cannot succeed (KVM's emulation
//! failure).

/// The boot payload's `/init` prints `APPLIANCE-BOOT-OK <kernel command line>`.
pub const MARKER: &str = "APPLIANCE-BOOT-OK";

/// What x86 guests die with under the build machines' broken nested KVM
/// (docs/firmware.md#kvm-and-tcg).
pub const KVM_ERRORS: &[&str] = &["KVM internal error", "emulation failure"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The whole command line after the marker.
    pub cmdline: String,
}

impl Marker {
    /// The value of `key=` on the command line (`appliance.profile`, …).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.cmdline.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// The first complete marker line (ended by a newline, so the command line is whole).
pub fn find_marker(console: &str) -> Option<Marker> {
    let start = console.find(MARKER)?;
    let rest = &console[start + MARKER.len()..];
    let end = rest.find('\n')?;
    Some(Marker { cmdline: rest[..end].trim().to_string() })
}

/// The KVM failure `text` reports, if any.
pub fn kvm_error(text: &str) -> Option<&'static str> {
    KVM_ERRORS.iter().copied().find(|e| text.contains(e))
}

/// Console text without ANSI escape sequences and other control characters; a carriage
/// return becomes a newline (firmware consoles redraw lines with them), tabs stay.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters and intermediates, then a final byte in @..~; other
                // escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => out.push('\n'),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_found_only_when_complete() {
        let console = "Linux version 6.1\nAPPLIANCE-BOOT-OK console=ttyS0 appliance.profile=tiny-live \
                       appliance.arch=x86_64 appliance.version=2e2aa789f925\r\nreboot: Power down\n";
        let m = find_marker(console).unwrap();
        assert_eq!(m.param("appliance.profile"), Some("tiny-live"));
        assert_eq!(m.param("appliance.arch"), Some("x86_64"));
        assert_eq!(m.param("appliance.version"), Some("2e2aa789f925"));
        assert_eq!(m.param("appliance"), None);
        assert_eq!(find_marker("APPLIANCE-BOOT-OK console=ttyS0 appliance.prof"), None);
    }

    #[test]
    fn control_sequences_are_removed() {
        assert_eq!(clean("a\r\n\u{1b}[2J\u{1b}[01;01Hb\u{1b}7\u{7}\tc\n"), "a\n\nb\tc\n");
    }

    #[test]
    fn tails_are_readable() {
        let t = crate::procs::tail("a\r\n\u{1b}[2J\u{1b}[01;01Hb\nc\n", 2);
        assert_eq!(t, "    | b\n    | c\n");
    }

    #[test]
    fn kvm_failures_are_recognised() {
        assert_eq!(kvm_error("KVM internal error. Suberror: 1\nemulation failure"), Some("KVM internal error"));
        assert_eq!(kvm_error("qemu-system-x86_64: terminating on signal 15"), None);
    }
}
