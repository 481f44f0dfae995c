"""Helpers shared by the benchmark phases (bench/run.py): commands, namespaces, module runs, statistics.

Standard library only: the phases run under any Python 3.9+; only bench/report.py needs matplotlib.
"""

import json
import os
import statistics
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
COLLECTIONS = os.path.join(REPO, ".collections")
MODULES = os.path.join(REPO, "plugins", "modules")
# The module runs with the collection's own tooling (pyroute2 is in .venv, not in .venv-bench).
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")


class BenchError(Exception):
    pass


def sh(argv, check=True, input_text=None, timeout=600, env=None):
    """Run argv (a list, or a string for bash -c); return CompletedProcess with text output."""
    if isinstance(argv, str):
        argv = ["bash", "-c", argv]
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        raise BenchError("command failed (rc %d): %s\n%s%s" % (proc.returncode, " ".join(argv), proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc


def ns_sh(ns, command, check=True, timeout=600):
    return sh(["ip", "netns", "exec", ns, "bash", "-c", command], check=check, timeout=timeout)


def netns_add(name):
    sh(["ip", "netns", "del", name], check=False)
    sh(["ip", "netns", "add", name])
    sh(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_del(name):
    sh(["ip", "netns", "del", name], check=False)


def module_args_file(path, args):
    payload = dict(args)
    payload.update({"_ansible_check_mode": False, "_ansible_diff": False, "_ansible_tmpdir": os.path.dirname(path)})
    with open(path, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)


def run_module(ns, name, argfile):
    """Run plugins/modules/<name>.py in namespace ns as Ansible would on the target; return (result, wall_s).

    The wall time covers the whole module process (Python start, imports, reading the device, applying), i.e.
    what the module costs on the managed host, without Ansible's connection and transfer overhead.
    """
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    cmd = ["ip", "netns", "exec", ns, VENV_PYTHON, os.path.join(MODULES, name + ".py"), argfile]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise BenchError("module %s printed no JSON (rc %d): %s %s" % (name, proc.returncode, proc.stdout[-1000:], proc.stderr[-1000:]))
    if result.get("failed"):
        raise BenchError("module %s failed: %s" % (name, result.get("msg")))
    return result, wall


def processes(match):
    """{pid: comm} of every process (or kernel thread) whose name satisfies match; one that exits meanwhile is left out."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/comm" % pid) as handle:
                    comm = handle.read().strip()
            except OSError:
                continue
            if match(comm):
                found[int(pid)] = comm
    return found


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    """(min, max) of the non-missing values, for the report's 'noise' columns."""
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def loadavg():
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def cpu_times():
    """Machine-wide (busy, total) jiffies from /proc/stat, to report how loaded the machine was."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class MachineLoad(object):
    """Busy share of all CPUs between start() and stop() (everything on the machine: us and others)."""

    def start(self):
        self._t0 = cpu_times()
        return self

    def stop(self):
        busy0, total0 = self._t0
        busy1, total1 = cpu_times()
        return round((busy1 - busy0) / float(max(total1 - total0, 1)), 3)


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as handle:
        return json.load(handle)
