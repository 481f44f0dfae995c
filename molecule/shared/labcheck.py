"""Helpers for the scenarios' testinfra checks: reach any lab host, parse the article's replies,
and find which upstream logged a DNS query and from which address."""

import base64
import concurrent.futures
import contextlib
import json
import random
import re
import shlex
import time
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
# The lab is dual-stack (lab/topology.yml): the same hosts over IPv6.
VIP6 = "2001:db8:99::10"
CLIENT6 = "2001:db8:99::1"
UPSTREAMS6 = {
    "upstream1": "fd00:16::11",
    "upstream2": "fd00:16::12",
    "upstream3": "fd00:16::13",
    "upstream4": "fd00:16::14",
}
# nginx prints `$remote_addr:$remote_port` without brackets for IPv6 too: the address is everything before the
# last colon (the greedy match backtracks to it).
HELLO = re.compile(
    r"^Hello from (?P<name>\S+)\. You connected from (?P<src>[0-9a-f.:]+):(?P<sport>\d+) to (?P<dst>[0-9a-f.:]+):(?P<dport>\d+)$"
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


def dnsperf(host, server, name="www.example.com", runs=25, clients=8, threads=2, timeout=5, rate=2000, rtype="A"):
    """Run dnsperf on ``host`` against ``server`` (an IPv4 or IPv6 address): a file of 100 ``name rtype`` queries
    read ``runs`` times
    (100 * runs queries) over ``clients`` sockets in parallel, at most ``rate`` queries per second.
    Returns the figures dnsperf printed (sent, completed, lost, qps) and its whole output."""
    qfile = host.check_output("mktemp /root/dnsperf-queries.XXXXXX")
    try:
        host.check_output("for i in $(seq 1 100); do echo '%s %s'; done > %s" % (name, rtype, qfile))
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


def dnsperf_together(host, targets, **kwargs):
    """dnsperf against several ``(server, rtype)`` targets at the same time (one thread each, e.g. the IPv6 and the
    IPv4 VIP); returns their figures in the same order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(targets)) as pool:
        runs = [pool.submit(dnsperf, host, server, rtype=rtype, **kwargs) for server, rtype in targets]
        return [run.result() for run in runs]


def dig(host, server, name, rtype="A"):
    """The short answer of one query from ``host`` (over the family of ``server``)."""
    return host.check_output("dig +short +time=2 +tries=1 @%s %s %s" % (server, name, rtype)).strip()


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


def assert_probe_seen_from_client(client, vip=VIP, source=CLIENT):
    """A DNS probe with a unique name, sent from ``client`` to ``vip`` (IPv4 or IPv6), is answered (NXDOMAIN) and
    exactly one upstream logged it, with the client's own address ``source`` as source."""
    name = unique_name()
    status = client.check_output("dig +time=2 +tries=1 @%s %s | grep -o 'status: [A-Z]*'" % (vip, name))
    assert status == "status: NXDOMAIN", "the probe was not answered through the proxy"
    seen = query_sources(name)
    assert len(seen) == 1, "exactly one upstream should have answered the probe: %s" % seen
    sources = list(seen.values())[0]
    assert sources == [source], "the upstream saw %s, not the client" % sources


def assert_workers_least_privilege():
    """nginx workers on the proxy never run as root and hold only CAP_NET_RAW (what proxy_bind transparent needs)."""
    proxy = lab_host("lb")
    workers = proxy.check_output("ps -o pid=,user= --ppid $(cat /run/nginx.pid)").splitlines()
    assert workers, "no nginx worker"
    for line in workers:
        pid, user = line.split()
        assert user != "root", "nginx worker %s runs as root" % pid
        caps = proxy.check_output("grep CapEff /proc/%s/status" % pid).split()[1]
        assert int(caps, 16) == 1 << 13, "worker %s has capabilities %s, expected only CAP_NET_RAW" % (pid, caps)


# --- Least exposure: real packets with a chosen source, and what each host saw of them ------------------

# Runs on the lab hosts (python3 only). `send`: IPv4 packets built by hand (UDP datagrams, TCP SYNs) through a
# raw socket, so that any source address and port can be used - an upstream's service port that its own server
# holds, an address the host does not have - and the packets still take the host's normal output path (routes,
# netfilter, the egress hook of the origin NAT). `listen`: until a stop file appears, records the packets with
# the given destination ports that arrive on any interface (AF_PACKET, before any filter: "wire"), that are
# delivered to this host's own sockets (raw sockets: "local"), and the datagrams a UDP socket bound to the first
# port receives ("socket").
PROBE_SCRIPT = r'''
import json, os, random, select, socket, struct, sys, time


def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def build(p):
    src, dst = socket.inet_aton(p["src"]), socket.inet_aton(p["dst"])
    if p["proto"] == "udp":
        proto, body = 17, p.get("payload", "").encode()
        l4 = struct.pack("!HHHH", p["sport"], p["dport"], 8 + len(body), 0) + body
        offset = 6
    else:
        proto = 6
        l4 = struct.pack("!HHIIBBHHH", p["sport"], p["dport"], random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
        offset = 16
    csum = checksum(src + dst + struct.pack("!BBH", 0, proto, len(l4)) + l4) or 0xffff
    l4 = l4[:offset] + struct.pack("!H", csum) + l4[offset + 2:]
    # the kernel fills in the IP header's checksum (IP_HDRINCL)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, src, dst) + l4


def parse(pkt):
    if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] not in (6, 17):
        return None
    ihl = (pkt[0] & 15) * 4
    sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
    rec = {"proto": "udp" if pkt[9] == 17 else "tcp", "src": socket.inet_ntoa(pkt[12:16]), "sport": sport,
           "dst": socket.inet_ntoa(pkt[16:20]), "dport": dport}
    if pkt[9] == 17:
        rec["payload"] = pkt[ihl + 8:].decode("ascii", "replace")
    return rec


def listen(ports, base):
    wire = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    socks = [wire] + [socket.socket(socket.AF_INET, socket.SOCK_RAW, proto) for proto in (17, 6)]
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        app.bind(("0.0.0.0", ports[0]))
        socks.append(app)
    except OSError:  # the port is a server's (53 on an upstream): wire and local only
        pass
    seen = {"wire": [], "local": [], "socket": []}
    open(base + ".ready", "w").close()
    deadline = time.time() + 60
    while not os.path.exists(base + ".stop") and time.time() < deadline:
        for sock in select.select(socks, [], [], 0.05)[0]:
            if sock is app:
                data, (src, sport) = app.recvfrom(65535)
                seen["socket"].append({"src": src, "sport": sport, "payload": data.decode("ascii", "replace")})
                continue
            data, addr = sock.recvfrom(65535)
            rec = parse(data)
            if rec is None or rec["dport"] not in ports:
                continue
            if sock is wire:
                if addr[2] == socket.PACKET_OUTGOING or addr[0] == "lo":
                    continue
                rec["ifname"] = addr[0]
                seen["wire"].append(rec)
            else:
                seen["local"].append(rec)
    with open(base + ".tmp", "w") as out:
        json.dump(seen, out)
    os.rename(base + ".tmp", base + ".json")


if sys.argv[1] == "send":
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for p in json.loads(sys.argv[2]):
        raw.sendto(build(p), (p["dst"], 0))
        time.sleep(0.02)
else:
    listen([int(port) for port in sys.argv[2].split(",")], sys.argv[3])
'''
PROBE_PATH = "/run/netops-labprobe.py"
# A private address no lab host holds: the source of "not an upstream" probes, sent from an upstream.
NOT_AN_UPSTREAM = "172.16.0.99"
PROXY_PRIVATE = "172.16.0.1"
ROUTER_PUBLIC = "192.168.99.253"  # the lab router's address on the client network


def install_probe(host):
    """Put PROBE_SCRIPT on ``host`` (base64: no quoting to get wrong)."""
    encoded = base64.b64encode(PROBE_SCRIPT.encode()).decode()
    host.check_output("echo %s | base64 -d > %s" % (encoded, PROBE_PATH))


def probe_port():
    """A destination port of its own for each probe run (nothing else on the lab uses it)."""
    return random.randint(20000, 39999)


def packet(proto, src, sport, dst, dport, payload=""):
    """One probe packet: a UDP datagram carrying ``payload``, or a TCP SYN."""
    return {"proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport, "payload": payload}


def dsr_reply_probes(src, port):
    """What an upstream at ``src`` sends to the client's ``port`` to test the DSR rewrite's scope: the service
    reply (UDP from port 53, payload "control", the positive control), UDP from two other ports, UDP from port
    53 of a private address that is not an upstream, and TCP from port 53."""
    return [
        packet("udp", src, 53, CLIENT, port, "control"),
        packet("udp", src, 5353, CLIENT, port, "udp-5353"),
        packet("udp", src, 9999, CLIENT, port, "udp-9999"),
        packet("udp", NOT_AN_UPSTREAM, 53, CLIENT, port, "not-an-upstream"),
        packet("tcp", src, 53, CLIENT, port),
    ]


def send_packets(host, packets):
    """Send ``packets`` (see packet()) from ``host`` through a raw socket: any source address and port."""
    install_probe(host)
    host.check_output("python3 %s send %s" % (PROBE_PATH, shlex.quote(json.dumps(packets))))


@contextlib.contextmanager
def capture(hosts, ports):
    """Record, on each host of ``hosts`` ({name: testinfra host}), the packets to destination ``ports`` (a port
    or a list) while the block runs. Yields {name: {"wire": [...], "local": [...], "socket": [...]}}, filled when
    the block ends; each record has proto, src, sport, dst, dport (and payload for UDP, ifname for wire)."""
    ports = [ports] if isinstance(ports, int) else list(ports)
    base = "/run/netops-labprobe-%d" % ports[0]
    seen = {}
    for host in hosts.values():
        install_probe(host)
        host.check_output(
            "rm -f {b}.*; setsid python3 {p} listen {port} {b} >{b}.log 2>&1 </dev/null & "
            "for i in $(seq 50); do [ -e {b}.ready ] && exit 0; sleep 0.1; done; cat {b}.log; exit 1".format(
                b=base, p=PROBE_PATH, port=",".join(str(p) for p in ports)))
    try:
        yield seen
        time.sleep(0.5)  # packets still in flight (ARP resolution, forwarding)
    finally:
        for name, host in hosts.items():
            out = host.check_output(
                "touch {b}.stop; for i in $(seq 50); do [ -e {b}.json ] && break; sleep 0.1; done; "
                "cat {b}.json || cat {b}.log; rm -f {b}.*".format(b=base))
            seen[name] = json.loads(out)


def matching(records, **fields):
    """The records whose fields equal ``fields``."""
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def describe(records):
    """Short text of probe packets or records: proto src:sport -> dst:dport [payload]."""
    def one(r):
        payload = " %s" % r["payload"] if r.get("payload") else ""
        return "%s %s:%s->%s:%s%s" % (r["proto"], r["src"], r["sport"], r["dst"], r["dport"], payload)
    return ", ".join(one(r) for r in records)


def assert_client_cannot_reach_private_network_via_proxy():
    """With a route to upstream1 via the proxy on the client, no packet of the client's (UDP and TCP, to the
    service ports and others) arrives on upstream1; the same packets routed via the lab router do arrive
    (positive control: the probe and the capture work)."""
    client, upstream = lab_host("client"), lab_host("upstream1")
    target, port = UPSTREAMS["upstream1"], probe_port()

    def probes(tag):
        return [packet("udp", CLIENT, port, target, 53, "%s-udp53" % tag),
                packet("udp", CLIENT, port, target, port, "%s-udp" % tag),
                packet("tcp", CLIENT, port + 1, target, 80),
                packet("tcp", CLIENT, port + 2, target, 53)]

    seen = {}
    for via, tag in ((VIP, "via-proxy"), (ROUTER_PUBLIC, "via-router")):
        client.check_output("ip route replace %s/32 via %s" % (target, via))
        try:
            with capture({"upstream": upstream}, (port, 53, 80)) as got:
                send_packets(client, probes(tag))
        finally:
            client.run("ip route del %s/32" % target)
        # one entry per probe: a TCP probe that gets through is followed by the client's RST to the SYN-ACK
        seen[via] = sorted({(r["proto"], r["sport"], r["dport"]) for r in got["upstream"]["wire"]
                            if r["src"] == CLIENT and r["sport"] in (port, port + 1, port + 2)})
        print("client -> %s %s: upstream1 received %d of 4 probe packets %s"
              % (target, tag, len(seen[via]), [(proto, dport) for proto, sport, dport in seen[via]]))
    assert len(seen[ROUTER_PUBLIC]) == 4, "positive control failed: the probes routed via the router did not arrive"
    assert seen[VIP] == [], "the proxy forwarded client packets into the private network: %s" % seen[VIP]
