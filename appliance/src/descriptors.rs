//! File descriptors, so that one host's flood cannot starve the daemon of them: the soft
//! `RLIMIT_NOFILE` is raised to the hard limit at start (systemd's default soft limit is
//! 1,024, which 504 stalled TFTP transfers once used up, refusing every client, the accept
//! loop and even a reload), and the TFTP and HTTP totals are fitted to what the limit allows
//! after a reserve, so accepting, reloading (config files, artifact digests, publishing),
//! the lease file and logging always find a descriptor.
//!
//! This module owns the limit and the arithmetic; the totals themselves are configuration.

use std::io;

/// Descriptors kept for everything but transfers and connections: listening sockets, the
/// runtime, a reload's files, the lease writer, the blocking pool's files, logging.
pub const RESERVE: u64 = 256;
/// Descriptors one TFTP transfer or HTTP connection holds at most: its socket and a file.
pub const PER_OCCUPANT: u64 = 2;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit before and after.
pub fn raise_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    let (now, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    Ok((soft, now))
}

/// The TFTP transfer and HTTP connection totals that fit in `limit` descriptors with the
/// reserve kept: as asked if they fit, otherwise both scaled down in proportion (at least one
/// each).
pub fn fit(limit: u64, tftp: usize, http: usize) -> (usize, usize) {
    let available = limit.saturating_sub(RESERVE) / PER_OCCUPANT;
    let wanted = (tftp + http) as u64;
    if wanted <= available {
        return (tftp, http);
    }
    let scale = |n: usize| ((n as u64 * available / wanted.max(1)) as usize).max(1);
    (scale(tftp), scale(http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_that_fit_are_kept() {
        assert_eq!(fit(524_288, 1024, 1024), (1024, 1024));
        assert_eq!(fit(256 + 2 * 2048, 1024, 1024), (1024, 1024));
    }

    #[test]
    fn totals_that_do_not_fit_shrink_in_proportion_and_leave_the_reserve() {
        let (tftp, http) = fit(1024, 1024, 1024);
        assert_eq!((tftp, http), (192, 192));
        assert!((tftp + http) as u64 * PER_OCCUPANT + RESERVE <= 1024);
        assert_eq!(fit(100, 1024, 1024), (1, 1));
    }

    #[test]
    fn the_soft_limit_rises_to_the_hard_one() {
        let (_, now) = raise_limit().unwrap();
        let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((now, soft), (hard, hard));
    }
}
