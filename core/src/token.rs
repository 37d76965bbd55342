//! Per-machine tokens: what an installer presents when it reports an event for its machine.
//!
//! A machine's token is HMAC-SHA256 of its MAC, spelled lowercase with colons
//! (`52:54:00:12:34:56`), under a secret only the daemon knows, in hex. The daemon renders it
//! into that machine's command line and answer files (`machine.token`) and checks it on
//! `POST /events/<mac>`: an installer can only speak for the machine it was booted as, and
//! the daemon keeps no table of issued tokens (the secret alone recomputes any of them).
//!
//! Pure: the secret's bytes arrive from the caller (the daemon creates it once in its state
//! directory). `check` and `render` have no state directory; they render with
//! [`TokenKey::check_only`], a fixed key whose tokens no daemon accepts unless an operator
//! gave it that very secret.

use crate::mac::MacAddr;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of secret the daemon creates (256 bits, the size of the HMAC's hash).
pub const SECRET_BYTES: usize = 32;

/// The key tokens are computed under. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(Arc<[u8]>);

impl TokenKey {
    /// A key from the daemon's secret.
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(secret.into())
    }

    /// The key `check`, `render` and `explain` without a state directory render with: the
    /// templates see a token of the right form, and nothing secret is involved.
    pub fn check_only() -> TokenKey {
        TokenKey::new(b"appliance check-only key: never a daemon's secret")
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    /// The token of `mac`: 64 lowercase hex digits.
    pub fn token(&self, mac: MacAddr) -> String {
        let mut m = self.mac();
        m.update(mac.to_string().as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether `presented` is `mac`'s token (hex in either case), compared in constant time.
    pub fn verify(&self, mac: MacAddr, presented: &str) -> bool {
        let Ok(bytes) = hex::decode(presented.trim()) else { return false };
        let mut m = self.mac();
        m.update(mac.to_string().as_bytes());
        m.verify_slice(&bytes).is_ok()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        MacAddr::parse(s).unwrap()
    }

    #[test]
    fn the_token_is_the_hmac_of_the_colon_mac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let m = HmacSha256::new_from_slice(b"Jefe").unwrap().chain_update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = TokenKey::new(b"Jefe");
        let want = HmacSha256::new_from_slice(b"Jefe").unwrap().chain_update(b"52:54:00:ab:cd:ef");
        // Any spelling of the MAC gives the token of its canonical form.
        assert_eq!(key.token(mac("52-54-00-AB-CD-EF")), hex::encode(want.finalize().into_bytes()));
        assert_eq!(key.token(mac("525400abcdef")).len(), 64);
    }

    #[test]
    fn only_the_machines_own_token_under_the_same_key_verifies() {
        let key = TokenKey::new(&[7u8; SECRET_BYTES]);
        let (a, b) = (mac("52:54:00:00:00:01"), mac("52:54:00:00:00:02"));
        let token = key.token(a);
        assert!(key.verify(a, &token));
        assert!(key.verify(a, &token.to_uppercase()), "hex in either case");
        assert!(!key.verify(b, &token), "another machine's token");
        assert!(!TokenKey::new(&[8u8; SECRET_BYTES]).verify(a, &token), "another daemon's token");
        assert!(!TokenKey::check_only().verify(a, &token));
        for bad in ["", "zz", &token[..62], &format!("{token}00")] {
            assert!(!key.verify(a, bad), "{bad:?}");
        }
    }

    #[test]
    fn the_key_is_never_shown() {
        assert_eq!(format!("{:?}", TokenKey::new(b"secret")), "TokenKey(..)");
    }
}
