//! Parsers and checks of single values, shared by everything the project reads from YAML: the
//! appliance's config and the image recipes (`xtask`). Each parser's error is a `BadValue`
//! whose text is what an operator reads after the field's position.

use crate::arch::Arch;
use crate::catalog::{Digest, Subnet};
use std::net::Ipv4Addr;

/// A value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("{0:?} is not an IPv4 address")]
    Ipv4(String),
    #[error("{0:?} is not an address with a prefix length like 10.0.0.1/24")]
    Cidr(String),
    #[error("{0:?} is not a subnet like 10.0.0.0/24")]
    Subnet(String),
    #[error("{0:?} is not a hex sha256")]
    Hex(String),
    #[error("{0:?} is not 64 hex digits")]
    Sha256Length(String),
    #[error("unknown architecture {0:?} (expected one of {names})", names = arch_names())]
    Arch(String),
    #[error("{0:?} is not a duration like 30s, 2m, 500ms or 1h (more than 0)")]
    Duration(String),
}

fn arch_names() -> String {
    Arch::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

/// A duration: `500ms`, `30s` (or plain seconds), `2m`, `1h`; never zero.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, BadValue> {
    let bad = || BadValue::Duration(s.to_owned());
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(bad()),
    }
}

/// An IPv4 address in dotted-quad form (surrounding blanks allowed).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, BadValue> {
    s.trim().parse().map_err(|_| BadValue::Ipv4(s.to_string()))
}

/// `ADDRESS/PREFIX` (CIDR notation), the prefix length 0 to 32.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), BadValue> {
    let bad = || BadValue::Cidr(s.to_string());
    let (address, prefix) = s.split_once('/').ok_or_else(bad)?;
    let address = address.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((address, prefix))
}

/// A subnet in CIDR notation, like `10.0.0.0/24`.
pub fn parse_subnet(s: &str) -> Result<Subnet, BadValue> {
    let (network, prefix) = parse_cidr(s).map_err(|_| BadValue::Subnet(s.to_string()))?;
    Ok(Subnet { network, prefix })
}

/// A sha256 digest as 64 hex digits.
pub fn parse_sha256(s: &str) -> Result<Digest, BadValue> {
    let bytes = hex::decode(s.trim()).map_err(|_| BadValue::Hex(s.to_string()))?;
    bytes.try_into().map_err(|_| BadValue::Sha256Length(s.to_string()))
}

/// An architecture by its config name (`x86_64`, `arm64`, …; see `Arch::ALL`).
pub fn parse_arch(s: &str) -> Result<Arch, BadValue> {
    Arch::parse(s).ok_or_else(|| BadValue::Arch(s.to_string()))
}

/// A name that ends up in URLs and file paths (profiles, menus, artifact files, images): 1 to
/// 64 letters, digits, `-`, `_` and `.`, not starting with a dot.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A host name or fully qualified domain name (RFC 1123): at most 253 characters of
/// dot-separated labels, each 1 to 63 letters, digits and inner hyphens.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(
            (ms("500ms"), ms("30s"), ms("30"), ms("2m"), ms("1h")),
            (Ok(500), Ok(30_000), Ok(30_000), Ok(120_000), Ok(3_600_000))
        );
        for bad in ["", "0s", "s", "1d", "-1s", "1.5s", "99999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_and_subnet() {
        assert_eq!(parse_cidr("10.77.0.1/24"), Ok((Ipv4Addr::new(10, 77, 0, 1), 24)));
        assert_eq!(parse_cidr(" 0.0.0.0/0 "), Ok((Ipv4Addr::UNSPECIFIED, 0)));
        for bad in ["10.77.0.1", "10.77.0.1/33", "10.77.0/24", "10.77.0.1/x", "/24"] {
            assert_eq!(parse_cidr(bad), Err(BadValue::Cidr(bad.into())), "{bad}");
        }
        let net = parse_subnet("10.0.0.0/24").unwrap();
        assert!(net.contains(Ipv4Addr::new(10, 0, 0, 200)) && !net.contains(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(
            parse_subnet("10.0.0.0/40").unwrap_err().to_string(),
            "\"10.0.0.0/40\" is not a subnet like 10.0.0.0/24"
        );
    }

    #[test]
    fn sha256_and_arch() {
        assert_eq!(parse_sha256(&"ab".repeat(32)), Ok([0xab; 32]));
        assert_eq!(parse_sha256("xyz"), Err(BadValue::Hex("xyz".into())));
        assert_eq!(parse_sha256("abcd"), Err(BadValue::Sha256Length("abcd".into())));
        assert_eq!(parse_arch("arm64"), Ok(Arch::Arm64));
        assert!(parse_arch("sparc")
            .unwrap_err()
            .to_string()
            .starts_with("unknown architecture \"sparc\" (expected one of x86_64, arm64"));
    }

    #[test]
    fn hostnames_are_fqdns_of_63_character_labels() {
        let label = "a".repeat(63);
        for ok in ["appliance", "node-1", "pxe.lab.example", label.as_str(), &[label.as_str(); 3].join(".")] {
            assert!(valid_hostname(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let too_long = [label.as_str(); 4].join(".") + ".abc";
        for bad in ["", "-x", "x-", "a..b", "a_b", long_label.as_str(), too_long.as_str()] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["tiny-live", "initrd.img", "a_b", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
