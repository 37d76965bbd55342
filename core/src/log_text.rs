//! Client-supplied text as it may appear in a log line: every byte a client chose (a TFTP file
//! name, an HTTP method, path or header, a DHCP vendor class or host name) is escaped and cut
//! to a bounded length before it is logged, so a client can neither forge log lines (a newline,
//! an ANSI escape sequence) nor make one line megabytes long.
//!
//! Escaping: printable ASCII other than `\` stays as it is; `\` becomes `\\`; `\n`, `\r`, `\t`
//! become `\n`, `\r`, `\t`; any other control character or DEL, and every byte that is not
//! part of valid UTF-8, becomes `\xNN`; printable non-ASCII characters stay, except Unicode
//! format and bidi controls (which can reorder what a terminal shows), which become `\u{NNNN}`.
//! A text longer than the bound keeps its first bytes and says how many it had:
//! `…[+1234 bytes]`. The output is never longer than the bound plus that marker, and every
//! character in it is printable.

use std::fmt;

/// The longest stretch of client text (in input bytes) one log field shows by default: long
/// enough for any real boot path, header or vendor class.
pub const DEFAULT_MAX: usize = 256;

/// Client bytes shown escaped and bounded; [`fmt::Display`] writes them.
#[derive(Clone, Copy)]
pub struct Escaped<'a> {
    bytes: &'a [u8],
    max: usize,
}

/// `text` as a log field, bounded at [`DEFAULT_MAX`] bytes.
pub fn escaped(text: &(impl AsRef<[u8]> + ?Sized)) -> Escaped<'_> {
    Escaped { bytes: text.as_ref(), max: DEFAULT_MAX }
}

impl<'a> Escaped<'a> {
    /// The same text, bounded at `max` input bytes.
    pub fn max(self, max: usize) -> Escaped<'a> {
        Escaped { max, ..self }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.bytes[..self.bytes.len().min(self.max)];
        for chunk in shown.utf8_chunks() {
            for c in chunk.valid().chars() {
                write_char(f, c)?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.bytes.len() > shown.len() {
            write!(f, "…[+{} bytes]", self.bytes.len() - shown.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn write_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        ' '..='~' => write!(f, "{c}"),
        c if (c as u32) < 0x100 && c.is_control() => write!(f, "\\x{:02x}", c as u32),
        c if c.is_control() || is_format_control(c) => write!(f, "\\u{{{:04x}}}", c as u32),
        c => write!(f, "{c}"),
    }
}

/// Unicode format characters a terminal or log viewer may act on: bidi embeddings, overrides
/// and isolates, zero-width characters, the line and paragraph separators, the BOM.
fn is_format_control(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        escaped(b).to_string()
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(esc(b"pxelinux.cfg/01-52-54-00-12-34-56"), "pxelinux.cfg/01-52-54-00-12-34-56");
        assert_eq!(esc("grüße".as_bytes()), "grüße");
    }

    #[test]
    fn line_breaks_escapes_and_backslashes_cannot_forge_a_line() {
        let forged = b"a\n2026-01-01T00:00:00Z  INFO forged\r\x1b[2J\\x41\t\x7f\x00";
        let out = esc(forged);
        assert_eq!(out, "a\\n2026-01-01T00:00:00Z  INFO forged\\r\\x1b[2J\\\\x41\\t\\x7f\\x00");
        assert!(!out.chars().any(char::is_control), "{out}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(esc(b"ok\xff\xfe.cfg"), "ok\\xff\\xfe.cfg");
        assert_eq!(esc(b"\xc3"), "\\xc3");
    }

    #[test]
    fn bidi_and_zero_width_controls_are_escaped() {
        assert_eq!(esc("a\u{202e}b\u{200b}c\u{85}".as_bytes()), "a\\u{202e}b\\u{200b}c\\x85");
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_was_left_out() {
        let name = vec![b'a'; 65_000];
        let out = esc(&name);
        assert_eq!(out.len(), DEFAULT_MAX + "…[+64744 bytes]".len());
        assert!(out.ends_with("…[+64744 bytes]"), "{}", &out[DEFAULT_MAX..]);
        assert_eq!(escaped(b"abcdef").max(3).to_string(), "abc…[+3 bytes]");
        // A cut through a multi-byte character shows the stray byte, nothing invalid.
        assert_eq!(escaped("aé".as_bytes()).max(2).to_string(), "a\\xc3…[+1 bytes]");
    }
}
