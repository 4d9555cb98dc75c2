#!/bin/sh
# pulumi-qemu shell agent: serves commands from the host, one at a time, on the virtio-serial
# port a VM with `agent: "shell"` has (named org.pulumi-qemu.shell.0). Runs on busybox sh and
# needs only sh, dd (iflag=fullblock), wc, mktemp, mkfifo, setsid and kill.
# Start it as root from the guest's init, in the background:  sh /path/shell-agent.sh &
# The framing is described in provider/core/shellFraming.ts; in short, per request:
#   host:  PQSH1 <nonce> <scriptBytes> <stdinBytes> <timeoutSeconds>\n <script> <stdin>
#   guest: PQSH1 ACK <nonce>\n
#          PQSH1 RET <nonce> exited|timeout <exitCode> <outBytes> <errBytes>\n <stdout> <stderr>
#          PQSH1 END <nonce>\n
# Anyone who can write to the port runs commands as this script's user: that is the point, and
# why the host end is a socket in the VM's owner-only directory.
#
# Speed: under TCG every fork costs milliseconds, so the request path forks only for the
# command itself (setsid sh, in the background) and, when there is any, for stdin and output
# (dd, wc). Everything else is a shell builtin: the script is read line by line with `read`
# (it never holds NUL), sizes of what dd copied come from its own report, and the timeout is
# kept by one watcher started once, told about each command through a FIFO.

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
mkfifo "$work/watch" "$work/idle" || { log "cannot make FIFOs in $work"; exit 1; }
# Commands start in /, in a session of their own.
cd / || exit 1

# The watcher: "arm PID SECONDS" starts a countdown that a "disarm" stops; at zero it kills the
# command's whole session (its process group) and leaves the pid in $work/timedout. Builtins only.
(
    exec 3>&- 4<>"$work/watch"
    while :; do
        IFS=' ' read -r verb pid secs <&4 || continue
        [ "$verb" = arm ] || continue
        if ! IFS=' ' read -r -t "$secs" verb rest <&4; then
            echo "$pid" > "$work/timedout"
            kill -KILL -"$pid" 2>/dev/null
        fi
    done
) &
watcher=$!
exec 3<>"$dev" || { log "cannot open $dev"; exit 1; }
exec 5>"$work/watch" 6<>"$work/idle"
log "serving on $dev"

# ${#line} counts bytes only where the shell's locale is plain (C, POSIX or none); elsewhere it
# may count characters, so the script is copied with dd as stdin is.
case "${LC_ALL:-${LC_CTYPE:-${LANG:-C}}}" in
    C | POSIX) line_reads=yes ;;
    *) line_reads=no ;;
esac

# Reads a script of exactly $1 bytes from the port into the file $2 with builtins: it holds no
# NUL and ends with a newline (core/shellFraming.ts makes it so). A host gone mid-script leaves
# a line cut short or too few bytes: refused. Big scripts go through dd (`read` takes a byte per
# system call).
read_script() {
    if [ "$line_reads" != yes ] || [ "$1" -gt 16384 ]; then
        read_exact "$1" "$2"
        return
    fi
    left=$1
    : > "$2" 2>/dev/null || write_failed=yes
    while [ "$left" -gt 0 ]; do
        IFS= read -r l <&3 || return 1
        # A line that could not be written (the file system full) fails the request, never a
        # script run cut short; the rest is still read, so the port stays in step.
        printf '%s\n' "$l" 2>/dev/null >> "$2" || write_failed=yes
        left=$((left - ${#l} - 1))
    done
    [ "$left" -eq 0 ] && [ -z "$write_failed" ]
}

# Answers request $1 with exit code 125 and the message $2 as its stderr, sent from memory: for
# a request that could not even be written to the work directory.
reply_failed() {
    printf 'PQSH1 RET %s exited 125 0 %s\n%s\nPQSH1 END %s\n' "$1" "$((${#2} + 1))" "$2" "$1" >&3
}

# Copies exactly $1 bytes from the port to the file $2. dd with fullblock never reads past what
# it was asked for, so the next request's bytes stay in the port; that it copied every block in
# full is read from its own report ("COUNT+0 records in"), not by a `wc` of the file.
read_exact() {
    : > "$2"
    big=$(($1 / 65536))
    rest=$(($1 % 65536))
    if [ "$big" -gt 0 ]; then
        dd bs=65536 count="$big" iflag=fullblock <&3 >> "$2" 2> "$work/dd" || return 1
        read -r records _ < "$work/dd"
        [ "$records" = "$big+0" ] || return 1
    fi
    if [ "$rest" -gt 0 ]; then
        dd bs="$rest" count=1 iflag=fullblock <&3 >> "$2" 2> "$work/dd" || return 1
        read -r records _ < "$work/dd"
        [ "$records" = "1+0" ] || return 1
    fi
    return 0
}

# Sends exactly $1 bytes of the file $2 (a background process may still be appending to it).
send_exact() {
    [ "$1" -gt 0 ] || return 0
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
    # With no host connected, a read returns end-of-file at once rather than blocking: wait a
    # little on a FIFO nobody writes (a builtin, where `sleep` would fork every time).
    if ! IFS= read -r line <&3; then
        read -r -t 0.02 _ <&6
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
    # A short read means the host went away mid-request: wait for the next header. A work
    # directory that takes no more (its file system full) is answered, or the host would wait.
    write_failed=
    if ! { read_script "$3" "$work/script" && read_exact "$4" "$work/stdin"; }; then
        if [ -n "$write_failed" ] || ! : 2>/dev/null > "$work/probe" || ! printf x 2>/dev/null > "$work/probe"; then
            reply_failed "$nonce" "pq-shell: the command could not be written to $work: its file system is full or read-only"
        fi
        : > "$work/script" 2>/dev/null
        : > "$work/stdin" 2>/dev/null
        rm -f "$work/probe"
        continue
    fi

    # Its own session and process group, so that a timeout kills everything it started; it
    # must not inherit the port (fd 3) or the watcher's FIFOs.
    setsid sh "$work/script" < "$work/stdin" > "$work/out" 2> "$work/err" 3>&- 5>&- 6>&- &
    pid=$!
    [ "$5" -gt 0 ] && printf 'arm %s %s\n' "$pid" "$5" >&5
    wait "$pid"
    rc=$?
    [ "$5" -gt 0 ] && printf 'disarm\n' >&5
    status=exited
    if [ "$rc" -eq 137 ] && [ -e "$work/timedout" ]; then
        read -r killed < "$work/timedout"
        [ "$killed" = "$pid" ] && status=timeout
    fi
    # Sizes first, then exactly that many bytes: a background process still writing to its
    # stdout cannot make the reply longer than its header says. Empty output costs no fork.
    olen=0
    elen=0
    if [ -s "$work/out" ] || [ -s "$work/err" ]; then
        set -- $(wc -c "$work/out" "$work/err")
        olen=$(($1))
        elen=$(($3))
    fi
    printf 'PQSH1 RET %s %s %s %s %s\n' "$nonce" "$status" "$rc" "$olen" "$elen" >&3
    send_exact "$olen" "$work/out"
    send_exact "$elen" "$work/err"
    printf 'PQSH1 END %s\n' "$nonce" >&3
    # Nothing of this command is kept in the guest's memory (/tmp) until the next one.
    : > "$work/script"
    : > "$work/stdin"
    : > "$work/out"
    : > "$work/err"
done
