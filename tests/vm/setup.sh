#!/usr/bin/env bash
# Prepare everything tests/vm/run-in-vm needs: qemu and busybox from Debian, the stock Debian
# kernel (linux-image-amd64's current dependency) with its modules, an uncompressed vmlinux and a
# small busybox initramfs. Idempotent: a second run only checks and rebuilds the initramfs.
#
# Nothing here is tracked by git: it all lands in $RUN_IN_VM_CACHE (default <repo>/.cache/vm).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${RUN_IN_VM_CACHE:-$ROOT/.cache/vm}

log() { printf 'vm-setup: %s\n' "$*" >&2; }
die() { printf 'vm-setup: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages)"

# --- host packages --------------------------------------------------------------------------
# qemu-system-x86: the emulator; busybox-static: initramfs userland (and /bin/busybox in the guest);
# cpio: to pack the initramfs; kmod: depmod here, and /sbin/modprobe for the guest, which runs the
# host's userland.
need_pkgs=()
for p in qemu-system-x86 busybox-static cpio kmod xz-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        log "apt lists missing: apt-get update"
        apt-get update -qq
    fi
    log "installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi

# --- the kernel -------------------------------------------------------------------------------
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kpkg" ]; then
    apt-get update -qq
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64's kernel package"
kver=${kpkg#linux-image-}                       # e.g. 6.1.0-56-amd64
KDIR=$CACHE/$kver
mkdir -p "$KDIR"

if [ ! -e "$KDIR/.unpacked" ]; then
    log "fetching $kpkg"
    rm -rf "$KDIR/root" "$KDIR"/*.deb
    # apt-get's own failure shows on stderr; the check below says what is missing
    (cd "$KDIR" && apt-get download -qq "$kpkg" 2>&1 | grep -v 'unsandboxed' >&2) || true
    debs=("$KDIR/$kpkg"_*.deb)
    deb=${debs[0]}
    [ -f "$deb" ] || die "apt-get download $kpkg produced no .deb"
    dpkg-deb -x "$deb" "$KDIR/root"
    [ -d "$KDIR/root/lib/modules/$kver" ] || die "$deb has no lib/modules/$kver"
    depmod -b "$KDIR/root" "$kver"
    rm -f "$deb"
    touch "$KDIR/.unpacked"
fi

# Uncompressed vmlinux: qemu boots it directly through its PVH entry point, skipping the
# bzImage self-decompression (the slow part of a TCG boot). Same idea as the kernel's
# scripts/extract-vmlinux: find the compressed payload's magic, decompress from there, keep the
# first result that is an ELF file.
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    for pair in "fd377a585a00:xz -dcq" "1f8b08:gzip -dcq" "28b52ffd:zstd -dcq" "5d000000:xz -dcq --format=lzma"; do
        magic=${pair%%:*}; tool=${pair#*:}
        command -v "${tool%% *}" >/dev/null || continue
        for off in $(od -An -v -tx1 -w1 "$img" | tr -d ' \n' | grep -ob "$magic" | cut -d: -f1 | head -n 5); do
            [ $((off % 2)) = 0 ] || continue        # hex string offset -> byte offset must be whole
            tail -c +$((off / 2 + 1)) "$img" | $tool >"$out.tmp" 2>/dev/null || true
            if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
                mv "$out.tmp" "$out"; return 0
            fi
        done
    done
    rm -f "$out.tmp"; return 1
}
if [ ! -s "$KDIR/vmlinux" ]; then
    if extract_vmlinux "$KDIR/root/boot/vmlinuz-$kver" "$KDIR/vmlinux"; then
        log "extracted uncompressed vmlinux"
    else
        log "could not extract vmlinux; run-in-vm will boot the bzImage (slower)"
    fi
fi

# --- initramfs ----------------------------------------------------------------------------------
# Stage 1 only: load the modules needed to reach the host's root over virtio-9p, mount it
# read-only, and hand over to tests/vm/guest-init.sh read from there (so edits to the guest side
# take effect without rebuilding anything).
IRD=$(mktemp -d)
trap 'rm -rf "$IRD"' EXIT
mkdir -p "$IRD"/{bin,dev,proc,sys,lower,newroot,modules}
cp /bin/busybox "$IRD/bin/busybox"
: >"$IRD/modules/order"
for m in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe -d "$KDIR/root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$IRD/modules/"
    basename "$ko" >>"$IRD/modules/order"
done
cat >"$IRD/init" <<'EOF'
#!/bin/busybox sh
# run-in-vm stage 1 (initramfs). Any failure: say why on the console and power off, so the host
# sees no "booted" marker and reports a failed boot.
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "run-in-vm stage1: $*" >/dev/console; poweroff -f; }
mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev || fail "basic mounts"
for ko in $(cat /modules/order); do insmod "/modules/$ko" || fail "insmod $ko"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p mount of the host root"
stage2=
for w in $(cat /proc/cmdline); do case $w in rivm.stage2=*) stage2=${w#rivm.stage2=};; esac; done
[ -n "$stage2" ] && [ -f "/lower$stage2" ] || fail "stage 2 script '$stage2' not found on the host root"
exec /bin/busybox sh "/lower$stage2" stage2
EOF
chmod +x "$IRD/init"
(cd "$IRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 >"$KDIR/initramfs.cpio.gz.tmp")
mv "$KDIR/initramfs.cpio.gz.tmp" "$KDIR/initramfs.cpio.gz"

ln -sfn "$kver" "$CACHE/current"
log "ready: kernel $kver in $KDIR"
