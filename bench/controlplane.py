"""Control plane: how long tc_nat_filter takes to apply N upstreams, against one process per upstream.

Host kernel, one network namespace with a veth device. For N in COUNTS (N upstream addresses, every other
address so that no two collapse into one prefix, each rewritten to the VIP for udp sport 53):

  module_apply     the module process (`python tc_nat_filter.py args.json`, Ansible's calling convention in
                   the managed host) applying N rules to an empty device: Python start, imports, reading the
                   device, one atomic `nft -f -`. Backend `auto` = nftables here (this kernel has no act_nat).
  module_rerun     the same arguments again: nothing to change (the idempotent re-run of a playbook).
  per_process_nft  the article's way with the backend that runs here: one `nft add rule` process per upstream
                   (`ip saddr X udp sport 53 ip saddr set VIP` in a netdev egress chain), from a shell loop.
  per_process_tc   the article's own commands, one `tc filter add ... u32 match ip src X match ip sport 53`
                   process per upstream on an htb root, WITHOUT `action nat egress X VIP`: this kernel cannot
                   load act_nat (nor act_gact), so the filter is added with `flowid` instead. Same process and
                   netlink round trip per upstream; the nat action's few bytes are missing.

Each is run REPEAT times on a clean device (medians reported). The comparison with the tc backend and
`action nat` for real runs in the qemu VM (bench/vmcompare.py), where everything is equally slowed.
"""

import ipaddress
import os
import subprocess
import tempfile
import time

from common import COLLECTIONS, VENV_PYTHON, MachineLoad, loadavg, median, module_args_file, netns_add, netns_del, ns_sh, run_module, sh, spread

COUNTS = (1, 16, 256, 1024, 4096)
VIP = "192.168.99.10"
BASE = ipaddress.ip_address("10.0.0.1")
NS = "bcp-bench"


def upstreams(count):
    return [str(BASE + 2 * i) for i in range(count)]


def _script(lines):
    fd, path = tempfile.mkstemp(prefix="netops-bench-cp-", suffix=".sh")
    with os.fdopen(fd, "w") as handle:
        handle.write("set -e\n" + "\n".join(lines) + "\n")
    return path


def _timed_script(path):
    start = time.perf_counter()
    ns_sh(NS, "bash %s" % path, timeout=900)
    return time.perf_counter() - start


def _clean():
    ns_sh(NS, "nft flush ruleset; tc qdisc del dev cp1 root 2>/dev/null || true")


def per_process_nft(addresses):
    path = _script(["nft add table netdev art", "nft add chain netdev art egress '{ type filter hook egress device \"cp0\" priority 0; }'"]
                   + ["nft add rule netdev art egress ip saddr %s udp sport 53 ip saddr set %s" % (a, VIP) for a in addresses])
    try:
        _clean()
        elapsed = _timed_script(path)
        count = int(ns_sh(NS, "nft -a list chain netdev art egress | grep -c 'saddr set'").stdout)
        if count != len(addresses):
            raise RuntimeError("per-process nft: %d rules, expected %d" % (count, len(addresses)))
        return elapsed
    finally:
        os.unlink(path)


def per_process_tc(addresses):
    path = _script(["tc qdisc add dev cp1 root handle 10: htb"]
                   + ["tc filter add dev cp1 parent 10: protocol ip prio 10 u32 match ip src %s match ip sport 53 0xffff flowid 10:1" % a
                      for a in addresses])
    try:
        _clean()
        elapsed = _timed_script(path)
        count = int(ns_sh(NS, "tc filter show dev cp1 | grep -c 'match .*/ffffffff at 12'").stdout)
        if count != len(addresses):
            raise RuntimeError("per-process tc: %d filters, expected %d" % (count, len(addresses)))
        return elapsed
    finally:
        os.unlink(path)


