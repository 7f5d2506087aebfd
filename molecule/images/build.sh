#!/usr/bin/env bash
# Build a systemd-ready Debian image for test hosts and the demo:
#   molecule/images/build.sh <suite> <image> [--force]
# debootstrap uses its default mirror on purpose: the host's apt setup decides
# what is reachable, not this script.
set -euo pipefail

suite=${1:?usage: build.sh <suite> <image> [--force]}
image=${2:?usage: build.sh <suite> <image> [--force]}
force=${3:-}

if [[ "$force" != "--force" ]] && podman image exists "$image"; then
    echo "$image exists (rebuild with --force)"
    exit 0
fi

rootfs=$(mktemp -d /var/tmp/chatstack-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# sudo because the playbooks "become" as on a real server; python3-apt lets
# Ansible's apt module work without a bootstrap step; iproute2 and procps
# give tests ss and ps.
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,sudo,python3,python3-apt,ca-certificates,iproute2,procps \
    "$suite" "$rootfs"

# A fresh machine-id per container, written by systemd at first boot.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# Units that only make sense on real hardware fail in a container; mask them
# so "systemctl is-system-running" reports running, not degraded.
for unit in getty@tty1.service systemd-remount-fs.service dev-hugepages.mount \
            sys-fs-fuse-connections.mount systemd-logind.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# No package lists: the first apt task must refresh them. Ansible's apt
# module judges freshness by the lists directory's mtime, so date it to 1970.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
touch -d @0 "$rootfs/var/lib/apt/lists"

tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=podman' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    - "$image"
echo "built $image"
