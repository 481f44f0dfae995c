# shellcheck shell=sh
# run-in-vm, guest side. Runs under busybox sh as PID 1; read from the host's root over 9p.
#   stage2 (still in the initramfs): build the writable root (host / read-only + tmpfs overlay),
#           mount /proc /sys /dev /run, make the Debian kernel's modules visible at
#           /lib/modules/<ver>, then switch_root into it.
#   stage3 (PID 1 of the new root): run the host-prepared job script with stdout on ttyS1 and
#           stderr on ttyS2, report "booted" and "rc N" on ttyS3, power off.
# Serial ports (set up by run-in-vm): ttyS0 kernel console, ttyS1 stdout, ttyS2 stderr, ttyS3 control.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BB=/bin/busybox

fail() {
    echo "run-in-vm $STAGE: $*" >/dev/console
    $BB poweroff -f
    exit 1
}

mark() {  # timestamped note in the kernel log (on the console with RUN_IN_VM_APPEND=loglevel=7)
    echo "<6>run-in-vm: $*" >/dev/kmsg 2>/dev/null
}

arg() {  # value of rivm.<name>= on the kernel command line
    read -r cmdline </proc/cmdline
    for w in $cmdline; do  # split on blanks: the parameters are plain words (run-in-vm checks the paths)
        case $w in "rivm.$1="*) echo "${w#"rivm.$1="}"; return;; esac
    done
}

STAGE=$1
case $STAGE in
stage2)
    mark stage2
    kver=$(arg kver); moddir=$(arg moddir); self=$(arg stage2)
    mkdir -p /rw || fail "mkdir /rw"
    mount -t tmpfs -o mode=755 rw /rw || fail "tmpfs for the overlay"
    mkdir -p /rw/upper /rw/work
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
        || fail "overlay over the host root"
    R=/newroot
    for fs in proc sys dev; do
        mount --move "/$fs" "$R/$fs" || fail "moving /$fs"
    done
    mkdir -p $R/dev/pts $R/dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $R/dev/pts
    mount -t tmpfs -o mode=1777 shm $R/dev/shm
    mount -t tmpfs -o mode=755,nosuid,nodev run $R/run || fail "tmpfs on /run"
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
    # The guest's userland is the host's; only the modules must be the guest kernel's.
    [ -d "$R$moddir" ] || fail "kernel modules not found at $moddir on the host"
    mkdir -p "$R/lib/modules/$kver" || fail "mkdir /lib/modules/$kver"
    mount --bind "$R$moddir" "$R/lib/modules/$kver" || fail "bind-mounting the modules"
    exec $BB switch_root $R $BB sh "$self" stage3
    fail "switch_root"
    ;;
stage3)
    mark stage3
    job=$(arg job)
    $BB hostname run-in-vm
    ip link set lo up 2>/dev/null
    for t in 1 2 3; do $BB stty -F /dev/ttyS$t raw -echo || fail "stty ttyS$t"; done
    [ -f "$job/cmd" ] || fail "job script $job/cmd not found"
    echo booted >/dev/ttyS3
    mark "running the command"
    mkdir -p /run/vm || fail "mkdir /run/vm"
    $BB mkfifo /run/vm/out /run/vm/err || fail "mkfifo"
    $BB cat /run/vm/out >/dev/ttyS1 & c1=$!
    $BB cat /run/vm/err >/dev/ttyS2 & c2=$!
    /bin/bash "$job/cmd" </dev/null >/run/vm/out 2>/run/vm/err
    rc=$?
    mark "command exited $rc"
    # Whatever the command left running (daemons holding stdout open) would keep the cats from
    # seeing EOF: end it, as a container's processes end with the container.
    for sig in TERM KILL; do
        left=
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            case $p in 1|"$$"|"$c1"|"$c2") continue;; esac
            [ -e "/proc/$p/exe" ] && kill "-$sig" "$p" 2>/dev/null && left=1  # kernel threads have no exe
        done
        [ -z "$left" ] && break
        [ $sig = TERM ] && $BB usleep 200000
    done
    wait $c1 $c2  # their last close of the tty waits until the UART has sent everything
    echo "rc $rc" >/dev/ttyS3
    $BB poweroff -f
    ;;
*)
    echo "usage: guest-init.sh stage2|stage3 (run by run-in-vm inside the VM only)" >&2
    exit 2
    ;;
esac
