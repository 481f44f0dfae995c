"""The article's way for real, in the qemu VM (tests/vm/run-in-vm: Debian's stock kernel, which has act_nat).

    python vmcompare.py N            (host) boots the VM, runs the inner part, prints JSON
    python vmcompare.py --inner N    (guest) measures

In one guest network namespace with a veth device, for N upstream addresses (every other address):
  module_apply_s   tc_nat_filter with backend=tc (htb root, u32 hash table, one filter with `action nat`
                   per upstream, over netlink), as the module process
  module_rerun_s   the same again, nothing to change
  per_process_s    the article's commands: `tc qdisc add dev D root handle 10: htb`, then one
                   `tc filter add dev D parent 10: protocol ip prio 10 u32 match ip src X/32 match ip sport 53 0xffff
                   action nat egress X VIP` process per upstream
Everything in the guest runs under TCG emulation (15-25x slower than the host, Python and tc alike): only
the ratio means something.
"""

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO, module_args_file, netns_add, ns_sh, run_module  # noqa: E402
from controlplane import startup, startup_text  # noqa: E402

VIP = "192.168.99.10"
BASE = ipaddress.ip_address("10.0.0.1")
NS = "bvm"


def inner(n):
    addresses = [str(BASE + 2 * i) for i in range(n)]
    workdir = tempfile.mkdtemp(prefix="netops-bench-vm-")
    netns_add(NS)
    ns_sh(NS, "ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up")
    argfile = os.path.join(workdir, "rules.json")
    module_args_file(argfile, {"device": "v0", "backend": "tc", "rules": [
        {"src": a, "protocol": "udp", "sport": 53, "nat_to": VIP} for a in addresses]})
    result, apply_s = run_module(NS, "tc_nat_filter", argfile)
    ok = result.get("changed") and result.get("backend") == "tc" and len(result.get("rules", [])) == n
    result, rerun_s = run_module(NS, "tc_nat_filter", argfile)
    ok = ok and not result.get("changed")
    script = os.path.join(workdir, "article.sh")
    with open(script, "w") as handle:
        handle.write("set -e\ntc qdisc add dev v1 root handle 10: htb\n")
        for a in addresses:
            handle.write("tc filter add dev v1 parent 10: protocol ip prio 10 u32 match ip src %s/32 match ip sport 53 0xffff "
                         "action nat egress %s %s\n" % (a, a, VIP))
    start = time.perf_counter()
    ns_sh(NS, "bash %s" % script, timeout=1800)
    per_process_s = time.perf_counter() - start
    count = int(ns_sh(NS, "tc filter show dev v1 | grep -c 'nat egress'").stdout)
    ok = ok and count == n
    fixed = startup(repeat=3)
    return {"n": n, "startup": fixed, "module_apply_s": apply_s, "module_rerun_s": rerun_s, "per_process_s": per_process_s,
            "per_process_filters": count, "kernel": os.uname().release, "ok": bool(ok)}


def outer(n, timeout=900):
    cmd = [os.path.join(REPO, "tests", "vm", "run-in-vm"), "--timeout", str(timeout), "--",
           os.path.join(REPO, ".venv", "bin", "python"), os.path.abspath(__file__), "--inner", str(n)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"n": n, "speedup": None, "reason": "run-in-vm failed (rc %d): %s" % (proc.returncode, proc.stderr[-600:])}
    data = json.loads(lines[-1])
    data["vm_wall_s"] = wall
    if not data.get("ok"):
        data.update(speedup=None, reason="the VM run did not produce the expected rules: %s" % lines[-1])
        return data
    data["speedup"] = data["per_process_s"] / data["module_apply_s"]
    data["detail"] = ("VM (Debian kernel %s, TCG): %d `tc filter ... action nat` processes %.2f s vs module (tc backend) "
                      "%.2f s; no-change re-run %.2f s; every figure 15-25x slower than on the host"
                      % (data["kernel"], n, data["per_process_s"], data["module_apply_s"], data["module_rerun_s"]))
    fixed = data.get("startup")
    if fixed:
        data["detail"] += ("; %s, imports read over 9p), so even a module that applied nothing could not be more "
                           "than %.1fx faster than the %d processes; everything after start-up (reading the device, "
                           "the diff, the netlink requests) takes %.2f s (%.1f ms per upstream, against %.1f ms per tc "
                           "process)"
                           % (startup_text(fixed, " in the VM", 2), data["per_process_s"] / fixed["pyroute2_s"], n,
                              data["module_apply_s"] - fixed["pyroute2_s"],
                              1000 * (data["module_apply_s"] - fixed["pyroute2_s"]) / n, 1000 * data["per_process_s"] / n))
    return data


if __name__ == "__main__":
    if sys.argv[1] == "--inner":
        print(json.dumps(inner(int(sys.argv[2]))))
    else:
        print(json.dumps(outer(int(sys.argv[1])), indent=2))
