#!/bin/sh
# Runs inside the freshly bootstrapped root file system (chroot), before it becomes an image.
set -eu
# Services start only where the lab provisioning or a role asks for them.
systemctl disable nginx named ssh haproxy ipvsadm >/dev/null 2>&1 || true
# Units that have no job in a container.
systemctl mask systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  getty.target console-getty.service systemd-logind.service >/dev/null 2>&1 || true

# Docker mounts /proc/sys read-only. The lab hosts get CAP_SYS_ADMIN so that, like a real host,
# their own net.* sysctls are writable: remount at every boot, before systemd-sysctl applies
# /etc/sysctl.d (which is how the collection's settings survive a reboot).
cat > /etc/systemd/system/lab-proc-sys-rw.service <<'UNIT'
[Unit]
Description=Lab: make /proc/sys writable as on a real host
DefaultDependencies=no
Before=systemd-sysctl.service sysinit.target
ConditionPathIsReadWrite=!/proc/sys

[Service]
Type=oneshot
ExecStart=/bin/mount -o remount,rw /proc/sys

[Install]
WantedBy=sysinit.target
UNIT
systemctl enable lab-proc-sys-rw.service >/dev/null 2>&1

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
: > /etc/machine-id
