//! CPU wake-up latency while files are being sent: a PM QoS request on `/dev/cpu_dma_latency`.
//!
//! A lockstep TFTP transfer (GRUB, U-Boot without windowsize, PXE ROMs) is a chain of round
//! trips in which the daemon sleeps until the client's ACK wakes it. An idle CPU that has gone
//! into a deep sleep state (a C-state on hardware; a halted vCPU in a VM, which only the host can
//! wake) adds its exit latency to every block. Measured on the 2-vCPU VM this project is built on,
//! with the tftp-hpa client on loopback: 30 MB at blksize 512 took 6.6 s with idle CPUs allowed
//! to halt and 1.44 s with them held at a 0 µs latency target, and the daemon's own CPU time per
//! block fell from 44 to 14 µs (waking a halted vCPU is charged to the sender). ARCHITECTURE.md
//! has the boot matrix figures.
//!
//! The kernel keeps the request for as long as the file written to stays open, and drops it when
//! it is closed (also when the process dies). [`CpuLatency`] opens the device when the first
//! transfer starts and closes it `linger` (100 ms) after the last one ends, so the machine idles
//! normally between boots and a burst of small transfers does not reopen it each time. Without the device
//! or the permission to open it (not root), it logs one warning and the daemon serves as before.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The kernel's PM QoS interface for the CPU wake-up latency target.
pub const DEVICE: &str = "/dev/cpu_dma_latency";
/// How long the request outlives the last transfer: enough to bridge the gaps between one
/// boot's requests (a GRUB or U-Boot config lookup and its kernel come milliseconds apart),
/// short enough to be gone before the kernel it delivered boots. Idle CPUs that poll are not
/// free for the busy ones on hosts that share cores between vCPUs (hyperthreads); with a 2 s
/// linger the SeaBIOS + iPXE ROM cell, whose transfers end 3.5 s before its marker, booted
/// 0.1 s slower by median (4 alternating runs each; within noise, but nothing to gain).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);

/// Shared by every transfer of the daemon; cheap to clone. [`CpuLatency::disabled`] (the
/// default) makes [`CpuLatency::hold`] a no-op.
#[derive(Clone, Default)]
pub struct CpuLatency {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    device: PathBuf,
    target_us: i32,
    linger: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Transfers holding the request.
    active: usize,
    /// The open device while the request is in force.
    file: Option<File>,
    /// Bumped by every hold, so a release scheduled before it does nothing.
    generation: u64,
    /// Opening failed once: do not retry (and warn) on every transfer.
    unavailable: bool,
    /// The first request was logged at info; later ones only at debug.
    announced: bool,
    /// The device, opened once before the daemon gave up root ([`CpuLatency::keep_open`]): a
    /// request is then put in force and released by writing to it, not by opening and closing.
    kept: Option<File>,
}

/// The value that asks for nothing: the kernel's default CPU latency (2,000 s), so the request
/// no longer constrains the idle states.
const NO_CONSTRAINT_US: i32 = 2_000_000_000;

/// Keeps the request in force until dropped.
#[must_use = "the request is released when the hold is dropped"]
pub struct Hold {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for CpuLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("CpuLatency(off)"),
            Some(i) => write!(f, "CpuLatency({} µs via {})", i.target_us, i.device.display()),
        }
    }
}

impl CpuLatency {
    pub fn disabled() -> Self {
        CpuLatency { inner: None }
    }

    /// Requests `target_us` microseconds of wake-up latency through `device` while transfers run.
    pub fn new(device: impl Into<PathBuf>, target_us: i32, linger: Duration) -> Self {
        let inner = Inner { device: device.into(), target_us, linger, state: Mutex::default() };
        CpuLatency { inner: Some(Arc::new(inner)) }
    }

    /// Marks a transfer as running; the request is in force until every hold is dropped (and
    /// `linger` has passed).
    pub fn hold(&self) -> Hold {
        if let Some(inner) = &self.inner {
            let mut s = inner.lock();
            s.active += 1;
            s.generation += 1;
            if s.file.is_none() && !s.unavailable {
                match inner.open(s.kept.as_ref()) {
                    Ok(f) => {
                        if s.announced {
                            tracing::debug!(target_us = inner.target_us, "cpu latency: request in force");
                        } else {
                            s.announced = true;
                            tracing::info!(
                                target_us = inner.target_us,
                                linger_ms = inner.linger.as_millis() as u64,
                                "cpu latency: requested through {} while transfers run (--cpu-latency)",
                                inner.device.display()
                            );
                        }
                        s.file = Some(f);
                    }
                    Err(e) => {
                        s.unavailable = true;
                        tracing::warn!(
                            "cpu latency: cannot request {} µs through {}: {e}; idle CPUs may add their \
                             wake-up time to every lockstep TFTP block (--cpu-latency off silences this)",
                            inner.target_us,
                            inner.device.display()
                        );
                    }
                }
            }
        }
        Hold { inner: self.inner.clone() }
    }

