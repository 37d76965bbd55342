//! The versioned artifact store: `<store>/<profile>/<version>/<file>`.
//!
//! A version names one architecture's whole artifact set (kernel, initrds, device tree and
//! command line; see `appliance_core::version`), so a node that was told version N fetches
//! every file of its boot from N, whatever is published meanwhile (the version is explicit in
//! every path).
//!
//! This module owns the layout on disk and its three operations:
//! - `publish` builds every missing version directory from the catalog's sources (the config
//!   directory, the blob cache that `cargo xtask fetch` fills, cpio recipes) and renames it into
//!   place, so a version directory appears whole or not at all and is never modified afterwards;
//! - `open` hands out one file of one version, refusing anything that is not a plain name and
//!   anything that resolves outside the store;
//! - `gc` removes versions that no catalog set references and no transfer touched within a
//!   grace period, the decision being the core's pure `appliance_core::gc::plan`.
//!
//! Architecture invariant: no sockets and no policy about which machine gets which version; the
//! TFTP and HTTP servers call `open` and record transfers in `Touches`.

mod gc;
mod publish;
mod store;

#[cfg(test)]
pub(crate) mod tests;

pub use gc::{gc, GcReport, Touches};
pub use publish::{
    publish, publish_from, ArtifactProblem, Blobs, PublishError, PublishReport, PublishedSet, FETCH_COMMAND,
};
pub use store::open;

/// Prefix of the directories `publish` builds a version in before renaming it into place, and
/// of the ones `gc` renames a version to before deleting it. Both start with a dot, so `open`
/// never serves from them.
const TMP_PREFIX: &str = ".tmp-";
const GC_PREFIX: &str = ".gc-";

/// Whether `name` may be one component of a store path: not empty, no separator, no NUL or
/// control character, and no leading dot (which also rules out `.` and `..`).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod name_tests {
    use super::is_plain_name;

    #[test]
    fn plain_names() {
        for ok in ["vmlinuz", "initrd.img", "3f2a9c0d11aa", "tiny-live", "a..b"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "/abs", "nul\0", "tab\there", "..\\x"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
