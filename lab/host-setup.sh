#!/usr/bin/env bash
# Prepares this machine (Debian 12, root) to build and run the lab and the tests:
# the Debian packages they need and a running docker engine. Idempotent; safe under CI.
set -euo pipefail

PACKAGES=(
  docker.io debootstrap python3-venv iproute2 nftables iptables tcpdump strace
  qemu-system-x86 busybox-static cpio kmod rsync openssh-client shellcheck
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The docker engine: nothing starts it on these machines.
if ! docker info >/dev/null 2>&1; then
  if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
    systemctl start docker
  else
    echo "starting dockerd"
    mkdir -p /var/log
    setsid nohup dockerd >/var/log/dockerd-netops-lab.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "docker engine did not start; see /var/log/dockerd-netops-lab.log" >&2; exit 1; }
fi
echo "host ready: docker $(docker version -f '{{.Server.Version}}')"
