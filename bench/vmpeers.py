"""IPVS in direct-routing mode beside the nginx methods, in one qemu VM run (Debian's stock kernel has IPVS).

    python vmpeers.py            (host) exports the lab image's root file system, boots the VM, prints JSON
    python vmpeers.py --inner    (guest) builds the topology, sweeps every path, prints JSON

This host's kernel has no IPVS (CONFIG_IP_VS unset), so the peer runs where it exists: the qemu VM of
tests/vm (Debian's kernel, TCG emulation). The nginx methods are measured in the same VM run, on the same
topology, at the same offered loads, so that the ratios between them and IPVS are fair; the absolute figures
of an emulated machine mean nothing.

The guest's root is the host's; the servers (nginx, named, dnsperf, ipvsadm) come from the lab's image, whose
root file system is exported once to .cache/bench/labroot-<image id> and entered with chroot inside the guest.

Topology in the guest: one bridge (one L2 segment, as IPVS-DR needs), network namespaces as hosts:

  c   client     10.9.0.2    dnsperf
  d   director   10.9.0.10   + the VIP 10.9.0.100: nginx, or IPVS
  r1  upstream   10.9.0.11   named; the VIP on lo with arp_ignore=1/arp_announce=2 (the usual DR real server)
  r2  upstream   10.9.0.12   named, same

Paths, each swept over the same offered loads:
  plain            client -> r1 directly, no director (the limit)
  standard         nginx `listen VIP:53 udp; proxy_responses 1;` -> r1, r2 (replies back through nginx)
  dsr_router_nat   nginx `proxy_bind $remote_addr:$remote_port transparent; proxy_responses 0;`; the
                   upstreams' route to the client via the director, which forwards their replies and
                   rewrites the source to the VIP (tc_nat_filter, the collection's module, on its egress);
                   net.ipv4.udp_early_demux=0 on the director, as the role sets it
  dsr_origin_nat   the same nginx; each upstream rewrites its own replies (tc_nat_filter on its egress) and
                   sends them to the client directly
  ipvs_dr          `ipvsadm -A -u VIP:53 -s rr -o` (one-packet scheduling, the usual choice for DNS) and
                   `-a ... -g` per upstream: the director's kernel forwards each query by MAC address, the
                   upstream answers from the VIP directly

The director's CPU is counted as in the lab (dataplane.py): the CPU time of every nginx task plus the runtime of
the threaded-NAPI kthread of the director's interface (all its receive processing: IPVS, forwarding, the
rewrite, UDP delivery). The bridge side of its veth pair gets its own NAPI thread, reported apart.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import REPO, VENV_PYTHON, BenchError, MachineLoad, module_args_file, processes, run_module, sh  # noqa: E402
from dataplane import UDP_ERRORS, dev_drops, napi_threads, parse_dnsperf, snmp_table, thread_ns  # noqa: E402

NET = "10.9.0."
VIP = NET + "100"
HOSTS = {"c": NET + "2", "d": NET + "10", "r1": NET + "11", "r2": NET + "12"}
UPSTREAMS = ["r1", "r2"]
IMAGE = os.environ.get("LAB_IMAGE_NAME", "netops-ipt-lab") + ":latest"
CACHE = os.path.join(REPO, ".cache", "bench")
NIC = os.path.join(REPO, "bench", "nic.py")

ZONE = """$TTL 300
@   IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 300
@   IN NS ns.example.com.
ns  IN A %s
www IN A %s
"""

NAMED = """options {
    directory "/var/cache/bench-%(ns)s";
    pid-file "/run/bench-named-%(ns)s.pid";
    session-keyfile "/run/bench-named-%(ns)s.key";
    listen-on { %(addr)s; %(vip)s; };
    listen-on-v6 { none; };
    recursion no;
    allow-query { any; };
    dnssec-validation no;
};
controls { };
zone "example.com" { type primary; file "/etc/bench-%(ns)s.zone"; };
"""

NGINX = """user www-data;
worker_processes auto;
pid /run/bench-nginx.pid;
error_log /tmp/bench-nginx-error.log;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 4096; }
stream {
    upstream dns {
%(servers)s
    }
    server {
        listen %(vip)s:53 udp;
        proxy_pass dns;
%(params)s
    }
}
"""
STANDARD = "        proxy_responses 1;\n        proxy_timeout 1s;"
DSR = "        proxy_bind $remote_addr:$remote_port transparent;\n        proxy_responses 0;"


# --- host side --------------------------------------------------------------------------------------

def labroot():
    """The lab image's root file system as a directory (exported once per image id)."""
    image_id = sh(["docker", "image", "inspect", "-f", "{{.Id}}", IMAGE]).stdout.strip().split(":")[-1][:12]
    root = os.path.join(CACHE, "labroot-" + image_id)
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    os.makedirs(CACHE, exist_ok=True)
    for old in os.listdir(CACHE):
        if old.startswith("labroot-"):
            sh(["rm", "-rf", os.path.join(CACHE, old)])
    os.makedirs(root)
    cid = sh(["docker", "create", IMAGE]).stdout.strip()
    try:
        sh("docker export %s | tar -x -C %s" % (cid, root), timeout=900)
    finally:
        sh(["docker", "rm", cid], check=False)
    for binary in ("usr/sbin/nginx", "usr/sbin/named", "usr/bin/dnsperf", "sbin/ipvsadm"):
        if not os.path.exists(os.path.join(root, binary)) and not os.path.exists(os.path.join(root, "usr", binary)):
            raise BenchError("the lab image has no %s (rebuild it: make image)" % binary)
    open(os.path.join(root, ".complete"), "w").close()
    return root


