"""One proxy, one VIP, a method per service (issue 14), verified from the client. The checks run in this order, each
on the state the previous one left:

a. 1+2a (the converge): HTTP shows the client's address at all four upstreams; DNS over TCP by Method 1 (the
   upstream sees the client); >= 1,000 DNS queries over UDP, every one answered from the VIP by all four upstreams,
   the replies forwarded and rewritten by the proxy (router NAT), never given to nginx.
b. the move: under HTTP and DNS-over-TCP load from the client (every request recorded), site.yml runs again with
   DNS over UDP moved to dsr_origin_nat: not one HTTP request or TCP query fails; the UDP queries the moved service
   itself loses meanwhile are printed (not asserted).
c. 1+2b: the same from the client, the UDP replies now rewritten by the upstreams and routed by the lab router,
   none reaching the proxy.
d. a second run of site.yml with the 1+2b services changes nothing on any host.
e. playbooks/teardown.yml gives every host back the state dumped before the converge (prepare.yml).
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import faultload  # noqa: E402
import labcheck  # noqa: E402
import labdump  # noqa: E402
import labplay  # noqa: E402

testinfra_hosts = ["client"]

VIP, CLIENT = labcheck.VIP, labcheck.CLIENT
UPSTREAM_ADDRESSES = set(labcheck.UPSTREAMS.values())
# DNS over UDP under load: UDP_LOAD_RATE queries a second for UDP_LOAD_SECONDS, each one recorded (faultload.py)
UDP_LOAD_SECONDS = 5.0
UDP_LOAD_RATE = 240
MIN_QUERIES = 1000
COUNTER_TABLE = "netops_verify_mixed"
BASELINE = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "baseline.json")
MOVED = "mixed_dns_method=dsr_origin_nat"


def client():
    return labcheck.lab_host("client")


# --- from the client ---------------------------------------------------------------------------------------

def check_http_shows_the_client_at_all_four_upstreams(at_least=8, at_most=20):
    """curl the VIP until every upstream has answered (at least ``at_least`` times, at most ``at_most``): each
    answer names the client's address as the one that connected, to the upstream's own address, port 80."""
    replies = []
    while len(replies) < at_most and (len(replies) < at_least or {r["name"] for r in replies} != set(labcheck.UPSTREAMS)):
        replies.append(labcheck.parse_hello(client().check_output("curl -sS --max-time 5 http://%s/" % VIP)))
    for reply in replies:
        print("Hello from {name}. You connected from {src}:{sport} to {dst}:{dport}".format(**reply))
    assert {r["name"] for r in replies} == set(labcheck.UPSTREAMS), \
        "not every upstream answered in %d requests: %s" % (len(replies), sorted({r["name"] for r in replies}))
    for reply in replies:
        assert reply["src"] == CLIENT, "%s saw %s, not the client" % (reply["name"], reply["src"])
        assert reply["dst"] == labcheck.UPSTREAMS[reply["name"]] and reply["dport"] == "80", reply


def check_dns_over_tcp_by_method_1(queries=8):
    """dig +tcp to the VIP: answered by all four upstreams (each answers its own address), and a probe with a name of
    its own is logged by one upstream with the client's address as source."""
    answers = []
    for attempt in range(queries):  # noqa: B007 pylint: disable=unused-variable
        out = client().check_output("dig +tcp +short +time=2 +tries=1 @%s www.example.com" % VIP).strip()
        assert out in UPSTREAM_ADDRESSES, "no answer over TCP through the proxy: %r" % out
        answers.append(out)
    print("DNS over TCP answers: %s" % ", ".join(answers))
    assert set(answers) == UPSTREAM_ADDRESSES, "DNS over TCP not balanced across all four upstreams"
    name = labcheck.unique_name()
    status = client().check_output("dig +tcp +time=2 +tries=1 @%s %s | grep -o 'status: [A-Z]*'" % (VIP, name))
    assert status == "status: NXDOMAIN", "the TCP probe was not answered through the proxy"
    seen = labcheck.query_sources(name)
    print("TCP probe %s logged by %s" % (name, seen))
    assert len(seen) == 1 and list(seen.values())[0] == [CLIENT], "the TCP probe was not seen from the client: %s" % seen


