//! MAC addresses and vendor prefixes (OUIs): parsing the spellings operators and firmware use,
//! and formatting them the way pxelinux, GRUB and iPXE expect.
//!
//! Pure: no I/O.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC or OUI string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl MacAddr {
    /// Parses `52:54:00:12:34:56`, `52-54-00-12-34-56` or `525400123456` (any case).
    pub fn parse(s: &str) -> Result<Self, BadMac> {
        let bytes = parse_hex_groups(s, 6).ok_or_else(|| BadMac(s.to_string()))?;
        let mut out = [0u8; 6];
        out.copy_from_slice(&bytes);
        Ok(MacAddr(out))
    }

    /// `52-54-00-12-34-56`, the spelling inside pxelinux (`01-…`) and GRUB (`grub.cfg-01-…`) paths.
    pub fn dashed(&self) -> String {
        self.join('-')
    }

    /// `525400123456`, safe in file names and URLs.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn oui(&self) -> Oui {
        Oui([self.0[0], self.0[1], self.0[2]])
    }

    fn join(&self, sep: char) -> String {
        let mut s = String::with_capacity(17);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(sep);
            }
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(':'))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Any spelling `parse` takes (the install log keys machines by their colon spelling).
impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        MacAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        MacAddr::parse(s)
    }
}

/// The first three bytes of a MAC: the vendor's organisationally unique identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Oui(pub [u8; 3]);

impl Oui {
    pub fn parse(s: &str) -> Result<Self, BadMac> {
        let bytes = parse_hex_groups(s, 3).ok_or_else(|| BadMac(s.to_string()))?;
        Ok(Oui([bytes[0], bytes[1], bytes[2]]))
    }
}

impl serde::Serialize for Oui {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Oui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}:{:02x}", self.0[0], self.0[1], self.0[2])
    }
}

/// Accepts `n` hex pairs separated all by `:` or all by `-`, or written together.
fn parse_hex_groups(s: &str, n: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    let groups: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else if s.len() == 2 * n && s.is_ascii() {
        // ASCII only: cutting at every second byte must not fall inside a character.
        (0..n).map(|i| &s[2 * i..2 * i + 2]).collect()
    } else {
        return None;
    };
    if groups.len() != n {
        return None;
    }
    groups
        .iter()
        .map(|g| {
            if g.len() == 2 && g.bytes().all(|c| c.is_ascii_hexdigit()) {
                u8::from_str_radix(g, 16).ok()
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        let want = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0xab]);
        for s in ["52:54:00:12:34:ab", "52-54-00-12-34-AB", "52540012 34ab".replace(' ', "").as_str()] {
            assert_eq!(MacAddr::parse(s).unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:12:34:ab");
        assert_eq!(want.dashed(), "52-54-00-12-34-ab");
        assert_eq!(want.hex(), "5254001234ab");
        assert_eq!(want.oui(), Oui::parse("52:54:00").unwrap());
    }

    #[test]
    fn refuses_malformed() {
        for s in
            ["", "52:54:00:12:34", "52:54:00:12:34:5g", "52:54-00:12:34:56", "5:54:00:12:34:56", "52:54:00:12:34:56:78"]
        {
            assert!(MacAddr::parse(s).is_err(), "{s}");
        }
        // Twelve bytes that are not twelve characters (found by the HTTP fuzz target through a
        // percent-encoded `mac=`): refused, where slicing them by bytes used to panic.
        for s in ["a\u{e9}bcdefghij", "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}", "\u{20ac}\u{20ac}\u{20ac}\u{20ac}"] {
            assert_eq!(s.len(), 12);
            assert!(MacAddr::parse(s).is_err(), "{s}");
        }
        assert!(Oui::parse("\u{e9}\u{e9}\u{e9}").is_err());
        assert!(Oui::parse("52:54").is_err());
        assert!(Oui::parse("b8:27:eb").is_ok());
    }
}
