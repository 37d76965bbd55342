#!/usr/bin/env bash
# Runs the README's two commands as a new user would: in a fresh clone, inside a throw-away
# Debian bookworm root that has never seen this project, from nothing to
# target/images/default.img and to `cargo xtask test`'s closing `workspace: N passed, M failed`.
#
#   sudo xtask/scripts/fresh-host.sh [--commit REV] [--image-only] [--keep] [--no-registry-copy]
#
# What the root starts with: `debootstrap --variant=minbase bookworm` (only the Essential and
# Required packages) from this machine's own Debian mirror, with this machine's apt sources
# (/etc/apt/sources.list and sources.list.d/*.list, *.sources) copied in, plus what rustup's
# cargo itself needs to work at all: gcc and libc6-dev (rustc links through `cc`; rustup ships
# no linker) and ca-certificates (crates.io over HTTPS). The Rust toolchain is this machine's:
# ~/.rustup and ~/.cargo are bind-mounted read-only, and CARGO_HOME points to a writable
# directory in the root. For speed that directory starts with a copy of ~/.cargo/registry (the
# crates already downloaded here; --no-registry-copy starts it empty). Nothing else is
# installed: every other package is for `cargo xtask` to install.
#
# The root is bind-mounted on itself (`ip netns exec` needs "/" to be a mount point) and gets
# /proc, /sys, /dev (with /dev/net/tun for the QEMU tests) and a tmpfs on /run (where `ip netns`
# keeps its namespaces), all in a private mount namespace of this script, and
# the clone is a fresh `git clone` of REV (default: HEAD of this checkout; uncommitted changes
# are not in it) at /srv/appliance. Then, timed:
#   1. `cargo xtask image` as root: prepares the host for the image, builds it;
#   2. `xtask test` as the user nobody: must stop, changing nothing, with the commands to run;
#   3. `cargo xtask test` as root: prepares the rest, fmt, clippy, fetch, release build, tests.
# BOOT_TESTS_* and APPLIANCE_* variables are passed into the root. Logs and a summary go to
# target/fresh-host/<time>/ of this checkout. Every mount and the root are removed at the end,
# also on failure or Ctrl-C (--keep keeps the root's files, still unmounting everything).
#
# Needs root, debootstrap, git and unshare (util-linux) on this machine, a few GB in /var/tmp
# (FRESH_HOST_TMP to change), and about 40 minutes on two cores. Not run by CI.
set -euo pipefail

repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
args=("$@")
commit=HEAD
image_only=false
keep=false
copy_registry=true
while (($#)); do
    case $1 in
        --commit) commit=$2; shift 2 ;;
        --image-only) image_only=true; shift ;;
        --keep) keep=true; shift ;;
        --no-registry-copy) copy_registry=false; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ((EUID != 0)); then
    echo "fresh-host.sh needs root (debootstrap, chroot, mounts)" >&2
    exit 1
fi
for tool in debootstrap git unshare chroot; do
    command -v "$tool" >/dev/null || { echo "fresh-host.sh needs $tool on this machine" >&2; exit 1; }
done

# Every mount below lives in a mount namespace of our own: none is seen by the rest of the
# machine, and none outlives this script even if it is killed outright.
if [[ ${FRESH_HOST_UNSHARED:-} != 1 ]]; then
    export FRESH_HOST_UNSHARED=1
    exec unshare --mount --propagation private "${BASH_SOURCE[0]}" "${args[@]}"
fi

