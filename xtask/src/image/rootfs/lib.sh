# Shared by the appliance's boot scripts: PATH, the image settings, and log(), which writes a
# timestamped line (seconds since boot) to the console and to the second console, if any.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
. /etc/appliance/image.conf

log() {
    msg="[$(cut -d' ' -f1 /proc/uptime 2>/dev/null)] appliance: $*"
    echo "$msg" >/dev/console 2>/dev/null || echo "$msg"
    if [ -n "$EXTRA_CONSOLE" ]; then
        echo "$msg" >"/dev/$EXTRA_CONSOLE" 2>/dev/null
    fi
}

# Reads key=value words from the kernel command line: cmdline_has appliance.rescue=1
cmdline_has() {
    for word in $(cat /proc/cmdline); do
        [ "$word" = "$1" ] && return 0
    done
    return 1
}
