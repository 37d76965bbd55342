//! Least privilege: once every socket is bound, the daemon becomes an unprivileged user and
//! keeps only the capabilities it still uses.
//!
//! What needs privilege, and when: the ports below 1024 (DHCP 67 and 4011, TFTP 69, HTTP 80)
//! and `SO_BINDTODEVICE` on the DHCP sockets are bound before the drop and never again (a
//! reload does not rebind; TFTP transfer sockets take ephemeral ports), so
//! `CAP_NET_BIND_SERVICE` is not kept. The IPv6 router advertisement socket (raw ICMPv6,
//! bound to the interface) is opened by its task after the drop, so `CAP_NET_RAW` is kept when
//! the daemon advertises (`--interface`), and nothing at all otherwise. `/dev/cpu_dma_latency`
//! (root's, mode 0600) is opened before the drop and kept open (`latency::CpuLatency::
//! keep_open`). The state dir is handed to the user first (leases, the artifact store), so
//! writing it needs no privilege either.
//!
//! The drop happens on the only thread, before the async runtime starts: user IDs are set for
//! the whole process, but capability sets are per thread, and every thread the runtime starts
//! later inherits them from this one. Order: the bounding set is cut while we are still root
//! (it needs `CAP_SETPCAP`), `PR_SET_KEEPCAPS` keeps the permitted set across `setuid`,
//! supplementary groups, GID and UID are set (real, effective and saved), the permitted and
//! effective sets are cut to what is kept, the inheritable and ambient ones cleared, and
//! `PR_SET_NO_NEW_PRIVS` makes sure no exec can gain any back (the daemon execs nothing).
//!
//! The `caps` crate does the capability system calls: small, maintained, no dependency but
//! libc, and it keeps the workspace free of `unsafe` for raw `capset(2)`.

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use std::path::Path;

/// The capabilities kept after the drop: `CAP_NET_RAW` for the router advertisement socket
/// when the daemon advertises on an interface, nothing otherwise.
pub fn kept(advertises: bool) -> CapsHashSet {
    let mut set = CapsHashSet::new();
    if advertises {
        set.insert(Capability::CAP_NET_RAW);
    }
    set
}

/// The user to become, looked up before anything changes.
pub fn lookup(name: &str) -> Result<User> {
    let user = User::from_name(name).with_context(|| format!("looking up user {name:?}"))?;
    let user = user.with_context(|| format!("no user named {name:?}"))?;
    if user.uid.is_root() {
        bail!("--user {name:?} is root: nothing would be dropped");
    }
    Ok(user)
}

/// Gives `dir` and everything in it to `user` (links themselves, never what they point to),
/// so the daemon can still write its state after the drop.
pub fn hand_over(dir: &Path, user: &User) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let give = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("giving {} to {}", p.display(), user.name))
    };
    give(dir)?;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            give(&entry.path())?;
            if entry.file_type()?.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Becomes `user`, keeping only `keep` (see the module documentation). Call it on the only
/// thread of the process.
pub fn drop_to(user: &User, keep: &CapsHashSet) -> Result<()> {
    if !Uid::effective().is_root() {
        bail!("--user needs the daemon to start as root");
    }
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).context("PR_SET_KEEPCAPS")?;
    nix::unistd::setgroups(&[user.gid]).context("setting the supplementary groups")?;
    let (uid, gid): (Uid, Gid) = (user.uid, user.gid);
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("setting the group ID {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("setting the user ID {uid}"))?;
    caps::set(None, CapSet::Permitted, keep).context("setting the permitted capabilities")?;
    caps::set(None, CapSet::Effective, keep).context("setting the effective capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    nix::sys::prctl::set_keepcaps(false).context("PR_SET_KEEPCAPS off")?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    if Uid::effective().is_root()
        || nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok()
    {
        bail!("still able to become root after dropping privileges");
    }
    Ok(())
}
