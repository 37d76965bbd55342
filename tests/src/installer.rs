//! Installer cells: the Debian 12 netboot installer (the `debian-installer` profile) booted by
//! real firmware, preseeded by the appliance, watched on its serial console until it reaches
//! the archive mirror step, the first step that needs more than the boot network has.
//!
//! What a pass proves, besides the boot path the firmware's row checks:
//! - the installer fetched its preseed: the server logged a 200 for
//!   `/answers/<mac>/preseed` (our daemon's log, or the reference stack's HTTP log);
//! - it booted the catalog's artifact set: the kernel was fetched under the expected version;
//! - it went past every question the preseed answers (network, language, keyboard, the
//!   mirror's host and directory) without stopping, since at `priority=critical` a question
//!   without an answer would be shown and stop it long before the mirror step.
//!
//! The installer draws its dialogs with newt on the serial console; the texts below are what
//! it prints there at the mirror step (docs/firmware.md#debian-12-netboot-installer).

use anyhow::{bail, Result};
use appliance_core::mac::MacAddr;
use testkit::lab::SERVER_IP;

/// The installer's profile in `profiles/`.
pub const PROFILE: &str = "debian-installer";

/// The preseed's answer name in that profile.
pub const PRESEED: &str = "preseed";

/// Memory for an installer VM: its initrd unpacks to about 130 MB in RAM, and the installer
/// runs in "low memory" mode, asking extra questions, below about 780 MB.
pub const MEMORY_MB: u32 = 1024;

/// From QEMU start to the mirror step, at most: the installer alone takes 70–100 s under TCG,
/// and two VMs share the machine's two cores.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What the console shows when the installer has reached the mirror step (any one of them).
pub const MIRROR_STEP: &[&str] = &["Choose a mirror of the Debian archive", "Bad archive mirror"];

/// The mirror a cell's machine names (`vars.mirror`): the server's own address, where no
/// archive is (our daemon and the reference's HTTP server answer 404), so the check fails at
/// once and the same way on both stacks. The test network has no name server: a mirror by
/// name, as the example machines have, would add the installer's lookup timeouts
/// (docs/firmware.md#debian-12-netboot-installer).
pub fn test_mirror() -> String {
    format!("{{ mirror: {{ hostname: {SERVER_IP}, directory: /debian }} }}")
}

/// The first mirror-step text on the cleaned console, if it is there yet.
pub fn at_mirror_step(console: &str) -> Option<&'static str> {
    MIRROR_STEP.iter().copied().find(|t| console.contains(t))
}

/// The request path of `mac`'s preseed.
pub fn preseed_path(mac: MacAddr) -> String {
    format!("/answers/{}/{PRESEED}", mac.dashed())
}

/// Checks our daemon's log: a 200 for the machine's preseed, and the kernel fetched (by HTTP
/// or TFTP) from the expected artifact version.
pub fn check_daemon_log(log: &str, mac: MacAddr, version: &str) -> Result<()> {
    let preseed = format!("path={}", preseed_path(mac));
    if !log.lines().any(|l| l.contains(&preseed) && l.contains("status=200")) {
        bail!("the daemon never answered {} with 200", preseed_path(mac));
    }
    let artifacts = format!("artifacts/{PROFILE}/{version}/");
    if !log.contains(&artifacts) {
        bail!("the daemon never served {artifacts}");
    }
    Ok(())
}

/// Checks the reference stack's HTTP log (Python's `http.server`): a 200 for the preseed.
pub fn check_reference_log(log: &str, mac: MacAddr) -> Result<()> {
    // `"GET <path> HTTP/1.x" 200 -`: whichever HTTP version the installer's wget speaks.
    let request = format!("\"GET {} HTTP/1.", preseed_path(mac));
    if !log.lines().any(|l| l.split_once(&request).is_some_and(|(_, rest)| rest.contains("\" 200 "))) {
        bail!("the reference HTTP server never answered {} with 200", preseed_path(mac));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x77, 0x00, 0x11]);

    #[test]
    fn the_daemon_log_must_show_the_preseed_and_the_version() {
        let good = "INFO http request method=GET path=/answers/52-54-00-77-00-11/preseed status=200 bytes=900\n\
                    INFO http request method=GET path=/artifacts/debian-installer/abc123/linux status=200\n";
        check_daemon_log(good, MAC, "abc123").unwrap();
        assert!(check_daemon_log(good, MAC, "def456").is_err());
        let failed = good.replace("status=200 bytes=900", "status=500 bytes=20");
        assert!(check_daemon_log(&failed, MAC, "abc123").is_err());
    }

    #[test]
    fn the_reference_log_must_show_the_preseed() {
        let log = "13:01:02.003 10.77.0.100 \"GET /answers/52-54-00-77-00-11/preseed HTTP/1.1\" 200 -\n";
        check_reference_log(log, MAC).unwrap();
        assert!(check_reference_log(&log.replace("\" 200", "\" 404"), MAC).is_err());
        check_reference_log(&log.replace("HTTP/1.1", "HTTP/1.0"), MAC).unwrap();
        let other = log.replace("77-00-11", "77-00-12");
        assert!(check_reference_log(&other, MAC).is_err());
    }

    #[test]
    fn the_mirror_step_is_recognised() {
        assert_eq!(at_mirror_step("...\n  [!!] Choose a mirror of the Debian archive\n"), MIRROR_STEP.first().copied());
        assert_eq!(at_mirror_step("[!!] Configure the network"), None);
    }
}