def outer(loads, seconds, timeout=1800):
    try:
        root = labroot()
    except BenchError as exc:
        return {"reason": "cannot export the lab image's root file system: %s" % exc}
    cmd = [os.path.join(REPO, "tests", "vm", "run-in-vm"), "--timeout", str(timeout), "--smp", "2", "--mem", "2048", "--",
           VENV_PYTHON, os.path.abspath(__file__), "--inner", root, str(seconds)] + [str(x) for x in loads]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - start
    for line in proc.stderr.splitlines():
        if line.startswith("vmpeers:"):
            print("  " + line, flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"reason": "run-in-vm failed (rc %d): %s" % (proc.returncode, proc.stderr[-1500:])}
    data = json.loads(lines[-1])
    data["vm_wall_s"] = wall
    return data


# --- guest side -------------------------------------------------------------------------------------

class Guest(object):
    def __init__(self, root):
        self.root = root
        self.workdir = tempfile.mkdtemp(prefix="netops-bench-vmpeers-")
        self.napi = {}

    def log(self, message):
        print("vmpeers: " + message, file=sys.stderr, flush=True)

    def ns(self, ns, command, check=True, timeout=600):
        return sh(["ip", "netns", "exec", ns, "bash", "-c", command], check=check, timeout=timeout)

    def chroot(self, ns, command, check=True, timeout=600):
        return sh(["ip", "netns", "exec", ns, "chroot", self.root, "/bin/sh", "-c", command], check=check, timeout=timeout)

    def write(self, path, text):
        with open(os.path.join(self.root, path.lstrip("/")), "w") as handle:
            handle.write(text)

    def topology(self):
        for fs in ("proc", "dev", "sys"):
            sh(["mount", "--rbind", "/" + fs, os.path.join(self.root, fs)])
        sh("modprobe ip_vs && modprobe ip_vs_rr && modprobe veth && modprobe bridge")
        sh("ip link add br0 type bridge && ip link set br0 up")
        for name, addr in HOSTS.items():
            sh(["ip", "netns", "add", name])
            sh("ip link add e-%s type veth peer name eth0 netns %s && ip link set e-%s master br0 up" % (name, name, name))
            self.ns(name, "ip link set lo up && ip addr add %s/24 dev eth0 && ip link set eth0 up" % addr)
        self.ns("d", "ip addr add %s/32 dev eth0" % VIP)
        for r in UPSTREAMS:
            # the usual IPVS-DR real server: the VIP on lo, never answered for in ARP
            self.ns(r, "ip addr add %s/32 dev lo && sysctl -qw net.ipv4.conf.all.arp_ignore=1 "
                       "net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2" % VIP)
            self.write("/etc/bench-%s.zone" % r, ZONE % (HOSTS[r], HOSTS[r]))
            self.write("/etc/bench-%s.conf" % r, NAMED % {"ns": r, "addr": HOSTS[r], "vip": VIP})
            self.chroot(r, "mkdir -p /var/cache/bench-%s && chown bind /var/cache/bench-%s && "
                           "named -u bind -n 1 -c /etc/bench-%s.conf" % (r, r, r))
        self.write("/tmp/bench-queries", "www.example.com A\n")
        for r in UPSTREAMS:
            self.wait_dns(HOSTS[r], expect=HOSTS[r])

    def accounting_on(self):
        # nothing to put back afterwards: the guest is thrown away
        self.ns("d", "%s %s set eth0" % (VENV_PYTHON, NIC))
        sh([VENV_PYTHON, NIC, "set", "e-d"])
        time.sleep(0.3)
        self.napi = napi_threads()
        # one NAPI thread per device, named napi/<device>-<id>: the director's eth0 (in namespace d) and e-d
        found = {comm.split("/", 1)[1].rsplit("-", 1)[0]: pid for pid, comm in self.napi.items()}
        if sorted(found) != ["e-d", "eth0"]:
            raise BenchError("expected the NAPI threads of eth0 (director) and e-d, found %s" % self.napi)
        self.napi_director, self.napi_bridge = found["eth0"], found["e-d"]

    def cpu(self):
        nginx = 0
        for pid in processes(lambda comm: comm == "nginx"):
            try:
                for task in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/schedstat" % (pid, task)) as handle:
                        nginx += int(handle.read().split()[0])
            except OSError:
                continue
        return {"nginx": nginx, "napi": thread_ns([self.napi_director]), "bridge": thread_ns([self.napi_bridge])}

    def wait_dns(self, server, expect=None, tries=60):
        last = ""
        for dummy in range(tries):
            out = self.chroot("c", "dig +short +time=1 +tries=1 @%s www.example.com A" % server, check=False).stdout.split()
            if out and (expect is None or out[0] == expect or out[0] in [HOSTS[r] for r in UPSTREAMS]):
                return out[0]
            last = out
            time.sleep(0.5)
        raise BenchError("no DNS answer from %s (last %r)" % (server, last))

    # --- paths ------------------------------------------------------------------------------------
    def nginx(self, params):
        self.write("/tmp/bench-nginx.conf", NGINX % {
            "servers": "\n".join("        server %s:53;" % HOSTS[r] for r in UPSTREAMS), "vip": VIP, "params": params})
        self.nginx_stop()
        self.chroot("d", "nginx -t -q -c /tmp/bench-nginx.conf && nginx -c /tmp/bench-nginx.conf")

    def nginx_stop(self):
        self.chroot("d", "[ -s /run/bench-nginx.pid ] && nginx -c /tmp/bench-nginx.conf -s stop; "
                         "for i in $(seq 50); do pgrep -x nginx >/dev/null || exit 0; sleep 0.1; done; exit 1", check=False)

    def rewrite(self, ns, rules):
        argfile = os.path.join(self.workdir, "rules-%s.json" % ns)
        module_args_file(argfile, {"device": "eth0", "backend": "nftables", "rules": rules,
                                   "state": "present" if rules else "absent"})
        result = run_module(ns, "tc_nat_filter", argfile)[0]
        return result

    def setup(self, path):
        if path == "standard":
            self.nginx(STANDARD)
        elif path in ("dsr_router_nat", "dsr_origin_nat"):
            self.nginx(DSR)
            if path == "dsr_router_nat":
                # as the role sets it for router NAT: without it, early demux hands a reply that arrives while
                # nginx's upstream socket (bound to the client's address and port) is open to that socket, and
                # the forward path drops it (README, "Troubleshooting")
                self.ns("d", "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.udp_early_demux=0 "
                             "net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0")
                self.rewrite("d", [{"src": HOSTS[r], "protocol": "udp", "sport": 53, "nat_to": VIP} for r in UPSTREAMS])
                for r in UPSTREAMS:
                    self.ns(r, "ip route add %s/32 via %s" % (HOSTS["c"], HOSTS["d"]))
            else:
                for r in UPSTREAMS:
                    self.rewrite(r, [{"src": HOSTS[r], "protocol": "udp", "sport": 53, "nat_to": VIP}])
        elif path == "ipvs_dr":
            self.chroot("d", "ipvsadm -A -u %s:53 -s rr -o && " % VIP
                        + " && ".join("ipvsadm -a -u %s:53 -r %s:53 -g -w 1" % (VIP, HOSTS[r]) for r in UPSTREAMS))

    def teardown(self, path):
        if path in ("standard", "dsr_router_nat", "dsr_origin_nat"):
            self.nginx_stop()
        if path == "dsr_router_nat":
            self.rewrite("d", [])
            self.ns("d", "sysctl -qw net.ipv4.ip_forward=0 net.ipv4.udp_early_demux=1")
            for r in UPSTREAMS:
                self.ns(r, "ip route del %s/32 via %s" % (HOSTS["c"], HOSTS["d"]))
        if path == "dsr_origin_nat":
            for r in UPSTREAMS:
                self.rewrite(r, [])
        if path == "ipvs_dr":
            self.chroot("d", "ipvsadm -C")

    def drops(self):
        """UDP error counters and interface drops per namespace (where a lost query was dropped)."""
        values = {}
        for name in HOSTS:
            snmp, dev = self.ns(name, "cat /proc/net/snmp; echo ==; cat /proc/net/dev").stdout.split("==\n")
            udp, ip = snmp_table(snmp, "Udp:"), snmp_table(snmp, "Ip:")
            for key in UDP_ERRORS:
                values["%s_udp_%s" % (name, key)] = udp.get(key, 0)
            for key in ("InDiscards", "OutDiscards", "InAddrErrors", "InHdrErrors", "OutNoRoutes"):
                values["%s_ip_%s" % (name, key)] = ip.get(key, 0)
            values["%s_if_rx_drop" % name], values["%s_if_tx_drop" % name] = dev_drops(dev)["eth0"]
        with open("/proc/net/dev") as handle:
            for device, (rx, tx) in dev_drops(handle.read()).items():
                if device.startswith("e-"):
                    # the bridge side: a tx drop here is a full veth ring of the peer inside the namespace
                    values["bridge_%s_tx_drop" % device[2:]], values["bridge_%s_rx_drop" % device[2:]] = tx, rx
        errors = os.path.join(self.root, "tmp", "bench-nginx-error.log")
        if os.path.exists(errors):
            with open(errors) as handle:
                values["nginx_error_log_lines"] = len(handle.readlines())
        return values

    def dnsperf(self, target, rate, seconds):
        load = MachineLoad().start()
        drops0 = self.drops()
        before = self.cpu()
        text = self.chroot("c", "dnsperf -s %s -d /tmp/bench-queries -l %d -Q %d -c 8 -q 1000 -t 1 -v"
                           % (target, seconds, rate), timeout=seconds + 120).stdout
        after = self.cpu()
        result = parse_dnsperf(text)
        drops1 = self.drops()
        result["drops"] = {k: drops1[k] - drops0[k] for k in drops1 if drops1[k] != drops0.get(k, 0)}
        d = {k: (after[k] - before[k]) / 1e9 for k in before}
        result.update({
            "offered_qps": rate,
            "proxy_cpu_s": d["nginx"] + d["napi"], "proxy_nginx_s": d["nginx"], "proxy_napi_s": d["napi"],
            "bridge_cpu_s": d["bridge"],
            "proxy_cpu_ms_per_1k": 1e6 * (d["nginx"] + d["napi"]) / result["sent"] if result["sent"] else None,
            "loss_share": result["lost"] / float(result["sent"]) if result["sent"] else None,
            "machine_busy_share": load.stop(),
        })
        return result


