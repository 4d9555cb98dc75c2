#!/bin/sh
# pulumi-qemu shell agent: serves commands from the host, one at a time, on the virtio-serial
# port a VM with `agent: "shell"` has (named org.pulumi-qemu.shell.0). Runs on busybox sh and
# needs only sh, cat, dd (iflag=fullblock), wc, mktemp, setsid, kill, sleep and rm.
# Start it as root from the guest's init, in the background:  sh /path/shell-agent.sh &
# The framing is described in provider/core/shellFraming.ts; in short, per request:
#   host:  PQSH1 <nonce> <scriptBytes> <stdinBytes> <timeoutSeconds>\n <script> <stdin>
#   guest: PQSH1 ACK <nonce>\n
#          PQSH1 RET <nonce> exited|timeout <exitCode> <outBytes> <errBytes>\n <stdout> <stderr>
#          PQSH1 END <nonce>\n
# Anyone who can write to the port runs commands as this script's user: that is the point, and
# why the host end is a socket in the VM's owner-only directory.

PORT_NAME=${PQ_SHELL_PORT_NAME:-org.pulumi-qemu.shell.0}

log() { echo "pq-shell: $*" > /dev/console 2>/dev/null || echo "pq-shell: $*" >&2; }

find_port() {
    for f in /sys/class/virtio-ports/*/name; do
        [ -r "$f" ] || continue
        if [ "$(cat "$f")" = "$PORT_NAME" ]; then
            d=${f%/name}
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}

# The port appears once virtio_console has talked to QEMU; a VM without it simply never has one
# (the script then idles here, quietly, so one guest image serves VMs with and without agent).
until dev=$(find_port) && [ -c "$dev" ]; do
    sleep 1
done

work=$(mktemp -d /tmp/pq-shell.XXXXXX) || { log "cannot make a work directory in /tmp"; exit 1; }
exec 3<>"$dev" || { log "cannot open $dev"; exit 1; }
log "serving on $dev"

# Copies exactly $1 bytes from the port to the file $2. dd with fullblock never reads past what
# it was asked for, so the next request's bytes stay in the port.
read_exact() {
    : > "$2"
    big=$(($1 / 65536))
    rest=$(($1 % 65536))
    if [ "$big" -gt 0 ]; then dd bs=65536 count="$big" iflag=fullblock <&3 >> "$2" 2>/dev/null || return 1; fi
    if [ "$rest" -gt 0 ]; then dd bs="$rest" count=1 iflag=fullblock <&3 >> "$2" 2>/dev/null || return 1; fi
    [ "$(($(wc -c < "$2")))" -eq "$1" ]
}

# Sends exactly $1 bytes of the file $2 (a background process may still be appending to it).
send_exact() {
    big=$(($1 / 65536))
    rest=$(($1 % 65536))
    {
        if [ "$big" -gt 0 ]; then dd bs=65536 count="$big" iflag=fullblock 2>/dev/null; fi
        if [ "$rest" -gt 0 ]; then dd bs="$rest" count=1 iflag=fullblock 2>/dev/null; fi
    } < "$2" >&3
}

is_count() {
    case "$1" in
        "" | *[!0-9]*) return 1 ;;
    esac
    [ "${#1}" -le 15 ]
}

# Header fields are split with `set --`, which must not expand globs.
set -f
while :; do
    # With no host connected, a read returns end-of-file at once rather than blocking.
    if ! IFS= read -r line <&3; then
        sleep 0.05
        continue
    fi
    set -- $line
    [ "$#" -eq 5 ] && [ "$1" = PQSH1 ] || continue
    case "$2" in
        *[!0-9a-f]*) continue ;;
    esac
    [ "${#2}" -eq 32 ] && is_count "$3" && is_count "$4" && is_count "$5" || continue
    nonce=$2
    printf 'PQSH1 ACK %s\n' "$nonce" >&3
    rm -f "$work/script" "$work/stdin" "$work/out" "$work/err" "$work/timedout"
    # A short read means the host went away mid-request: wait for the next header.
    read_exact "$3" "$work/script" && read_exact "$4" "$work/stdin" || continue

    # Its own session and process group, so that a timeout kills everything it started; it
    # must not inherit the port (fd 3), or it could read the next request.
    ( cd / && exec setsid sh "$work/script" < "$work/stdin" > "$work/out" 2> "$work/err" 3>&- ) &
    pid=$!
    watcher=
    if [ "$5" -gt 0 ]; then
        ( sleep "$5"; : > "$work/timedout"; kill -KILL -"$pid" 2>/dev/null ) 3>&- &
        watcher=$!
    fi
    wait "$pid"
    rc=$?
    [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
    status=exited
    [ "$rc" -eq 137 ] && [ -e "$work/timedout" ] && status=timeout
    # Sizes first, then exactly that many bytes: a background process still writing to its
    # stdout cannot make the reply longer than its header says.
    olen=$(($(wc -c < "$work/out")))
    elen=$(($(wc -c < "$work/err")))
    printf 'PQSH1 RET %s %s %s %s %s\n' "$nonce" "$status" "$rc" "$olen" "$elen" >&3
    send_exact "$olen" "$work/out"
    send_exact "$elen" "$work/err"
    printf 'PQSH1 END %s\n' "$nonce" >&3
    rm -f "$work/script" "$work/stdin" "$work/out" "$work/err" "$work/timedout"
done
