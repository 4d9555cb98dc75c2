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
        pq_check=*) checks="$checks ${arg#pq_check=}" ;;
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

# Private NICs, in dracut's syntax as the provider writes it: ifname=NAME:MAC names the NIC
# with that MAC, ip=ADDR:::NETMASK:HOST:NAME:off gives it a static address, ip=NAME:dhcp asks
# the network's DHCP server (busybox udhcpc, with the script below applying what it hands out).
cat > /etc/udhcpc.script <<'EOF'
#!/bin/sh
# udhcpc's hook: $1 is the event; the lease is in the environment ($mask is the prefix length).
case "$1" in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$hostname" ] && hostname "$hostname"
        { [ -n "$domain" ] && echo "search $domain"; for s in $dns; do echo "nameserver $s"; done; } > /etc/resolv.conf
        echo "pq: $interface has $ip/$mask by dhcp at $(cut -d' ' -f1 /proc/uptime) s (dns $dns, domain $domain)" ;;
esac
exit 0
EOF
chmod 755 /etc/udhcpc.script
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ifname=*:*)
            want="${arg#ifname=}"
            for d in /sys/class/net/*; do
                [ "$(cat "$d/address")" = "${want#*:}" ] && ip link set dev "${d##*/}" name "${want%%:*}"
            done ;;
    esac
done
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ip=*:dhcp)
            dev="${arg#ip=}"; dev="${dev%:dhcp}"
            ip link set "$dev" up
            udhcpc -i "$dev" -n -q -t 10 -T 1 -s /etc/udhcpc.script 2>/dev/null | grep '^pq:' || echo "pq: $dev dhcp failed" ;;
        ip=*:*:*:*:*:*:*)
            oldifs="$IFS"; IFS=:; set -- ${arg#ip=}; IFS="$oldifs"
            eval "$(ipcalc -p "$1" "$4")"
            if ip addr add "$1/$PREFIX" dev "$6" && ip link set "$6" up; then
                hostname "$5"
                echo "pq: $6 has $1/$PREFIX"
            else
                echo "pq: $6 address $1 failed"
            fi ;;
    esac
done

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

# pq_check=ADDR (repeatable): fetch ADDR's page over the network and say how it went. Debian's
# busybox wget crashes when given -T, so a watchdog bounds each try instead.
if [ -n "$checks" ]; then
    ok=0; failed=0
    for t in $checks; do
        body=
        for try in 1 2 3 4 5; do
            rm -f /tmp/pq-check
            wget -q -O /tmp/pq-check "http://$t/" 2>/dev/null & w=$!
            ( sleep 5; kill $w 2>/dev/null ) & k=$!
            wait $w && body=$(cat /tmp/pq-check)
            kill $k 2>/dev/null
            [ -n "$body" ] && break
            sleep 1
        done
        if [ -n "$body" ]; then echo "pq-check: $t ok: $body"; ok=$((ok+1)); else echo "pq-check: $t failed"; failed=$((failed+1)); fi
    done
    echo "pq-check: done, $ok ok, $failed failed"
fi

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
