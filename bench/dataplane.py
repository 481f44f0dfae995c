"""Data plane in the container lab: DNS (dnsperf) and HTTP (wrk) from the client through the proxy.

The caller holds the lab lock and has run `make lab` (bench/run.py, `make bench`). Same hosts, one run:

  plain            no nginx in the path: the client sends to upstream1 (172.16.0.11) routed through the proxy
                   (ip_forward on, client route 172.16.0.0/24 via the proxy, upstreams 192.168.99.0/24 via it)
                   - the limit; one upstream instead of four (a plain router does not balance)
  standard         the article's standard UDP reverse proxy (`listen 53 udp; proxy_responses 1; proxy_timeout
                   1s;`, no proxy_bind) and a standard HTTP reverse proxy on :8080, both written by this file
  ip_transparency  playbooks/ip_transparency.yml (UDP with proxy_responses 1, HTTP on :80)
  dsr_router_nat   playbooks/dsr_router_nat.yml
  dsr_origin_nat   playbooks/dsr_origin_nat.yml

plain and standard are bench-only set-ups (the roles do not provide them); they are applied over the lab's
baseline (every method removed first with the playbooks' state=absent) and removed afterwards.

The proxy's CPU: the CPU time of the proxy container's cgroup (nginx, in process context, with the
transmit work its syscalls do) plus the runtime of the threaded-NAPI kthreads of the proxy's two
interfaces (all its receive processing: UDP/TCP delivery, forwarding, nftables, the egress rewrite). See
nic.py for why the proxy's veth devices are switched to threaded NAPI for the run (and back afterwards).
The host-side ends of those veth pairs get their own NAPI threads too, so that the docker bridge's work
is not charged to the proxy; it is reported apart as "bridge". Named's query log is switched off on the
upstreams for the run (rndc querylog off, back on afterwards): at tens of thousands of queries per
second, journald would take the machine.

Caveat, stated in the report: a NAPI kthread is woken for every packet that finds its ring empty; at these
rates that is most packets, and a wake-up plus two context switches costs far more than forwarding the
packet (bench/perpacket.py: about 1 us). The NAPI part of the proxy's CPU is therefore inflated roughly in
proportion to the packets the proxy receives, for every method alike; the nginx part (cgroup) is exact.
Both parts are reported separately. The kthreads keep the kernel's default scheduling (SCHED_OTHER).
"""

import json
import os
import re
import subprocess
import time

from common import REPO, VENV_PYTHON, BenchError, MachineLoad, loadavg, processes, sh

UPSTREAMS = ["172.16.0.11", "172.16.0.12", "172.16.0.13", "172.16.0.14"]
VIP = "192.168.99.10"
CLIENT = "ipt-client"
PROXY = "ipt-lb"
UPSTREAM_HOSTS = ["ipt-upstream%d" % i for i in range(1, 5)]
BENCH_STREAM = "/etc/nginx/modules-enabled/99-netops-bench-stream.conf"
BENCH_HTTP = "/etc/nginx/conf.d/netops-bench-http.conf"
ANSIBLE_ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                   PATH=os.path.join(REPO, ".venv", "bin") + ":" + os.environ.get("PATH", ""),
                   ANSIBLE_NOCOLOR="1", PY_COLORS="0")

STANDARD_STREAM = """# netops bench: the article's standard UDP reverse proxy (no transparency)
stream {
    upstream bench_dns {
%s
    }
    server {
        listen 53 udp;
        proxy_responses 1;
        proxy_timeout 1s;
        proxy_pass bench_dns;
    }
}
""" % "\n".join("        server %s:53;" % u for u in UPSTREAMS)

STANDARD_HTTP = """# netops bench: standard HTTP reverse proxy (no transparency)
upstream bench_http {
%s
}
server {
    listen 8080;
    location / {
        proxy_set_header Host $host;
        proxy_pass http://bench_http;
    }
}
# the same with idle upstream connections kept and reused (HAProxy's default, http-reuse safe); not possible
# with proxy_bind $remote_addr: a kept connection carries one client's address
upstream bench_http_keepalive {
%s
    keepalive 32;
}
server {
    listen 8083;
    location / {
        proxy_set_header Host $host;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://bench_http_keepalive;
    }
}
""" % ("\n".join("    server %s:80;" % u for u in UPSTREAMS), "\n".join("    server %s:80;" % u for u in UPSTREAMS))