rev=$(git -C "$repo" rev-parse --verify "$commit^{commit}")
if [[ $commit == HEAD && -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
    echo "note: $repo has uncommitted changes; the fresh clone has only commit $rev"
fi

# The Debian mirror this machine uses for bookworm, from its apt sources (one-line and deb822).
mirror=${FRESH_HOST_MIRROR:-$(
    {
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" && / bookworm( |$)/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }'
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '/^URIs:/ { uri = $2 } /^Suites:/ && / bookworm( |$)/ && uri { print uri; exit } /^$/ { uri = "" }'
    } | head -n 1
)}
if [[ -z $mirror ]]; then
    echo "no bookworm source in /etc/apt/sources.list*; set FRESH_HOST_MIRROR" >&2
    exit 1
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
logs=$repo/target/fresh-host/$stamp
mkdir -p "$logs"
dir=$(mktemp -d "${FRESH_HOST_TMP:-/var/tmp}/fresh-host.XXXXXX")
root=$dir/root
summary=$logs/summary.txt

say() { echo "fresh-host: $*" | tee -a "$summary"; }

cleanup() {
    local status=$?
    set +e
    # Deepest first. /proc/self/mountinfo escapes spaces as \040; our paths have none.
    local mounts
    mounts=$(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    for m in $mounts; do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    if awk -v r="$root" '$5 == r || index($5, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        echo "fresh-host: mounts are left under $root; not removing $dir" >&2
    elif $keep; then
        echo "fresh-host: kept the root in $root (nothing is mounted in it)"
    else
        rm -rf --one-file-system "$dir"
    fi
    echo "fresh-host: logs in $logs"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "commit $rev, mirror $mirror, root $root"
started=$SECONDS
debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev bookworm "$root" "$mirror" \
    >"$logs/debootstrap.log" 2>&1 || { tail -n 20 "$logs/debootstrap.log"; exit 1; }
say "debootstrap: $((SECONDS - started))s"

# This machine's apt sources, and the keyrings they name that the root lacks.
rm -f "$root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    cp "$f" "$root$f"
    for key in $(sed -n 's/.*[Ss]igned-[Bb]y[:=] *\([^] ]*\).*/\1/p' "$f"); do
        [[ -f $key && ! -e $root$key ]] && install -D -m 0644 "$key" "$root$key"
    done
done
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

# The root must be a mount point of its own: `ip netns exec` and `ip -n` remount "/" as a slave
# in their own mount namespace, which fails on a directory that is not one.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
for d in .rustup .cargo; do
    mkdir -p "$root/root/$d"
    mount --bind "$HOME/$d" "$root/root/$d"
    mount -o remount,bind,ro "$root/root/$d"
done
mkdir -p "$root/root/cargo-home"
if $copy_registry && [[ -d $HOME/.cargo/registry ]]; then
    cp -a "$HOME/.cargo/registry" "$root/root/cargo-home/"
    say "CARGO_HOME starts with a copy of this machine's ~/.cargo/registry ($(du -sh "$root/root/cargo-home" | cut -f1))"
fi

git clone --quiet --no-hardlinks "$repo" "$root/srv/appliance"
git -C "$root/srv/appliance" checkout --quiet --detach "$rev"

env_in=(HOME=/root LANG=C.UTF-8 TERM=dumb CARGO_HOME=/root/cargo-home
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
while IFS= read -r name; do
    env_in+=("$name=${!name}")
done < <(compgen -e | grep -E '^(BOOT_TESTS_|APPLIANCE_)' || true)

# Runs a command line in the clone inside the root, as root, logged and timed.
step() {
    local name=$1 command=$2 t0=$SECONDS status=0
    say "$name: \`$command\`"
    chroot "$root" /usr/bin/env -i "${env_in[@]}" /bin/bash -c "cd /srv/appliance && $command" </dev/null 2>&1 \
        | tee "$logs/$name.log" || status=$?
    say "$name: exit $status after $((SECONDS - t0))s"
    return "$status"
}

step image "cargo xtask image"
ls -l "$root/srv/appliance/target/images/default.img" | tee -a "$summary"
$image_only && exit 0

# Not root: the host lacks the test packages, so `xtask test` must stop before doing anything
# and print the commands (the binary directly: cargo's own files belong to root).
t0=$SECONDS
before=$(chroot "$root" dpkg-query -W -f '${binary:Package} ${db:Status-Abbrev}\n' | md5sum)
status=0
chroot "$root" /usr/bin/env -i "${env_in[@]}" HOME=/nonexistent \
    setpriv --reuid=nobody --regid=nogroup --clear-groups /srv/appliance/target/debug/xtask test </dev/null \
    >"$logs/not-root.log" 2>&1 || status=$?
after=$(chroot "$root" dpkg-query -W -f '${binary:Package} ${db:Status-Abbrev}\n' | md5sum)
cat "$logs/not-root.log"
if ((status == 0)) || ! grep -q '^  apt-get install --no-install-recommends -y ' "$logs/not-root.log" || [[ $before != "$after" ]]; then
    say "not-root: FAILED: expected a non-zero exit with the apt-get command and no change (exit $status)"
    exit 1
fi
say "not-root: \`xtask test\` as nobody stopped with exit $status after $((SECONDS - t0))s, printing the commands; dpkg's state unchanged"

status=0
step test "cargo xtask test" || status=$?
grep -E '^workspace: [0-9]+ passed, [0-9]+ failed' "$logs/test.log" | tail -n 1 | tee -a "$summary" || true
say "total: $((SECONDS - started))s"
exit "$status"