def startup(repeat=5):
    """The module process's fixed cost, split: the interpreter alone, + Ansible's module_utils, + pyroute2.

    Medians of `python -c ...` wall times (the same interpreter and PYTHONPATH as the module runs with)."""
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    steps = (("python_s", "pass"), ("ansible_s", "import ansible.module_utils.basic"),
             ("pyroute2_s", "import ansible.module_utils.basic, pyroute2, pyroute2.netlink.rtnl"))
    out = {}
    for key, code in steps:
        times = []
        for dummy in range(repeat):
            start = time.perf_counter()
            subprocess.run([VENV_PYTHON, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
        out[key] = median(times)
    return out


def startup_text(fixed, where="", digits=3):
    """startup()'s figures as the report says them (without the closing parenthesis, for the caller's last item)."""
    f = "%%.%df s" % digits
    return (("the module process's fixed cost%s is " + f + " (interpreter " + f + ", Ansible's module_utils +" + f
             + ", pyroute2 +" + f) % (where, fixed["pyroute2_s"], fixed["python_s"], fixed["ansible_s"] - fixed["python_s"],
                                      fixed["pyroute2_s"] - fixed["ansible_s"]))


def run(counts=COUNTS, repeat=3, log=print):
    workdir = tempfile.mkdtemp(prefix="netops-bench-cp-")
    load = MachineLoad().start()
    netns_add(NS)
    results = {}
    try:
        ns_sh(NS, "ip link add cp0 type veth peer name cp1 && ip link set cp0 up && ip link set cp1 up")
        for n in counts:
            addresses = upstreams(n)
            argfile = os.path.join(workdir, "rules-%d.json" % n)
            module_args_file(argfile, {"device": "cp0", "backend": "auto", "rules": [
                {"src": a, "protocol": "udp", "sport": 53, "nat_to": VIP} for a in addresses]})
            applies, reruns, nft_pp, tc_pp = [], [], [], []
            backend = None
            for dummy in range(repeat):
                _clean()
                result, wall = run_module(NS, "tc_nat_filter", argfile)
                if not result.get("changed") or len(result.get("rules", [])) != n:
                    raise RuntimeError("apply of %d rules: changed=%s rules=%d" % (n, result.get("changed"), len(result.get("rules", []))))
                backend = result.get("backend")
                applies.append(wall)
                result, wall = run_module(NS, "tc_nat_filter", argfile)
                if result.get("changed"):
                    raise RuntimeError("re-run of %d rules reported a change" % n)
                reruns.append(wall)
            # one process per upstream: seconds to minutes at 4096, so fewer repeats there
            for dummy in range(repeat if n <= 1024 else 1):
                nft_pp.append(per_process_nft(addresses))
                tc_pp.append(per_process_tc(addresses))
            results[str(n)] = {
                "backend": backend,
                "module_apply_s": median(applies), "module_apply_range": spread(applies),
                "module_rerun_s": median(reruns), "module_rerun_range": spread(reruns),
                "per_process_nft_s": median(nft_pp), "per_process_nft_range": spread(nft_pp),
                "per_process_tc_s": median(tc_pp), "per_process_tc_range": spread(tc_pp),
                "speedup_vs_nft_processes": median(nft_pp) / median(applies),
                "speedup_vs_tc_processes": median(tc_pp) / median(applies),
            }
            log("  control plane N=%d: module %.3f s, re-run %.3f s, nft per rule %.3f s, tc per rule %.3f s"
                % (n, median(applies), median(reruns), median(nft_pp), median(tc_pp)))
    finally:
        netns_del(NS)
        sh(["rm", "-rf", workdir])
    fixed = startup()
    log("  control plane start-up: python %.3f s, + ansible module_utils %.3f s, + pyroute2 %.3f s"
        % (fixed["python_s"], fixed["ansible_s"], fixed["pyroute2_s"]))
    return {
        "where": "host kernel %s, one network namespace, veth device" % os.uname().release,
        "startup": fixed,
        "repeat": repeat,
        "counts": results,
        "machine_busy_share": load.stop(),
        "loadavg_after": loadavg(),
    }


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(counts=(1, 256, 1024), repeat=2, log=lambda m: print(m, file=sys.stderr)), indent=2))