@contextlib.contextmanager
def counters(rules):
    """Packet counters in a temporary nftables table on lab hosts while the block runs. ``rules``: {host: {counter:
    (hook, match)}}. Yields {host: {counter: packets}}, filled when the block ends; the tables are gone then."""
    hosts = {name: labcheck.lab_host(name) for name in rules}
    for name, host in hosts.items():
        chains = {}
        for counter, (hook, match) in rules[name].items():
            chains.setdefault(hook, []).append("%s counter name %s" % (match, counter))
        host.check_output(
            "nft -f - <<'EOF'\ntable inet %s {\n%s\n%s\n}\nEOF" % (
                COUNTER_TABLE,
                "\n".join("  counter %s {}" % counter for counter in rules[name]),
                "\n".join("  chain %s { type filter hook %s priority -300; %s; }" % (hook, hook, "; ".join(lines))
                          for hook, lines in sorted(chains.items()))))
    seen = {}
    try:
        yield seen
    finally:
        for name, host in hosts.items():
            out = host.run("nft -j list counters table inet %s" % COUNTER_TABLE)
            host.run("nft delete table inet %s" % COUNTER_TABLE)
            if out.rc == 0:
                seen[name] = {item["counter"]["name"]: item["counter"]["packets"]
                              for item in json.loads(out.stdout)["nftables"] if "counter" in item}


# Where the DNS replies to the client (UDP, source port 53) go: on the proxy, arriving at all, forwarded (router NAT)
# or given to a local socket (nginx); on the lab router, forwarded from the VIP (origin NAT); on the client, from the
# VIP or from any other source.
REPLY = "ip daddr %s udp sport 53" % CLIENT
REPLY_PATH = {
    "lb": {"replies_in": ("prerouting", REPLY), "replies_forwarded": ("forward", REPLY),
           "replies_to_nginx": ("input", REPLY)},
    "router": {"replies_forwarded": ("forward", "ip saddr %s %s" % (VIP, REPLY))},
    "client": {"from_vip": ("input", 'iifname != "lo" ip saddr %s udp sport 53' % VIP),
               "from_other": ("input", 'iifname != "lo" ip saddr != %s udp sport 53' % VIP)},
}


def check_dns_over_udp_under_load():
    """>= MIN_QUERIES DNS queries over UDP from the client to the VIP (faultload.py: one record per query; a reply
    counts only when it comes from VIP:53): every one answered, by all four upstreams. Returns the figures and the
    packet counters of REPLY_PATH."""
    with counters(REPLY_PATH) as seen:
        with faultload.load(UDP_LOAD_SECONDS, rate=UDP_LOAD_RATE) as run:
            pass
    records = run.records
    answered = [r for r in records if r["answered"]]
    lost = [r for r in records if not r["answered"]]
    shares = {}
    for r in answered:
        shares[r["upstream"]] = shares.get(r["upstream"], 0) + 1
    figures = {"sent": len(records), "answered": len(answered), "lost": len(lost), "late": sum(1 for r in records if r["late"]),
               "answers": dict(sorted(shares.items()))}
    print("DNS over UDP: %(sent)d sent, %(answered)d answered from %(vip)s:53, %(lost)d lost (%(late)d late); "
          "answers per upstream %(answers)s" % dict(figures, vip=VIP))
    print("reply counters: %s" % json.dumps(seen, sort_keys=True))
    assert figures["sent"] >= MIN_QUERIES, "only %d queries sent" % figures["sent"]
    assert not lost, "%d of %d queries over UDP lost, e.g. %s" % (len(lost), len(records), lost[:3])
    assert set(shares) == UPSTREAM_ADDRESSES, "not answered by all four upstreams: %s" % shares
    assert seen["client"]["from_vip"] >= figures["answered"], "the answers did not come from %s: %s" % (VIP, seen["client"])
    assert seen["client"]["from_other"] == 0, "DNS replies reached the client from other sources than %s" % VIP
    return figures, seen


# --- a. 1 + 2a ---------------------------------------------------------------------------------------------

def test_1_2a_http_shows_the_client_at_all_four_upstreams():
    check_http_shows_the_client_at_all_four_upstreams()


def test_1_2a_dns_over_tcp_by_method_1():
    check_dns_over_tcp_by_method_1()


def test_1_2a_dns_over_udp_by_router_nat_under_load():
    """The replies cross the proxy's forward path (rewritten there to the VIP), never reach nginx, and never the lab
    router."""
    labcheck.assert_probe_seen_from_client(client())
    figures, seen = check_dns_over_udp_under_load()
    assert seen["lb"]["replies_forwarded"] >= figures["answered"], "the replies were not forwarded by the proxy"
    assert seen["lb"]["replies_to_nginx"] == 0, "replies reached the proxy's own sockets (nginx)"
    assert seen["router"]["replies_forwarded"] == 0, "replies went via the lab router"


# --- b. the move ---------------------------------------------------------------------------------------------

