//! Reading what the VM said: the payload's boot marker on the serial console, and the texts
//! that mean a run cannot succeed (KVM's emulation failure).

/// The payload's `/init` prints `APPLIANCE-BOOT-OK <kernel command line>`.
pub const MARKER: &str = "APPLIANCE-BOOT-OK";

/// What x86 guests die with under this machine's nested KVM (docs/firmware.md#kvm-and-tcg).
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

pub fn kvm_error(text: &str) -> Option<&'static str> {
    KVM_ERRORS.iter().copied().find(|e| text.contains(e))
}

/// The last `n` lines, with terminal control sequences and carriage returns removed (firmware
/// consoles draw with them).
pub fn tail(text: &str, n: usize) -> String {
    let clean = strip_control(text);
    let lines: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| format!("    | {l}\n")).collect()
}

/// Removes ANSI escape sequences and other control characters except newlines and tabs.
pub fn strip_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
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
                       appliance.arch=x86_64 appliance.version=2e2aa789f925\nreboot: Power down\n";
        let m = find_marker(console).unwrap();
        assert_eq!(m.param("appliance.profile"), Some("tiny-live"));
        assert_eq!(m.param("appliance.arch"), Some("x86_64"));
        assert_eq!(m.param("appliance.version"), Some("2e2aa789f925"));
        assert_eq!(m.param("appliance"), None);
        assert_eq!(find_marker("APPLIANCE-BOOT-OK console=ttyS0 appliance.prof"), None);
    }

    #[test]
    fn tails_are_readable() {
        let t = tail("a\r\n\u{1b}[2J\u{1b}[01;01Hb\nc\n", 2);
        assert_eq!(t, "    | b\n    | c\n");
    }
}