# HAProxy 2.6 (Debian), the peer for HTTP: the same round robin over the four upstreams, once as a standard
# reverse proxy and once with `source 0.0.0.0 usesrc clientip` (its IP transparency: the upstreams see the
# client's address; the replies come back by the same return path as nginx's IP transparency - the upstreams'
# default route, the proxy's mark and local route - so it runs while that method is applied). It runs as root,
# as usesrc needs (CAP_NET_ADMIN), from a bench-only configuration, and is stopped afterwards.
HAPROXY_CFG = "/run/netops-bench-haproxy.cfg"
HAPROXY_PID = "/run/netops-bench-haproxy.pid"
HAPROXY = """# netops bench: HAProxy peers (standard on :8081, usesrc clientip on :8082)
global
    daemon
    maxconn 4096
    nbthread %(threads)d
    pidfile %(pid)s
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend standard
    bind %(vip)s:8081
    default_backend standard
frontend transparent
    bind %(vip)s:8082
    default_backend transparent
backend standard
    balance roundrobin
%(servers)s
backend transparent
    balance roundrobin
    source 0.0.0.0 usesrc clientip
%(servers)s
"""


# The tuning variants of DSR router NAT (role variables, passed to the method's playbook), each swept like the
# methods; and the reload test: RELOADS reloads spread over RELOAD_SECONDS of dnsperf at the highest load the
# standard proxy served without loss (the sockets hold most there), beside the same run without reloads.
# The receive buffer variant asks for the largest buffer the proxy's kernel allows (net.core.rmem_max, read at run
# time: the role refuses more), if that is above the default (net.core.rmem_default).
TUNING = (("reuseport", ["nginx_transparent_proxy_udp_reuseport=true"]),)
RELOAD_SECONDS, RELOADS = 10, 4
# Settings of the package's nginx.conf (not the role's): measured by editing it for one sweep, then put back.
NGINX_CONF_VARIANTS = (  # name, label, edit
    ("workers_1", "nginx.conf: worker_processes 1 (instead of auto: one per CPU)",
     "sed -i 's/^worker_processes .*/worker_processes 1;/' /etc/nginx/nginx.conf"),
    ("cpu_affinity", "nginx.conf: worker_cpu_affinity auto",
     "sed -i 's/^worker_processes .*/worker_processes auto;\\nworker_cpu_affinity auto;/' /etc/nginx/nginx.conf"),
)


def dexec(container, command, check=True, timeout=600):
    return sh(["docker", "exec", container, "bash", "-c", command], check=check, timeout=timeout)


def playbook(name, extra=(), log=print):
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(REPO, "inventories", "lab"),
            os.path.join(REPO, "playbooks", name)]
    for item in extra:
        argv += ["-e", item]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=ANSIBLE_ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError("%s failed (rc %d):\n%s" % (" ".join(argv[1:]), proc.returncode, proc.stdout[-4000:]))
    log("  playbook %s %s: %.0f s" % (name, " ".join(extra), elapsed))
    return elapsed


class Container(object):
    def __init__(self, name):
        info = json.loads(sh(["docker", "inspect", name]).stdout)[0]
        self.name = name
        self.id = info["Id"]
        self.pid = info["State"]["Pid"]
        self.cpu_file = self._cpu_file()

    def _cpu_file(self):
        for path in ("/sys/fs/cgroup/cpuacct/docker/%s/cpuacct.usage" % self.id,
                     "/sys/fs/cgroup/cpu,cpuacct/docker/%s/cpuacct.usage" % self.id,
                     "/sys/fs/cgroup/system.slice/docker-%s.scope/cpu.stat" % self.id,
                     "/sys/fs/cgroup/docker/%s/cpu.stat" % self.id):
            if os.path.exists(path):
                return path
        raise BenchError("no cgroup CPU accounting found for container %s" % self.name)

    def cpu_ns(self):
        with open(self.cpu_file) as handle:
            text = handle.read()
        if self.cpu_file.endswith("cpuacct.usage"):
            return int(text)
        return int(re.search(r"usage_usec (\d+)", text).group(1)) * 1000