# Runs on the client (python3, standard library only), configuration as JSON in argv[1]. Three loops, one request
# at a time each, until its stdin is closed and then AFTER more each: "http" (GET http://VIP/, a new connection
# each), "dns_tcp" and "dns_udp" (www.example.com A; UDP: a reply from VIP:53 with the query's ID). Prints
# {"started": epoch} once the loops run, and at the end one JSON list: per request kind, sent, took, ok, error,
# and what answered (the Hello line's upstream and client address; the A record).
MOVE_LOAD_SCRIPT = r'''
import http.client, json, random, select, socket, struct, sys, threading, time

cfg = json.loads(sys.argv[1])
VIP, TIMEOUT, AFTER = cfg["vip"], cfg["timeout"], cfg["after"]
QNAME = b"".join(bytes([len(p)]) + p.encode() for p in "www.example.com".split(".")) + b"\0"
stop = threading.Event()
records, lock = [], threading.Lock()


def query(qid):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + QNAME + struct.pack("!HH", 1, 1)


def skip_name(data, pos):
    while True:
        if data[pos] & 0xc0 == 0xc0:
            return pos + 2
        if data[pos] == 0:
            return pos + 1
        pos += 1 + data[pos]


def first_a(data, qid):
    got, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    if got != qid or not flags & 0x8000:
        raise ValueError("not the reply to query %d" % qid)
    pos = 12
    for i in range(qdcount):
        pos = skip_name(data, pos) + 4
    for i in range(ancount):
        pos = skip_name(data, pos)
        rtype, rclass, ttl, rdlength = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlength == 4:
            return socket.inet_ntoa(data[pos:pos + 4])
        pos += rdlength
    raise ValueError("no A record (rcode %d)" % (flags & 15))


def http_get():
    conn = http.client.HTTPConnection(VIP, 80, timeout=TIMEOUT)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode("ascii", "replace").strip()
    finally:
        conn.close()
    if resp.status != 200 or not body.startswith("Hello from "):
        raise ValueError("HTTP %d: %r" % (resp.status, body[:200]))
    words = body.split()
    return {"upstream": words[2].rstrip("."), "src": words[6].rsplit(":", 1)[0]}


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed after %d of %d bytes" % (len(data), size))
        data += chunk
    return data


def dns_tcp():
    qid = random.randrange(65536)
    with socket.create_connection((VIP, 53), timeout=TIMEOUT) as sock:
        msg = query(qid)
        sock.sendall(struct.pack("!H", len(msg)) + msg)
        size = struct.unpack("!H", recv_exactly(sock, 2))[0]
        return {"upstream": first_a(recv_exactly(sock, size), qid)}


def dns_udp(sock):
    qid = random.randrange(65536)
    sock.sendto(query(qid), (VIP, 53))
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if not select.select([sock], [], [], max(0, deadline - time.time()))[0]:
            break
        data, src = sock.recvfrom(4096)
        try:
            if src == (VIP, 53):
                return {"upstream": first_a(data, qid)}
        except (ValueError, IndexError, struct.error):
            pass  # a late reply to an earlier query
    raise ValueError("no reply from %s:53 within %gs" % (VIP, TIMEOUT))


def loop(kind, pause):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if kind == "dns_udp" else None
    left = AFTER
    while left > 0:
        rec = {"kind": kind, "sent": time.time()}
        try:
            rec.update(dns_udp(udp) if udp else dns_tcp() if kind == "dns_tcp" else http_get())
            rec["ok"] = True
        except Exception as exc:  # every failure is recorded, none stops the loop
            rec.update(ok=False, error="%s: %s" % (type(exc).__name__, exc))
        rec["took"] = time.time() - rec["sent"]
        with lock:
            records.append(rec)
        if stop.is_set():
            left -= 1
        else:
            stop.wait(pause)


threads = [threading.Thread(target=loop, args=(kind, pause)) for kind, pause in cfg["pauses"].items()]
for thread in threads:
    thread.start()
print(json.dumps({"started": time.time()}), flush=True)
sys.stdin.read()
stop.set()
for thread in threads:
    thread.join()
print(json.dumps(records))
'''