def inner(root, seconds, loads):
    started = time.time()
    g = Guest(root)
    g.topology()
    g.accounting_on()
    paths = ("plain", "standard", "dsr_router_nat", "dsr_origin_nat", "ipvs_dr")
    out = {}
    for path in paths:
        g.setup(path)
        try:
            target = HOSTS["r1"] if path == "plain" else VIP
            answered_by = set(g.wait_dns(target) for dummy in range(4))
            runs = []
            for rate in loads:
                r = g.dnsperf(target, rate, seconds)
                runs.append(r)
                g.log("%-15s %5d qps offered: %6.0f answered, lost %d, p50 %.2f ms, p99 %.2f ms, director %.2f ms CPU/1k q"
                      % (path, rate, r["completed"] / float(r["run_s"] or 1), r["lost"], r["latency_p50_ms"] or -1,
                         r["latency_p99_ms"] or -1, r["proxy_cpu_ms_per_1k"] or 0)
                      + (" drops %s" % r["drops"] if r["lost"] else ""))
            out[path] = {"runs": runs, "answered_by": sorted(answered_by)}
            if path == "ipvs_dr":
                out[path]["ipvsadm"] = g.chroot("d", "ipvsadm -L -n -u %s:53 --stats" % VIP).stdout
        finally:
            g.teardown(path)
    versions = g.chroot("c", "nginx -v 2>&1; named -v; dnsperf -h 2>&1 | grep -m1 Version; ipvsadm -v", check=False).stdout
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "seconds": seconds, "loads": loads,
            "tools": versions.strip().splitlines(), "paths": out, "upstreams": len(UPSTREAMS),
            "dnsperf": "-c 8 -q 1000 -t 1 -Q <load> -l %d, query www.example.com A" % seconds,
            "elapsed_s": time.time() - started}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--inner":
        print(json.dumps(inner(sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4:]])))
    else:
        print(json.dumps(outer([int(x) for x in (sys.argv[1:] or ["250", "500"])], 3), indent=2))