def thread_ns(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/schedstat" % pid) as handle:
            total += int(handle.read().split()[0])
    return total


def napi_threads():
    return processes(lambda comm: comm.startswith("napi/"))


class ProxyAccounting(object):
    """Threaded NAPI on the proxy's veth pairs; CPU = proxy cgroup + proxy-side NAPI threads."""

    NETNS = "netops-bench-proxy"

    def __init__(self, proxy, log):
        self.proxy = proxy
        self.log = log
        self.saved_inner = self.saved_outer = None
        self.inner_pids, self.outer_pids = [], []

    def _interfaces(self):
        addrs = json.loads(sh(["ip", "-n", self.NETNS, "-j", "addr", "show"]).stdout)
        inner, peers = [], []
        for link in addrs:
            if any(a.get("local") in (VIP, "172.16.0.1") for a in link.get("addr_info", [])):
                inner.append(link["ifname"])
                peers.append(link["link_index"])
        host = {link["ifindex"]: link["ifname"] for link in json.loads(sh(["ip", "-j", "link", "show"]).stdout)}
        if len(inner) != 2 or any(p not in host for p in peers):
            raise BenchError("cannot find the proxy's two veth pairs (found %s, peers %s)" % (inner, peers))
        return inner, [host[p] for p in peers]

    def _set(self, netns_prefix, devices):
        before = set(napi_threads())
        out = sh(netns_prefix + [VENV_PYTHON, os.path.join(REPO, "bench", "nic.py"), "set"] + devices).stdout
        time.sleep(0.2)
        new = sorted(set(napi_threads()) - before)
        return json.loads(out), new

    def enable(self):
        sh(["ip", "netns", "del", self.NETNS], check=False)
        sh(["ip", "netns", "attach", self.NETNS, str(self.proxy.pid)])
        inner, outer = self._interfaces()
        self.devices = {"proxy": inner, "host": outer}
        self.saved_inner, self.inner_pids = self._set(["ip", "netns", "exec", self.NETNS], inner)
        self.saved_outer, self.outer_pids = self._set([], outer)
        if len(self.inner_pids) < 2 or len(self.outer_pids) < 2:
            raise BenchError("threaded NAPI threads not found (proxy %s, host %s)" % (self.inner_pids, self.outer_pids))
        self.log("  proxy accounting: NAPI threads %s (proxy side %s), %s (host side %s)"
                 % (self.inner_pids, inner, self.outer_pids, outer))

    def disable(self):
        try:
            if self.saved_inner:
                sh(["ip", "netns", "exec", self.NETNS, VENV_PYTHON, os.path.join(REPO, "bench", "nic.py"), "restore",
                    json.dumps(self.saved_inner)], check=False)
            if self.saved_outer:
                sh([VENV_PYTHON, os.path.join(REPO, "bench", "nic.py"), "restore", json.dumps(self.saved_outer)], check=False)
        finally:
            sh(["ip", "netns", "del", self.NETNS], check=False)

    def sample(self):
        for pid in self.inner_pids + self.outer_pids:
            if not os.path.exists("/proc/%d" % pid):
                raise BenchError("NAPI thread %d vanished (was the proxy's interface reset?)" % pid)
        return {"cgroup": self.proxy.cpu_ns(), "napi": thread_ns(self.inner_pids), "bridge": thread_ns(self.outer_pids)}

    @staticmethod
    def delta(before, after):
        d = {k: (after[k] - before[k]) / 1e9 for k in before}
        d["proxy"] = d["cgroup"] + d["napi"]
        return d


def snmp_table(text, prefix):
    """One table of /proc/net/snmp ("Udp:", "Ip:") as {counter: value}."""
    rows = [line.split() for line in text.splitlines() if line.startswith(prefix)]
    return dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))


def dev_drops(text):
    """/proc/net/dev as {device: (rx_drop, tx_drop)}."""
    out = {}
    for line in text.splitlines()[2:]:
        name, data = line.split(":", 1)
        fields = data.split()
        out[name.strip()] = (int(fields[3]), int(fields[11]))
    return out