class MoveLoad(object):
    """MOVE_LOAD_SCRIPT running on the client; stop() closes its stdin and returns its records."""

    def __init__(self, timeout=5.0, after=3, pauses=None):
        cfg = {"vip": VIP, "timeout": timeout, "after": after,
               "pauses": pauses or {"http": 0.1, "dns_tcp": 0.1, "dns_udp": 0.05}}
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", "ipt-client", "python3", "-c", MOVE_LOAD_SCRIPT, json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the load did not start on the client: %s" % self.proc.communicate()[1])
        self.started = json.loads(line)["started"]

    def stop(self):
        out, err = self.proc.communicate(input="", timeout=120)
        assert self.proc.returncode == 0, "the load failed on the client (rc %s): %s" % (self.proc.returncode, err)
        return json.loads(out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_moving_dns_over_udp_to_origin_nat_loses_nothing_on_http_and_dns_over_tcp():
    load = MoveLoad()
    try:
        began = time.time()
        rc, out, changed = labplay.play("mixed", MOVED)
        ended = time.time()
        records = load.stop()
    finally:
        load.kill()
    kinds = {}
    for r in records:
        kinds.setdefault(r["kind"], []).append(r)
    during = {kind: [r for r in recs if began <= r["sent"] <= ended] for kind, recs in kinds.items()}
    failed = {kind: [r for r in recs if not r["ok"]] for kind, recs in kinds.items()}
    print("the move (site.yml, %s) took %.1f s: rc=%d, changed=%s; the load ran from %.1f s before it to %.1f s after"
          % (MOVED, ended - began, rc, changed, began - load.started, max(r["sent"] + r["took"] for r in records) - ended))
    for kind in ("http", "dns_tcp", "dns_udp"):
        recs = kinds.get(kind, [])
        lost = failed.get(kind, [])
        print("  %-7s %4d requests (%d sent during the run), %d failed%s" % (
            kind, len(recs), len(during.get(kind, [])), len(lost),
            " from %.1f s to %.1f s into the run" % (lost[0]["sent"] - began, lost[-1]["sent"] - began) if lost else ""))
    print("DNS over UDP (the moved service) lost %d of %d queries during the move (informational)"
          % (len(failed.get("dns_udp", [])), len(kinds.get("dns_udp", []))))
    assert rc == 0, "the move failed:\n%s" % out[-6000:]
    assert all(changed.get(name) for name in ["lb"] + list(labcheck.UPSTREAMS)), \
        "the move changed nothing on some host (%s): DNS over UDP was not moved" % changed
    for kind in ("http", "dns_tcp"):
        assert len(during.get(kind, [])) >= 10, "too few %s requests during the move to tell: %d" % (kind, len(during.get(kind, [])))
        assert kinds[kind][0]["sent"] < began and kinds[kind][-1]["sent"] > ended, "the %s load did not span the move" % kind
        assert not failed[kind], "%d of %d %s requests failed during the move, e.g. %s" % (
            len(failed[kind]), len(kinds[kind]), kind, failed[kind][:3])
    elsewhere = [r for r in kinds["http"] if r.get("src") != CLIENT]
    assert not elsewhere, "upstreams saw another address than the client's during the move: %s" % elsewhere[:3]


# --- c. 1 + 2b ---------------------------------------------------------------------------------------------

def test_1_2b_dns_over_udp_by_origin_nat_under_load():
    """The replies leave the upstreams already from the VIP and go via the lab router: none reaches the proxy."""
    labcheck.assert_probe_seen_from_client(client())
    figures, seen = check_dns_over_udp_under_load()
    assert seen["router"]["replies_forwarded"] >= figures["answered"], "the replies did not go via the lab router"
    assert seen["lb"]["replies_in"] == 0, "%d replies passed through the proxy" % seen["lb"]["replies_in"]


def test_1_2b_http_shows_the_client_at_all_four_upstreams():
    check_http_shows_the_client_at_all_four_upstreams()


def test_1_2b_dns_over_tcp_by_method_1():
    check_dns_over_tcp_by_method_1()


# --- d. idempotence of the moved mix --------------------------------------------------------------------------

CHANGED_TASK = re.compile(r"^TASK \[(?P<task>.*?)\] \*+$|^changed: \[(?P<host>[^\]]+)\]", re.M)


def changed_tasks(out):
    """(host, task) of every change an ansible-playbook output reports."""
    found, task = [], None
    for match in CHANGED_TASK.finditer(out):
        if match.group("task") is not None:
            task = match.group("task")
        else:
            found.append((match.group("host"), task))
    return found


def test_a_second_run_of_the_moved_mix_changes_nothing():
    rc, out, changed = labplay.play("mixed", MOVED)
    assert rc == 0, out[-6000:]
    assert set(changed) >= {"lb"} | set(labcheck.UPSTREAMS), "hosts missing from the recap: %s" % changed
    assert not any(changed.values()), "the second run changed %s: %s" % (changed, changed_tasks(out))


# --- e. teardown ---------------------------------------------------------------------------------------------

def test_teardown_returns_every_host_to_the_baseline():
    assert os.path.exists(BASELINE), "no baseline dump at %s (molecule/mixed/prepare.yml writes it)" % BASELINE
    baseline = labdump.load(BASELINE)
    rc, out, changed = labplay.play("teardown")
    assert rc == 0, out[-6000:]
    difference = labdump.differences(baseline, labdump.dump_all())
    assert not difference, "teardown left differences:\n" + difference
