"""Per-packet cost of the stateless rewrite: forwarding throughput through a router namespace.

Four identical chains of three network namespaces (host only, veth pairs, nothing leaves them):

    src (blaster, 10.0.x.y:53) --veth--> mid (forwards; rewrite on the egress of m1) --veth--> sink (counts, drops)

  forward       mid forwards, no rewrite table (the reference)
  empty_egress  the same with an empty netdev egress chain on m1: the cost of the hook itself (every packet
                leaving m1 walks the egress hook), which any egress rewrite pays before its first rule
  rewrite_1     tc_nat_filter (nftables backend, as `auto` picks on this kernel) with 1 rule, matching
  rewrite_4096  the same with 4096 rules (4096 upstream addresses, none adjacent so nothing collapses); the
                blaster sends from the LAST upstream address
  linear_1      one plain rule (`ip saddr X udp sport 53 ip saddr set VIP`), no map: the mangle itself (with its
                IP and UDP checksum updates) without the module's lookup
  hash_1        the module's rule over a hash map (no `flags interval`) instead of its interval map: what the
                lookup's set type costs (an interval map with a concatenated key is the pipapo set)
  linear_4096   contrast, not a target: the article's shape, one rule per upstream in a linear nft chain,
                matching rule last (what one `tc filter`/`nft add rule` per upstream builds)

The rules are installed by running the module itself, so the measured ruleset is exactly what it writes.
The sink's netdev ingress counters count what arrived and how much of it was rewritten to the VIP (a
correctness check: every packet of a rewrite chain must arrive rewritten, none of the forward chain).

veth has no queue of its own: a datagram is forwarded, rewritten and dropped by the sink inside the
blaster's sendmmsg(), on the blaster's CPU. So delivered packets per CPU-second of the blaster thread is
1 / (per-packet cost of the whole path), and it is unaffected by other jobs taking the CPU away (the wall-
clock rate is reported too). Rounds are interleaved (chain order rotated each round); medians are reported.
"""

import ipaddress
import json
import os
import tempfile

from common import (BENCH, BenchError, MachineLoad, loadavg, median, module_args_file, netns_add, netns_del, ns_sh,
                    processes, run_module, sh, spread)

CHAINS = ("forward", "empty_egress", "linear_1", "hash_1", "rewrite_1", "rewrite_4096", "linear_4096")
VIP = "192.168.99.10"
SINK = "192.168.99.1"
BASE = ipaddress.ip_address("10.0.0.1")


def upstreams(count):
    """count upstream addresses, every other one (no two collapse into a prefix)."""
    return [str(BASE + 2 * i) for i in range(count)]