    /// Opens the device now, asking for nothing yet, and keeps it open for the daemon's
    /// lifetime: after the daemon drops root it can no longer open it (root's, mode 0600), but
    /// it can still write to it. Does nothing when disabled.
    pub fn keep_open(&self) -> std::io::Result<()> {
        let Some(inner) = &self.inner else { return Ok(()) };
        let mut f = std::fs::OpenOptions::new().write(true).open(&inner.device)?;
        f.write_all(&NO_CONSTRAINT_US.to_ne_bytes())?;
        inner.lock().kept = Some(f);
        Ok(())
    }

    /// Whether the request is in force now.
    pub fn is_held(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.lock().file.is_some())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic in a holder: every update is one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, kept: Option<&File>) -> std::io::Result<File> {
        let mut f = match kept {
            Some(k) => k.try_clone()?,
            None => std::fs::OpenOptions::new().write(true).open(&self.device)?,
        };
        // The binary form: a native-endian s32 (the kernel also parses hex text).
        f.write_all(&self.target_us.to_ne_bytes())?;
        Ok(f)
    }

    fn release_if_idle(&self, generation: u64) {
        let mut s = self.lock();
        if s.active == 0 && s.generation == generation {
            if let Some(mut f) = s.file.take() {
                // A copy of the kept descriptor: closing it would release nothing.
                if s.kept.is_some() {
                    if let Err(e) = f.write_all(&NO_CONSTRAINT_US.to_ne_bytes()) {
                        tracing::warn!("cpu latency: cannot release the request: {e}");
                    }
                }
                tracing::debug!("cpu latency: request released");
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        let generation = {
            let mut s = inner.lock();
            s.active -= 1;
            if s.active > 0 || s.file.is_none() {
                return;
            }
            s.generation
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !inner.linger.is_zero() => {
                rt.spawn(async move {
                    tokio::time::sleep(inner.linger).await;
                    inner.release_if_idle(generation);
                });
            }
            _ => inner.release_if_idle(generation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_bytes(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// A regular file standing in for the kernel's device.
    fn fake_device() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("cpu_dma_latency");
        std::fs::write(&dev, b"").unwrap();
        (dir, dev)
    }

    #[tokio::test(start_paused = true)]
    async fn held_while_transfers_run_and_released_after_the_linger() {
        let (_dir, dev) = fake_device();
        let lat = CpuLatency::new(&dev, 7, Duration::from_secs(2));
        assert!(!lat.is_held());

        let a = lat.hold();
        assert!(lat.is_held());
        assert_eq!(device_bytes(&dev), 7i32.to_ne_bytes());
        let b = lat.hold();
        drop(a);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(lat.is_held(), "released while a transfer still runs");

        drop(b);
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(lat.is_held(), "released before the linger");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lat.is_held(), "kept after the linger");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_starting_during_the_linger_keeps_the_request() {
        let (_dir, dev) = fake_device();
        let lat = CpuLatency::new(&dev, 0, Duration::from_secs(2));
        drop(lat.hold());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = lat.hold();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(lat.is_held(), "the first release fired under a running transfer");
        drop(again);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!lat.is_held());
        assert_eq!(device_bytes(&dev), 0i32.to_ne_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_kept_open_is_written_to_hold_and_to_release() {
        let (dir, dev) = fake_device();
        let lat = CpuLatency::new(&dev, 5, Duration::from_millis(100));
        lat.keep_open().unwrap();
        // From here on the device cannot be opened again (as after dropping root); its
        // content stays readable through another name.
        let seen = dir.path().join("seen");
        std::fs::hard_link(&dev, &seen).unwrap();
        std::fs::remove_file(&dev).unwrap();
        std::fs::create_dir(&dev).unwrap();
        let h = lat.hold();
        assert!(lat.is_held());
        drop(h);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lat.is_held());
        let written: Vec<i32> =
            device_bytes(&seen).chunks(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(written, [NO_CONSTRAINT_US, 5, NO_CONSTRAINT_US]);
    }

    #[test]
    fn a_missing_device_disables_it_without_failing_transfers() {
        let lat = CpuLatency::new("/nonexistent/cpu_dma_latency", 0, Duration::ZERO);
        let h = lat.hold();
        assert!(!lat.is_held());
        drop(h);
        drop(lat.hold());
        assert!(!lat.is_held());
        assert!(CpuLatency::disabled().hold().inner.is_none());
    }
}
