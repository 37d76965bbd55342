//! RFC 2347 option negotiation for read requests: blksize (RFC 2348), tsize and timeout
//! (RFC 2349), windowsize (RFC 7440), within the server's [`Limits`].
//!
//! This module owns the decision of what goes into an OACK. It must not do
//! I/O. Unknown or invalid options are ignored (never refused), and an option
//! is only ever acknowledged if the client sent it — in particular tsize,
//! whose unsolicited presence confuses EDK2 firmware.

use std::time::Duration;

/// Largest block size allowed by RFC 2348.
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size allowed by RFC 2348.
pub const MIN_BLKSIZE: u16 = 8;
/// Block size without a blksize option (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// The longest `timeout` option honoured by default: U-Boot asks for 5 s (its own default
/// retransmission timeout); no client we serve asks for more.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server grants a transfer: its retransmission timer and retries, and the largest
/// options it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Retransmission timeout when the client sends no `timeout` option.
    pub timeout: Duration,
    /// Retransmissions without progress before a transfer is abandoned.
    pub max_retries: u32,
    /// Upper bound for a negotiated blksize (clamped to 8..=65464).
    pub max_blksize: u16,
    /// Upper bound for a negotiated windowsize (clamped to >= 1).
    pub max_windowsize: u16,
    /// Longest retransmission timeout a client's `timeout` option may ask for. A longer one is
    /// ignored (not acknowledged, as RFC 2349 allows) and the server's own applies: a client
    /// asking for 255 s and never answering would otherwise hold its transfer for
    /// 255 s x (retries + 1), about 25 minutes.
    pub max_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(1),
            max_retries: 5,
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_timeout: DEFAULT_MAX_TIMEOUT,
        }
    }
}

/// Result of negotiating a read request's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Options to acknowledge, in request order; empty means "send no OACK".
    pub oack: Vec<(&'static str, String)>,
}

fn parse_num(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Absurdly long digit strings saturate instead of failing.
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

/// Negotiates `requested` options for content of `size` bytes.
pub fn negotiate(requested: &[(String, String)], size: u64, limits: &Limits) -> Negotiated {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let max_window = limits.max_windowsize.max(1);
    let mut n = Negotiated { blksize: DEFAULT_BLKSIZE, windowsize: 1, timeout: limits.timeout, oack: Vec::new() };
    let mut seen = [false; 4];
    for (name, value) in requested {
        let (slot, key) = match name.to_ascii_lowercase().as_str() {
            "blksize" => (0, "blksize"),
            "tsize" => (1, "tsize"),
            "timeout" => (2, "timeout"),
            "windowsize" => (3, "windowsize"),
            _ => continue,
        };
        if seen[slot] {
            continue;
        }
        let num = parse_num(value);
        let answer = match (key, num) {
            ("blksize", Some(v)) if v >= u64::from(MIN_BLKSIZE) => {
                n.blksize = v.min(u64::from(max_blksize)) as u16;
                n.blksize.to_string()
            }
            // RRQ carries tsize=0 by convention; answer with the real size
            // whatever the client put there.
            ("tsize", _) => size.to_string(),
            ("timeout", Some(v)) if (1..=255).contains(&v) && Duration::from_secs(v) <= limits.max_timeout => {
                n.timeout = Duration::from_secs(v);
                v.to_string()
            }
            ("windowsize", Some(v)) if v >= 1 => {
                n.windowsize = v.min(u64::from(max_window)) as u16;
                n.windowsize.to_string()
            }
            _ => continue,
        };
        seen[slot] = true;
        n.oack.push((key, answer));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn no_options_no_oack() {
        let n = negotiate(&[], 1000, &Limits::default());
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert!(n.oack.is_empty());
    }

    #[test]
    fn tsize_only_when_asked() {
        let cfg = Limits::default();
        let n = negotiate(&opts(&[("blksize", "1468")]), 42, &cfg);
        assert_eq!(n.oack, vec![("blksize", "1468".to_string())]);
        let n = negotiate(&opts(&[("TSIZE", "0")]), 42, &cfg);
        assert_eq!(n.oack, vec![("tsize", "42".to_string())]);
    }

    #[test]
    fn clamps_and_ignores() {
        let cfg = Limits { max_blksize: 1024, max_windowsize: 8, ..Limits::default() };
        let n = negotiate(
            &opts(&[("blksize", "65464"), ("windowsize", "100"), ("timeout", "3"), ("foo", "bar"), ("blksize", "16")]),
            0,
            &cfg,
        );
        assert_eq!((n.blksize, n.windowsize), (1024, 8));
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.oack,
            vec![("blksize", "1024".to_string()), ("windowsize", "8".to_string()), ("timeout", "3".to_string()),]
        );
        let n = negotiate(&opts(&[("timeout", "10")]), 0, &Limits::default());
        assert_eq!((n.timeout, n.oack.len()), (Duration::from_secs(10), 1), "the bound itself is honoured");
        let n = negotiate(&opts(&[("blksize", "99999999")]), 0, &Limits::default());
        assert_eq!(n.blksize, MAX_BLKSIZE);
        for bad in [
            ("blksize", "7"),
            ("blksize", "x"),
            ("windowsize", "0"),
            ("timeout", "0"),
            ("timeout", "256"),
            ("timeout", "-1"),
            ("timeout", "11"),
            ("timeout", "255"),
        ] {
            let n = negotiate(&opts(&[bad]), 0, &Limits::default());
            assert!(n.oack.is_empty(), "{bad:?}");
            assert_eq!((n.blksize, n.windowsize), (512, 1));
        }
    }
}
