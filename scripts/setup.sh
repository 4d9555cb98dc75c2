#!/usr/bin/env bash
# Sourced by the README's commands: makes sure this machine has what pulumi-qemu needs.
# Debian packages are installed when running as root; otherwise the exact apt-get line is
# printed and we stop, rather than half-working without QEMU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio e2fsprogs xz-utils b3sum vde2 qemu-guest-agent)
# cloud-init seeds (xorriso; dosfstools + mtools for vfat), cloud-localds and isoinfo to check them against, the Debian test guest.
APT_PACKAGES+=(xorriso dosfstools mtools cloud-image-utils genisoimage mmdebstrap openssh-client)
# Remote hosts: the tests' "far host" is this machine's sshd on a loopback port, started by the tests themselves.
APT_PACKAGES+=(openssh-server)
# The cloud-like test image (tests/guest/cloudGuest.ts): GRUB for BIOS and UEFI, sfdisk for its GPT; OVMF for firmware "uefi".
APT_PACKAGES+=(grub-pc-bin grub-efi-amd64-bin fdisk ovmf)
# DHCP/DNS on every Network: dnsmasq in a user+network namespace (unshare: util-linux; ip: iproute2; vde_plug2tap: vde2).
# dhcp_release (dnsmasq-utils) ends a deleted VM's lease, so its name stops resolving.
APT_PACKAGES+=(dnsmasq-base dnsmasq-utils iproute2)
# Images by URL: zstd to unpack .zst images (xz-utils and gzip are above or essential); openssl makes the TLS tests' certificate, curl is the download benchmark's reference.
APT_PACKAGES+=(zstd openssl curl)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    line="apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        echo "setup: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # Install daemons without starting them (openssh-server would listen on port 22): the tests start their own.
        policy=/usr/sbin/policy-rc.d made_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
        fi
        $line >/dev/null || { ((made_policy)) && rm -f "$policy"; exit 1; }
        if ((made_policy)); then rm -f "$policy"; fi
    else
        echo "setup: missing Debian packages. Run as root:" >&2
        echo "  sudo apt-get update && sudo $line" >&2
        exit 1
    fi
fi

command -v node >/dev/null || { echo "setup: Node.js 20 or newer is needed (node not found)" >&2; exit 1; }

# npm ci only when the lock file changed since the last install, so repeated runs are quick.
stamp=node_modules/.pulumi-qemu-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "setup: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi

npm run --silent build