UDP_ERRORS = ("InErrors", "RcvbufErrors", "SndbufErrors", "NoPorts")


def _udp_and_drops(pid):
    """UDP error counters and interface drops of the network namespace of process pid (read from the host)."""
    prefix = "/proc/%s/net/" % pid if pid else "/proc/net/"
    with open(prefix + "snmp") as handle:
        udp = snmp_table(handle.read(), "Udp:")
    counters = {"udp_" + key: udp.get(key, 0) for key in UDP_ERRORS}
    with open(prefix + "dev") as handle:
        drops = [d for name, d in dev_drops(handle.read()).items() if pid or name.startswith("veth")]
    counters["if_rx_drop"], counters["if_tx_drop"] = sum(d[0] for d in drops), sum(d[1] for d in drops)
    if not pid:
        with open("/proc/net/softnet_stat") as handle:
            counters["backlog_drop"] = sum(int(line.split()[1], 16) for line in handle)
    return counters


class DropCounters(object):
    """Where datagrams are dropped: UDP buffer errors and interface drops per lab host, host veth and backlog drops."""

    def __init__(self):
        self.pids = {name: Container(name).pid for name in [CLIENT, PROXY, "ipt-router"] + UPSTREAM_HOSTS}

    def sample(self):
        values = {}
        for name, pid in self.pids.items():
            for key, value in _udp_and_drops(pid).items():
                # the proxy's counters keep their role's name (proxy_...), as in earlier results
                short = "upstreams" if name.startswith("ipt-upstream") else "proxy" if name == PROXY else name[4:]
                values["%s_%s" % (short, key)] = values.get("%s_%s" % (short, key), 0) + value
        for key, value in _udp_and_drops(None).items():
            values["host_" + key] = value
        return values

    @staticmethod
    def delta(before, after):
        return {k: after[k] - before[k] for k in after if after[k] != before.get(k, 0)}


def _percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


