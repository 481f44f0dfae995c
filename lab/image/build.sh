#!/usr/bin/env bash
# Build the lab's host image locally (no registry can be reached on the lab machines).
# One image serves every lab host (client, proxy, router, upstreams): systemd as PID 1 plus the
# real peers the methods are tested with. Idempotent: an image whose tag matches the package list
# and this script's content is kept.
set -euo pipefail

IMAGE_NAME=${LAB_IMAGE_NAME:-netops-ipt-lab}
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=(
  systemd systemd-sysv dbus python3 python3-apt python3-pyroute2
  nginx libnginx-mod-stream bind9 bind9-dnsutils curl dnsperf wrk
  iproute2 nftables iptables tcpdump procps iputils-ping kmod
  openssh-server openssh-client sudo keepalived
  haproxy ipvsadm
)

here=$(cd "$(dirname "$0")" && pwd)
# The tag follows the inputs, so a changed package list or recipe builds a new image.
tag=$( (printf '%s\n' "${PACKAGES[@]}"; cat "$0" "$here"/rootfs-setup.sh) | sha256sum | cut -c1-12)
ref="$IMAGE_NAME:$tag"

if docker image inspect "$ref" >/dev/null 2>&1; then
  echo "image $ref present"
else
  command -v debootstrap >/dev/null || { echo "debootstrap missing: run 'make deps'" >&2; exit 1; }
  root=$(mktemp -d /var/tmp/ipt-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $SUITE into $root (about a minute)"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$root" "$MIRROR" >/dev/null
  install -m 0755 "$here/rootfs-setup.sh" "$root/tmp/rootfs-setup.sh"
  chroot "$root" /tmp/rootfs-setup.sh
  rm -f "$root/tmp/rootfs-setup.sh"
  tar -C "$root" -c . | docker import -c 'CMD ["/sbin/init"]' - "$ref" >/dev/null
  echo "image $ref built"
fi
docker tag "$ref" "$IMAGE_NAME:latest"