def _mac(ns, dev):
    return json.loads(sh(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)[0]["address"]


def _counters(ns):
    out = ns_sh(ns, "nft -j list table netdev bench").stdout
    values = {}
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                values[rule.get("comment")] = expr["counter"]["packets"]
    return values


class Chain(object):
    def __init__(self, index, kind, workdir):
        self.kind = kind
        self.src, self.mid, self.sink = ("bpp%d-%s" % (index, role) for role in ("src", "mid", "sink"))
        self.workdir = workdir
        self.rules = 0
        self.source = str(BASE)

    def build(self):
        for ns in (self.src, self.mid, self.sink):
            netns_add(ns)
        sh(["ip", "-n", self.src, "link", "add", "s", "type", "veth", "peer", "name", "m0", "netns", self.mid])
        sh(["ip", "-n", self.mid, "link", "add", "m1", "type", "veth", "peer", "name", "k", "netns", self.sink])
        ns_sh(self.src, "ip link set s up && ip addr add 10.0.255.1/16 dev s")
        ns_sh(self.mid, "ip link set m0 up && ip link set m1 up && ip addr add 10.0.255.254/16 dev m0 && "
                        "ip addr add %s/24 dev m1 && sysctl -qw net.ipv4.ip_forward=1" % VIP)
        ns_sh(self.sink, "ip link set k up && ip addr add %s/24 dev k" % SINK)
        # static neighbours: no ARP during the measurement
        sh(["ip", "-n", self.src, "neigh", "replace", "10.0.255.254", "lladdr", _mac(self.mid, "m0"), "dev", "s", "nud", "permanent"])
        sh(["ip", "-n", self.mid, "neigh", "replace", SINK, "lladdr", _mac(self.sink, "k"), "dev", "m1", "nud", "permanent"])
        ns_sh(self.src, "ip route add default via 10.0.255.254")
        sh(["ip", "netns", "exec", self.sink, "nft", "-f", "-"], input_text=(
            'table netdev bench {\n chain in {\n  type filter hook ingress device "k" priority 0;\n'
            '  ip saddr %s udp sport 53 counter drop comment "rewritten"\n'
            '  meta l4proto udp counter drop comment "other"\n }\n}\n' % VIP))

        if self.kind.startswith("rewrite_"):
            self.rules = int(self.kind.split("_")[1])
            addresses = upstreams(self.rules)
            argfile = os.path.join(self.workdir, "%s.json" % self.kind)
            module_args_file(argfile, {"device": "m1", "backend": "auto", "rules": [
                {"src": a, "protocol": "udp", "sport": 53, "nat_to": VIP} for a in addresses]})
            result = run_module(self.mid, "tc_nat_filter", argfile)[0]
            if result.get("backend") != "nftables":
                raise BenchError("expected the nftables backend on this kernel, got %s" % result.get("backend"))
            self.source = addresses[-1]
        elif self.kind == "empty_egress":
            sh(["ip", "netns", "exec", self.mid, "nft", "-f", "-"], input_text=(
                'table netdev empty {\n chain egress {\n  type filter hook egress device "m1" priority 0;\n }\n}\n'))
        elif self.kind == "hash_1":
            self.rules = 1
            self.source = upstreams(1)[0]
            sh(["ip", "netns", "exec", self.mid, "nft", "-f", "-"], input_text=(
                'table netdev hash {\n map snat4 {\n  type ipv4_addr . inet_proto . inet_service : ipv4_addr\n'
                '  elements = { %s . udp . 53 : %s }\n }\n chain egress {\n'
                '  type filter hook egress device "m1" priority 0;\n'
                '  ip saddr set ip saddr . meta l4proto . th sport map @snat4\n }\n}\n' % (self.source, VIP)))
        elif self.kind.startswith("linear_"):
            self.rules = int(self.kind.split("_")[1])
            addresses = upstreams(self.rules)
            lines = ['table netdev linear {', ' chain egress {', '  type filter hook egress device "m1" priority 0;']
            lines += ["  ip saddr %s udp sport 53 ip saddr set %s" % (a, VIP) for a in addresses]
            lines += [" }", "}"]
            sh(["ip", "netns", "exec", self.mid, "nft", "-f", "-"], input_text="\n".join(lines) + "\n")
            self.source = addresses[-1]
        ns_sh(self.src, "ip addr add %s/32 dev s" % self.source)

    def blast(self, seconds):
        before = _counters(self.sink)
        out = sh(["ip", "netns", "exec", self.src, os.path.join(self.workdir, "blaster"),
                  self.source, "53", SINK, "9", str(seconds)]).stdout
        after = _counters(self.sink)
        run = json.loads(out)
        run["rewritten"] = after["rewritten"] - before["rewritten"]
        run["delivered"] = run["rewritten"] + after["other"] - before["other"]
        run["pps_wall"] = run["delivered"] / run["wall_s"]
        run["pps_cpu"] = run["delivered"] / run["cpu_s"] if run["cpu_s"] > 0 else None
        return run

    def destroy(self):
        for ns in (self.src, self.mid, self.sink):
            netns_del(ns)


def _ksoftirqd_ns():
    """Total runtime (ns) of the ksoftirqd threads: softirq work deferred out of the blaster's context."""
    total = 0
    for pid in processes(lambda comm: comm.startswith("ksoftirqd/")):
        try:
            with open("/proc/%d/schedstat" % pid) as handle:
                total += int(handle.read().split()[0])
        except OSError:
            continue
    return total


def run(rounds=7, seconds=1.0, log=print):
    workdir = tempfile.mkdtemp(prefix="netops-bench-pp-")
    sh(["gcc", "-O2", "-Wall", "-o", os.path.join(workdir, "blaster"), os.path.join(BENCH, "blaster.c")])
    chains = [Chain(i, kind, workdir) for i, kind in enumerate(CHAINS)]
    runs = {kind: [] for kind in CHAINS}
    load = MachineLoad().start()
    try:
        for chain in chains:
            chain.build()
        for rnd in range(rounds):
            order = CHAINS[rnd % len(CHAINS):] + CHAINS[:rnd % len(CHAINS)]
            for kind in order:
                chain = chains[CHAINS.index(kind)]
                k0 = _ksoftirqd_ns()
                result = chain.blast(seconds)
                result["ksoftirqd_s"] = (_ksoftirqd_ns() - k0) / 1e9
                runs[kind].append(result)
            log("  per-packet round %d/%d: %s" % (rnd + 1, rounds, ", ".join(
                "%s %.0f pps/cpu-s" % (k, runs[k][-1]["pps_cpu"] or 0) for k in CHAINS)))
    finally:
        for chain in chains:
            chain.destroy()
        sh(["rm", "-rf", workdir])
    summary = {}
    for chain in chains:
        kind = chain.kind
        rs = runs[kind]
        expect_rewritten = kind not in ("forward", "empty_egress")
        correct = all((r["rewritten"] == r["delivered"]) if expect_rewritten else (r["rewritten"] == 0) for r in rs)
        summary[kind] = {
            "rules": chain.rules,
            "source": chain.source,
            "pps_cpu_median": median([r["pps_cpu"] for r in rs]),
            "pps_cpu_range": spread([r["pps_cpu"] for r in rs]),
            "pps_wall_median": median([r["pps_wall"] for r in rs]),
            "pps_wall_range": spread([r["pps_wall"] for r in rs]),
            "delivered_share": median([r["delivered"] / float(r["sent"]) for r in rs if r["sent"]]),
            "ksoftirqd_share": median([r["ksoftirqd_s"] / r["cpu_s"] for r in rs if r["cpu_s"]]),
            "rewrite_correct": correct,
            "runs": rs,
        }
    fwd = summary["forward"]["pps_cpu_median"]
    ratios = {
        "rewrite_1_vs_forward": summary["rewrite_1"]["pps_cpu_median"] / fwd,
        "empty_egress_vs_forward": summary["empty_egress"]["pps_cpu_median"] / fwd,
        "linear_1_vs_forward": summary["linear_1"]["pps_cpu_median"] / fwd,
        "hash_1_vs_forward": summary["hash_1"]["pps_cpu_median"] / fwd,
        "rewrite_1_vs_empty_egress": summary["rewrite_1"]["pps_cpu_median"] / summary["empty_egress"]["pps_cpu_median"],
        "rewrite_4096_vs_forward": summary["rewrite_4096"]["pps_cpu_median"] / fwd,
        "rewrite_4096_vs_rewrite_1": summary["rewrite_4096"]["pps_cpu_median"] / summary["rewrite_1"]["pps_cpu_median"],
        "linear_4096_vs_rewrite_1": summary["linear_4096"]["pps_cpu_median"] / summary["rewrite_1"]["pps_cpu_median"],
        "wall_rewrite_1_vs_forward": summary["rewrite_1"]["pps_wall_median"] / summary["forward"]["pps_wall_median"],
        "wall_rewrite_4096_vs_rewrite_1": summary["rewrite_4096"]["pps_wall_median"] / summary["rewrite_1"]["pps_wall_median"],
    }
    return {
        "where": "host kernel, network namespaces and veth pairs (%s)" % os.uname().release,
        "method": "C UDP blaster (sendmmsg, 64-byte payload), %d interleaved rounds of %.1f s per chain" % (rounds, seconds),
        "chains": summary,
        "ratios": ratios,
        "machine_busy_share": load.stop(),
        "loadavg_after": loadavg(),
    }


if __name__ == "__main__":
    import sys
    print(json.dumps(run(rounds=3, log=lambda m: print(m, file=sys.stderr)), indent=2))
