"""Helpers for the scenarios' testinfra checks: reach any lab host, parse the article's replies,
and find which upstream logged a DNS query and from which address."""

import re
import uuid

import testinfra

VIP = "192.168.99.10"
CLIENT = "192.168.99.1"
UPSTREAMS = {
    "upstream1": "172.16.0.11",
    "upstream2": "172.16.0.12",
    "upstream3": "172.16.0.13",
    "upstream4": "172.16.0.14",
}
HELLO = re.compile(
    r"^Hello from (?P<name>\S+)\. You connected from (?P<src>[0-9.]+):(?P<sport>\d+) to (?P<dst>[0-9.]+):(?P<dport>\d+)$"
)


def lab_host(name):
    """A testinfra host for a lab host, through the docker connection."""
    return testinfra.get_host("docker://ipt-%s" % name)


def parse_hello(text):
    match = HELLO.match(text.strip())
    assert match, "not the upstream's reply: %r" % text
    return match.groupdict()


def unique_name():
    return "probe-%s.example.com" % uuid.uuid4().hex[:12]


def query_sources(name):
    """Map upstream -> list of client addresses its DNS server logged for query ``name``."""
    seen = {}
    pattern = re.compile(r"client @\S+ ([0-9a-f.:]+)#(\d+) \(%s\)" % re.escape(name))
    for upstream in UPSTREAMS:
        log = lab_host(upstream).check_output("journalctl -u named --no-pager -n 2000 -o cat")
        sources = [m.group(1) for m in pattern.finditer(log)]
        if sources:
            seen[upstream] = sources
    return seen


# --- Direct Server Return helpers (sustained load, counters) -----------------------------------------

DNSPERF_FIELDS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([0-9.]+)"),
}


def dnsperf(host, server, name="www.example.com", runs=25, clients=8, threads=2, timeout=5, rate=2000):
    """Run dnsperf on ``host`` against ``server``: a file of 100 ``name A`` queries read ``runs`` times
    (100 * runs queries) over ``clients`` sockets in parallel, at most ``rate`` queries per second.
    Returns the figures dnsperf printed (sent, completed, lost, qps) and its whole output."""
    qfile = host.check_output("mktemp /root/dnsperf-queries.XXXXXX")
    try:
        host.check_output("for i in $(seq 1 100); do echo '%s A'; done > %s" % (name, qfile))
        out = host.check_output(
            "dnsperf -s %s -d %s -n %d -c %d -T %d -t %d -Q %d 2>&1"
            % (server, qfile, runs, clients, threads, timeout, rate)
        )
    finally:
        host.run("rm -f %s" % qfile)
    figures = {}
    for key, pattern in DNSPERF_FIELDS.items():
        match = pattern.search(out)
        assert match, "dnsperf printed no %r figure:\n%s" % (key, out)
        figures[key] = float(match.group(1)) if key == "qps" else int(match.group(1))
    figures["output"] = out
    return figures


def interface_with(host, address):
    """Name of the interface that holds ``address`` on ``host`` (names are not stable in the lab)."""
    out = host.check_output("ip -o -4 addr show to %s/32" % address)
    assert out, "no interface holds %s" % address
    return out.split()[1].split("@")[0]


def link_counter(host, ifname, counter):
    """A /sys/class/net/<if>/statistics counter (rx_packets, tx_packets, ...)."""
    return int(host.check_output("cat /sys/class/net/%s/statistics/%s" % (ifname, counter)))


def default_route(host):
    return host.check_output("ip -4 route show default")


def assert_probe_seen_from_client(client):
    """A DNS probe with a unique name, sent from ``client`` to the VIP, is answered (NXDOMAIN) and
    exactly one upstream logged it, with the client's own address as source."""
    name = unique_name()
    status = client.check_output("dig +time=2 +tries=1 @%s %s | grep -o 'status: [A-Z]*'" % (VIP, name))
    assert status == "status: NXDOMAIN", "the probe was not answered through the proxy"
    seen = query_sources(name)
    assert len(seen) == 1, "exactly one upstream should have answered the probe: %s" % seen
    sources = list(seen.values())[0]
    assert sources == [CLIENT], "the upstream saw %s, not the client" % sources


def assert_workers_least_privilege():
    """nginx workers on the proxy never run as root and hold only CAP_NET_RAW (what proxy_bind transparent needs)."""
    proxy = lab_host("proxy")
    workers = proxy.check_output("ps -o pid=,user= --ppid $(cat /run/nginx.pid)").splitlines()
    assert workers, "no nginx worker"
    for line in workers:
        pid, user = line.split()
        assert user != "root", "nginx worker %s runs as root" % pid
        caps = proxy.check_output("grep CapEff /proc/%s/status" % pid).split()[1]
        assert int(caps, 16) == 1 << 13, "worker %s has capabilities %s, expected only CAP_NET_RAW" % (pid, caps)