def parse_dnsperf(text):
    """Summary counters and latency percentiles (from -v: one '> RCODE name type latency' line per answer)."""
    def grab(pattern, cast=float, default=None):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else default
    latencies = []
    for line in text.splitlines():
        if line.startswith("> "):
            try:
                latencies.append(float(line.split()[-1]))
            except ValueError:
                continue
    latencies.sort()
    result = {
        "sent": grab(r"Queries sent:\s+(\d+)", int),
        "completed": grab(r"Queries completed:\s+(\d+)", int),
        "lost": grab(r"Queries lost:\s+(\d+)", int),
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "run_s": grab(r"Run time \(s\):\s+([\d.]+)"),
        "latency_avg_ms": (grab(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1000,
        "latency_p50_ms": (_percentile(latencies, 0.50) or 0) * 1000 if latencies else None,
        "latency_p99_ms": (_percentile(latencies, 0.99) or 0) * 1000 if latencies else None,
        "latency_samples": len(latencies),
        "noerror": grab(r"NOERROR (\d+)", int, 0),
    }
    if result["sent"] is None:
        raise BenchError("dnsperf printed no statistics:\n%s" % text[-2000:])
    return result


def parse_wrk(text):
    def grab(pattern, default=None):
        m = re.search(pattern, text)
        return m.group(1) if m else default

    def ms(value):
        if value is None:
            return None
        m = re.match(r"([\d.]+)(us|ms|s)$", value)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    requests = grab(r"(\d+) requests in")
    if requests is None:
        raise BenchError("wrk printed no statistics:\n%s" % text[-2000:])
    errors = grab(r"Socket errors: (.*)")
    return {
        "requests": int(requests),
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
        "latency_p50_ms": ms(grab(r"\n\s+50%\s+(\S+)")),
        "latency_p99_ms": ms(grab(r"\n\s+99%\s+(\S+)")),
        "non_2xx": int(grab(r"Non-2xx or 3xx responses: (\d+)", "0")),
        "socket_errors": errors.strip() if errors else "",
    }


class Lab(object):
    def __init__(self, log):
        self.log = log
        self.proxy = Container(PROXY)
        self.accounting = ProxyAccounting(self.proxy, log)
        self.drops = DropCounters()
        self.saved_forward = None

    # --- set-ups --------------------------------------------------------------------------------------
    def reset_methods(self):
        """Every method removed (the lab's baseline): origin NAT off the upstreams, the proxy role absent."""
        return playbook("dsr_origin_nat.yml", ["nginx_transparent_proxy_state=absent", "origin_nat_state=absent"],
                        log=self.log)

    def _proxy_sysctl(self, key, value=None):
        prefix = ["nsenter", "-t", str(self.proxy.pid), "-n"]
        if value is None:
            return sh(prefix + ["sysctl", "-n", key]).stdout.strip()
        sh(prefix + ["sysctl", "-qw", "%s=%s" % (key, value)])

    def bench_setup(self):
        """plain routing + the standard proxies (bench-only configuration, removed by bench_teardown)."""
        dexec(PROXY, "cat > %s <<'EOF'\n%sEOF\ncat > %s <<'EOF'\n%sEOF\nnginx -t -q && systemctl restart nginx"
              % (BENCH_STREAM, STANDARD_STREAM, BENCH_HTTP, STANDARD_HTTP))
        self.saved_forward = self._proxy_sysctl("net.ipv4.ip_forward")
        self._proxy_sysctl("net.ipv4.ip_forward", 1)
        dexec(CLIENT, "ip route replace 172.16.0.0/24 via %s" % VIP)
        for host in UPSTREAM_HOSTS:
            dexec(host, "ip route replace 192.168.99.0/24 via 172.16.0.1")

    def bench_teardown(self):
        dexec(PROXY, "rm -f %s %s; nginx -t -q && systemctl restart nginx" % (BENCH_STREAM, BENCH_HTTP), check=False)
        if self.saved_forward is not None:
            self._proxy_sysctl("net.ipv4.ip_forward", self.saved_forward)
        dexec(CLIENT, "ip route del 172.16.0.0/24 via %s" % VIP, check=False)
        for host in UPSTREAM_HOSTS:
            dexec(host, "ip route del 192.168.99.0/24 via 172.16.0.1", check=False)

    def haproxy_start(self):
        # as many threads as nginx has workers (worker_processes auto: one per CPU)
        threads = int(dexec(PROXY, "nproc").stdout.strip())
        cfg = HAPROXY % {"vip": VIP, "pid": HAPROXY_PID, "threads": threads,
                         "servers": "\n".join("    server u%d %s:80" % (i + 1, u) for i, u in enumerate(UPSTREAMS))}
        dexec(PROXY, "cat > %s <<'EOF'\n%sEOF\nhaproxy -c -q -f %s && haproxy -f %s" % (HAPROXY_CFG, cfg, HAPROXY_CFG, HAPROXY_CFG))
        return threads

    def haproxy_stop(self):
        dexec(PROXY, "[ -s %s ] && kill $(cat %s); rm -f %s %s" % (HAPROXY_PID, HAPROXY_PID, HAPROXY_PID, HAPROXY_CFG),
              check=False)

    def seen_from(self, url):
        """The client address the upstream saw (its page says 'You connected from A:P')."""
        out = dexec(CLIENT, "curl -s -m 3 %s" % url, check=False).stdout
        m = re.search(r"connected from ([0-9.]+):", out)
        if not m:
            raise BenchError("HTTP %s does not answer (%r)" % (url, out[:200]))
        return m.group(1)

    def querylog(self, on):
        for host in UPSTREAM_HOSTS:
            dexec(host, "rndc querylog %s" % ("on" if on else "off"), check=False)

    # --- checks and measurements --------------------------------------------------------------------
    def nginx_errors(self):
        out = dexec(PROXY, "wc -l < /var/log/nginx/error.log 2>/dev/null || echo 0", check=False).stdout.strip()
        return int(out) if out.isdigit() else 0

    def check_dns(self, target):
        out = dexec(CLIENT, "dig +short +time=1 +tries=2 @%s www.example.com A" % target, check=False).stdout.split()
        if not out or out[0] not in UPSTREAMS:
            raise BenchError("DNS through %s does not answer (dig: %r)" % (target, out))

    def check_http(self, url):
        out = dexec(CLIENT, "curl -s -m 3 %s" % url, check=False).stdout
        if "Hello from" not in out:
            raise BenchError("HTTP %s does not answer (%r)" % (url, out[:200]))

    def dnsperf(self, target, rate, seconds):
        cmd = ("printf 'www.example.com A\\n' > /tmp/netops-bench-queries && "
               "dnsperf -s %s -d /tmp/netops-bench-queries -l %s -Q %d -c 8 -q 1000 -t 1 -v"
               % (target, seconds, rate))
        load = MachineLoad().start()
        errors0 = self.nginx_errors()
        drops0 = self.drops.sample()
        before = self.accounting.sample()
        text = dexec(CLIENT, cmd, timeout=seconds + 60).stdout
        after = self.accounting.sample()
        drops = DropCounters.delta(drops0, self.drops.sample())
        result = parse_dnsperf(text)
        result["drops"] = drops
        errors = self.nginx_errors() - errors0
        if errors > 0:
            # a query nginx could not send is counted nowhere in the kernel: its error log says why
            result["drops"]["nginx_error_log_lines"] = errors
            result["nginx_last_error"] = dexec(PROXY, "tail -n 1 /var/log/nginx/error.log", check=False).stdout.strip()[-300:]
        cpu = ProxyAccounting.delta(before, after)
        result.update({
            "offered_qps": rate,
            "proxy_cpu_s": cpu["proxy"], "proxy_cgroup_s": cpu["cgroup"], "proxy_napi_s": cpu["napi"],
            "bridge_cpu_s": cpu["bridge"],
            "proxy_cpu_ms_per_1k": 1e6 * cpu["proxy"] / result["sent"] if result["sent"] else None,
            "loss_share": result["lost"] / float(result["sent"]) if result["sent"] else None,
            "machine_busy_share": load.stop(),
            "loadavg": loadavg(),
        })
        return result

    def wrk(self, url, seconds):
        load = MachineLoad().start()
        before = self.accounting.sample()
        text = dexec(CLIENT, "wrk -t2 -c32 -d%ds --latency %s" % (seconds, url), timeout=seconds + 60).stdout
        after = self.accounting.sample()
        result = parse_wrk(text)
        cpu = ProxyAccounting.delta(before, after)
        result.update({
            "proxy_cpu_s": cpu["proxy"], "proxy_cgroup_s": cpu["cgroup"], "proxy_napi_s": cpu["napi"],
            "bridge_cpu_s": cpu["bridge"],
            "proxy_cpu_ms_per_1k": 1e6 * cpu["proxy"] / result["requests"] if result["requests"] else None,
            "machine_busy_share": load.stop(),
            "loadavg": loadavg(),
        })
        return result

    def reload_loss(self, target, rate, seconds, reloads):
        """dnsperf at `rate` while nginx is reloaded `reloads` times, evenly spaced (what the health checker does
        when an upstream changes state): the queries lost to the reloads."""
        import threading
        box = {}

        def query():
            box["text"] = dexec(CLIENT, "dnsperf -s %s -d /tmp/netops-bench-queries -l %d -Q %d -c 8 -q 1000 -t 1"
                                % (target, seconds, rate), timeout=seconds + 60).stdout
        worker = threading.Thread(target=query)
        worker.start()
        gap = seconds / float(reloads + 1)
        for dummy in range(reloads):
            time.sleep(gap)
            dexec(PROXY, "systemctl reload nginx")
        worker.join()
        result = parse_dnsperf(box.get("text", ""))
        result.update({"offered_qps": rate, "reloads": reloads, "seconds": seconds})
        return result

    def sweep(self, method, target, loads, seconds):
        self.check_dns(target)
        runs = []
        for rate in loads:
            r = self.dnsperf(target, rate, seconds)
            runs.append(r)
            self.log("  %-16s %6d qps offered: %8.0f answered, lost %d, p50 %.2f ms, p99 %.2f ms, proxy %.3f ms CPU/1k q"
                     % (method, rate, r["qps"] or 0, r["lost"], r["latency_p50_ms"] or -1, r["latency_p99_ms"] or -1,
                        r["proxy_cpu_ms_per_1k"] or -1)
                     + (" drops %s" % r["drops"] if r["lost"] else ""))
        return runs


def run(loads, seconds=5, http_seconds=5, log=print):
    started = time.time()
    lab = Lab(log)
    udp, http, setup_s = {}, {}, {}
    images = sh(["docker", "exec", CLIENT, "bash", "-c", "dnsperf -h 2>&1 | grep -m1 Version; wrk -v 2>&1 | head -1; "
                 "nginx -v 2>&1; haproxy -v | head -1"], check=False).stdout
    lab.querylog(False)
    try:
        lab.accounting.enable()
        setup_s["reset"] = lab.reset_methods()
        t = time.perf_counter()
        lab.bench_setup()
        setup_s["bench_setup"] = time.perf_counter() - t
        try:
            lab.check_http("http://%s:8080/" % VIP)
            lab.check_http("http://%s/" % UPSTREAMS[0])
            udp["standard"] = lab.sweep("standard", VIP, loads, seconds)
            udp["plain"] = lab.sweep("plain", UPSTREAMS[0], loads, seconds)
            http["standard"] = lab.wrk("http://%s:8080/" % VIP, http_seconds)
            http["standard_keepalive"] = lab.wrk("http://%s:8083/" % VIP, http_seconds)
            http["plain"] = lab.wrk("http://%s/" % UPSTREAMS[0], http_seconds)
        finally:
            lab.bench_teardown()
        setup_s["ip_transparency"] = playbook("ip_transparency.yml", log=log)
        lab.check_http("http://%s/" % VIP)
        udp["ip_transparency"] = lab.sweep("ip_transparency", VIP, loads, seconds)
        http["ip_transparency"] = lab.wrk("http://%s/" % VIP, http_seconds)
        try:
            threads = lab.haproxy_start()
            client = dexec(CLIENT, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1").stdout.split()
            seen = {name: lab.seen_from("http://%s:%d/" % (VIP, port))
                    for name, port in (("haproxy", 8081), ("haproxy_transparent", 8082))}
            log("  haproxy (%d threads): upstreams see %s (standard) and %s (usesrc clientip); client %s"
                % (threads, seen["haproxy"], seen["haproxy_transparent"], client))
            if seen["haproxy_transparent"] not in client or seen["haproxy"] in client:
                raise BenchError("HAProxy: expected the client's address only through usesrc clientip, saw %s" % seen)
            http["haproxy"] = lab.wrk("http://%s:8081/" % VIP, http_seconds)
            http["haproxy_transparent"] = lab.wrk("http://%s:8082/" % VIP, http_seconds)
            http["haproxy"]["threads"] = http["haproxy_transparent"]["threads"] = threads
            http["haproxy"]["upstream_saw"] = seen["haproxy"]
            http["haproxy_transparent"]["upstream_saw"] = seen["haproxy_transparent"]
        finally:
            lab.haproxy_stop()
        setup_s["dsr_router_nat"] = playbook("dsr_router_nat.yml", log=log)
        udp["dsr_router_nat"] = lab.sweep("dsr_router_nat", VIP, loads, seconds)
        # Tuning (README "Tuning"): the UDP listen parameters the role exposes, each measured against the
        # role's defaults on the same method, and what a reload does to queued datagrams with each.
        served = [r["offered_qps"] for r in udp["standard"]
                  if not r["lost"] and r["completed"] >= 0.97 * r["offered_qps"] * (r["run_s"] or 1)]
        reload_rate = max(served or [min(loads)])

        def reloads(name):
            control = lab.reload_loss(VIP, reload_rate, RELOAD_SECONDS, 0)
            result = lab.reload_loss(VIP, reload_rate, RELOAD_SECONDS, RELOADS)
            result.update(control_lost=control["lost"], control_sent=control["sent"])
            log("  reloads, %s: %d reloads at %d q/s: lost %d of %d (without reloads: %d of %d)" % (
                name, RELOADS, reload_rate, result["lost"], result["sent"], control["lost"], control["sent"]))
            return result
        tuning = {"reload_default": reloads("role defaults")}
        # a container's network namespace shows no net.core.rmem_* before Linux 6.11: then no buffer variant
        rmem = dexec(PROXY, "cat /proc/sys/net/core/rmem_max /proc/sys/net/core/rmem_default", check=False).stdout.split()
        variants = list(TUNING)
        if len(rmem) != 2:
            log("  no receive buffer variant: the proxy's network namespace shows no net.core.rmem_max")
        elif int(rmem[0]) > int(rmem[1]):
            variants.append(("rcvbuf_max", ["nginx_transparent_proxy_udp_rcvbuf=%dk" % (int(rmem[0]) // 1024)]))
        else:
            log("  no receive buffer variant: net.core.rmem_max %s is not above rmem_default %s" % tuple(rmem))
        for name, extra in variants:
            setup_s["dsr_router_nat_" + name] = playbook("dsr_router_nat.yml", extra, log=log)
            udp["dsr_router_nat_" + name] = lab.sweep("dsr_router_nat_" + name, VIP, loads, seconds)
            tuning["reload_" + name] = reloads(name)
        setup_s["dsr_router_nat_restore"] = playbook("dsr_router_nat.yml", log=log)  # back to the role's defaults
        # nginx.conf's own settings (the package's file, which the role leaves alone): bench-only edits, put back
        for name, _label, edit in NGINX_CONF_VARIANTS:
            dexec(PROXY, "cp -p /etc/nginx/nginx.conf /run/netops-bench-nginx.conf")
            try:
                dexec(PROXY, "%s && nginx -t -q && systemctl restart nginx" % edit)
                lab.check_dns(VIP)
                udp["dsr_router_nat_" + name] = lab.sweep("dsr_router_nat_" + name, VIP, loads, seconds)
            finally:
                dexec(PROXY, "cp -p /run/netops-bench-nginx.conf /etc/nginx/nginx.conf && nginx -t -q && "
                             "systemctl restart nginx && rm -f /run/netops-bench-nginx.conf")
        lab.check_dns(VIP)
        setup_s["dsr_origin_nat"] = playbook("dsr_origin_nat.yml", log=log)
        udp["dsr_origin_nat"] = lab.sweep("dsr_origin_nat", VIP, loads, seconds)
        # origin NAT's proxy receives through the same listening socket: its buffer variant too
        for name, extra in variants:
            if name.startswith("rcvbuf"):
                setup_s["dsr_origin_nat_" + name] = playbook("dsr_origin_nat.yml", extra, log=log)
                udp["dsr_origin_nat_" + name] = lab.sweep("dsr_origin_nat_" + name, VIP, loads, seconds)
                setup_s["dsr_origin_nat_restore"] = playbook("dsr_origin_nat.yml", log=log)
    finally:
        lab.accounting.disable()
        lab.querylog(True)
    for name, r in http.items():
        log("  http %-16s %8.0f req/s, p50 %.2f ms, p99 %.2f ms, proxy %.3f ms CPU/1k req"
            % (name, r["rps"], r["latency_p50_ms"] or -1, r["latency_p99_ms"] or -1, r["proxy_cpu_ms_per_1k"] or -1))
    return {
        "where": "container lab (systemd containers on docker bridges, host kernel %s)" % os.uname().release,
        "tools": images.strip().splitlines(),
        "dns": {"loads": list(loads), "seconds": seconds,
                "dnsperf": "-c 8 -q 1000 -t 1 -Q <load> -l %d, query www.example.com A" % seconds,
                "methods": udp},
        "http": {"seconds": http_seconds, "wrk": "-t2 -c32 -d%ds --latency" % http_seconds, "methods": http},
        "proxy_cpu_accounting": "proxy container cgroup + threaded-NAPI kthreads of the proxy's two veth devices",
        "napi_devices": getattr(lab.accounting, "devices", {}),
        "setup_s": setup_s,
        "tuning": dict(tuning, variants=dict({name: " ".join(extra) for name, extra in variants},
                                             **{name: label for name, label, _edit in NGINX_CONF_VARIANTS}),
                       reload_rate=reload_rate, reload_seconds=RELOAD_SECONDS, reloads=RELOADS),
        "elapsed_s": time.time() - started,
    }


if __name__ == "__main__":
    import sys
    print(json.dumps(run([int(x) for x in (sys.argv[1:] or ["2000", "8000"])], seconds=4, http_seconds=3,
                         log=lambda m: print(m, file=sys.stderr)), indent=2))
