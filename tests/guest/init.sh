#!/bin/busybox sh
# /init of the pulumi-qemu test guest. The kernel passes dotted parameters to itself and some
# plain ones to init's environment, so everything ours is read from /proc/cmdline instead.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /mnt /www /var/log /var/run
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc || echo "pq: mount /proc failed"
mount -t sysfs sysfs /sys || echo "pq: mount /sys failed"
mount -t devtmpfs devtmpfs /dev || echo "pq: mount /dev failed"

# The builder wrote the modules in dependency order, so a plain loop is enough.
for m in $(cat /etc/pq-modules); do
    insmod "/lib/modules/$m.ko" || echo "pq: insmod $m failed"
done

name=guest
mounts=
shell_agent=on
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pq_name=*) name="${arg#pq_name=}" ;;
        pq_mount=*) mounts="$mounts ${arg#pq_mount=}" ;;
        pq_shell_agent=*) shell_agent="${arg#pq_shell_agent=}" ;;
    esac
done

if [ -e /sys/class/net/eth0 ]; then
    ip link set lo up || echo "pq: lo up failed"
    ip addr add 10.0.2.15/24 dev eth0 || echo "pq: eth0 address failed"
    ip link set eth0 up || echo "pq: eth0 up failed"
    ip route add default via 10.0.2.2 || echo "pq: default route failed"
else
    echo "pq: no eth0, networking skipped"
fi

mounted=
for spec in $mounts; do
    tag="${spec%%,*}"
    rest="${spec#*,}"
    at="${rest%%,*}"
    opts=trans=virtio,version=9p2000.L,msize=512000
    [ "${rest#*,}" = ro ] && opts="$opts,ro"
    if [ "$tag" = "$spec" ] || [ -z "$at" ]; then
        echo "pq: bad pq_mount=$spec (want TAG,/mount/point[,ro])"
        continue
    fi
    mkdir -p "$at"
    if mount -t 9p -o "$opts" "$tag" "$at"; then
        echo "pq: mounted $tag at $at"
        mounted="$mounted $at"
    else
        echo "pq: mount $tag failed"
    fi
done

# Tests steer the guest by dropping a script into a share; its output belongs on the console.
for at in $mounted; do
    if [ -f "$at/pq-init.sh" ]; then
        echo "pq: running $at/pq-init.sh"
        sh "$at/pq-init.sh"
        echo "pq: $at/pq-init.sh exited $?"
    fi
done

echo "pulumi-qemu test guest $name" > /www/index.html
httpd -p 80 -h /www || echo "pq: httpd failed"

# QMP system_powerdown is an ACPI button press; without a listener the guest would ignore it.
# acpid quietly gives up when it cannot open its log and pid files, hence /var/log and /var/run.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "pq: power button pressed, powering off" > /dev/console\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid || echo "pq: acpid failed"

# The command channel of VMs with agent "shell"; without that port it idles.
[ "$shell_agent" = off ] || sh /bin/pq-shell-agent &

# The qga variant of the guest carries Debian's qemu-ga; without udev there is no
# /dev/virtio-ports/ symlink, so find its port by name as the shell agent does.
if [ -x /usr/sbin/qemu-ga ]; then
    (
        for i in $(seq 1 30); do
            for f in /sys/class/virtio-ports/*/name; do
                if [ -r "$f" ] && [ "$(cat "$f")" = org.qemu.guest_agent.0 ]; then
                    d=${f%/name}
                    exec /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${d##*/}"
                fi
            done
            sleep 1
        done
    ) &
fi

echo "PQ-GUEST-READY"

# If init exits the kernel panics; sleeping here also lets ash reap orphaned children.
while true; do sleep 3600; done
