"""tests/vm/run-in-vm really boots Debian's kernel and reports the guest command's status.

Three boots of a few seconds each: an exit status passed through, the guest kernel (not the
host's) with act_nat loadable, and a broken boot reported as a failure rather than success.
"""

import os
import platform
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_IN_VM = os.path.join(ROOT, "tests", "vm", "run-in-vm")
CACHE = os.environ.get("RUN_IN_VM_CACHE", os.path.join(ROOT, ".cache", "vm"))
CURRENT = os.path.join(CACHE, "current")


def _why_no_vm():
    if os.geteuid() != 0:
        return "run-in-vm needs root"
    if not shutil.which("qemu-system-x86_64") or not os.path.isfile(os.path.join(CURRENT, "initramfs.cpio.gz")):
        return "run `bash tests/vm/setup.sh` first"
    return None


pytestmark = pytest.mark.skipif(_why_no_vm() is not None, reason=str(_why_no_vm()))


def run_in_vm(*argv, env=None):
    return subprocess.run(
        [RUN_IN_VM, "--timeout", "240", "--"] + list(argv),
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False,
    )


def test_exit_status_is_the_guest_commands():
    proc = run_in_vm("sh", "-c", "exit 7")
    assert proc.returncode == 7, proc.stderr


def test_guest_runs_debian_kernel_with_act_nat():
    guest_kver = os.path.basename(os.path.realpath(CURRENT))
    proc = run_in_vm("sh", "-c", "uname -r; echo to-stderr >&2; pwd; modprobe act_nat && grep -o '^act_nat ' /proc/modules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == guest_kver
    assert lines[0] != platform.release()  # the host's kernel has no act_nat
    assert lines[1] == ROOT  # the caller's cwd
    assert lines[2] == "act_nat"
    assert "to-stderr" in proc.stderr and "to-stderr" not in proc.stdout


def test_failed_boot_is_a_failure():
    env = dict(os.environ, RUN_IN_VM_APPEND="rdinit=/does-not-exist init=/does-not-exist")
    proc = run_in_vm("true", env=env)
    assert proc.returncode == 125, (proc.returncode, proc.stderr)
    assert "did not boot" in proc.stderr
