"""Health of the upstreams under load, seen from the client (issue 12): a DNS load generator that runs on the
client, fault injection on an upstream (DNS server stopped; host gone silent), graceful nginx reloads, and the
analysis of what was lost when. The scenarios' test_health.py files call the check_*() functions at the end,
naming only their method.

Times are epoch seconds (float). The lab's containers share this machine's kernel and so its clock: the send
and answer times the client records compare directly with the fault and return times taken here."""

import contextlib
import json
import os
import subprocess
import tempfile
import time

import labcheck

LOAD_RATE = 100  # queries per second
LOAD_SOCKETS = 8  # client UDP sockets, used in turn
LOAD_TIMEOUT = 1.0  # a query not answered within this many seconds is lost
# The fault schedule, in seconds from the start of the load.
FAULT_AT = 3.0
RETURN_AT = 12.0
LOAD_SECONDS = 22.0  # RETURN_AT + 10: the returning upstream has 10 s to answer again
GRACE = 5.0  # after the fault, the checker has this long to take the upstream out
RETURN_WITHIN = 10.0  # after its return, the upstream answers again within this long
# Reloads under load: RELOADS graceful reloads, one every RELOAD_EVERY seconds, from RELOAD_AT on.
RELOADS = 20
RELOAD_EVERY = 0.5
RELOAD_AT = 1.0
RELOAD_LOAD_SECONDS = RELOAD_AT + RELOADS * RELOAD_EVERY + 1.0
FAULTY = "upstream2"
STATE_FILE = "/var/lib/netops-healthcheck/state.json"
# removal_observed: the upstream counts as taken out before its return only if nothing was lost for at least
# this long before the return (at 100 q/s over four upstreams, a dead one loses about 25 queries a second).
OBSERVED_QUIET = 2.0

# Runs on the client (python3, standard library only), reads its configuration as JSON in argv[1]. Sends
# cfg["rate"] queries per second (A cfg["name"]) to cfg["server"]:53 for cfg["duration"] seconds, over
# cfg["sockets"] UDP sockets in turn, each with its own run of query IDs; waits cfg["timeout"] after the last
# one, then exits. Prints one line {"started": epoch} when it starts sending, and at the end one JSON list: per
# query, sock (index), id, sent (epoch), answered (a reply from the server's address and port 53, with an A
# record, within the timeout), upstream (the A record: each upstream answers with its own address), answer
# (epoch of the reply), rcode, late (a reply that came after the timeout).
LOAD_SCRIPT = r'''
import json, random, select, socket, struct, sys, time

cfg = json.loads(sys.argv[1])
QNAME = b"".join(bytes([len(p)]) + p.encode() for p in cfg["name"].split(".")) + b"\0"


def query(qid):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + QNAME + struct.pack("!HH", 1, 1)


def skip_name(data, pos):
    while True:
        length = data[pos]
        if length & 0xc0 == 0xc0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse(data):
    """(id, rcode, first A record or None) of a DNS reply, None if it is not one."""
    if len(data) < 12:
        return None
    qid, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    if not flags & 0x8000:
        return None
    try:
        pos = 12
        for i in range(qdcount):
            pos = skip_name(data, pos) + 4
        for i in range(ancount):
            pos = skip_name(data, pos)
            rtype, rclass, ttl, rdlength = struct.unpack("!HHIH", data[pos:pos + 10])
            pos += 10
            if rtype == 1 and rdlength == 4:
                return qid, flags & 15, socket.inet_ntoa(data[pos:pos + 4])
            pos += rdlength
    except (IndexError, struct.error):
        pass
    return qid, flags & 15, None


socks = []
for i in range(cfg["sockets"]):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    sock.setblocking(False)
    socks.append(sock)
index = {sock: i for i, sock in enumerate(socks)}
next_id = [random.randrange(65536) for sock in socks]
server = (cfg["server"], 53)
total = int(cfg["rate"] * cfg["duration"])
timeout = cfg["timeout"]
records, pending = [], {}
start = time.time()
print(json.dumps({"started": start}), flush=True)
k, last_sent = 0, start
while True:
    now = time.time()
    while k < total and start + k / cfg["rate"] <= now:
        i = k % len(socks)
        qid, next_id[i] = next_id[i], (next_id[i] + 1) & 0xffff
        rec = {"sock": i, "id": qid, "sent": time.time(), "answered": False, "upstream": None, "answer": None,
               "rcode": None, "late": False}
        try:
            socks[i].sendto(query(qid), server)
        except OSError as exc:
            rec["error"] = str(exc)
        records.append(rec)
        pending[(i, qid)] = rec
        last_sent, k = rec["sent"], k + 1
    if k >= total and (not pending or now >= last_sent + timeout):
        break
    wait = start + k / cfg["rate"] - now if k < total else last_sent + timeout - now
    for sock in select.select(socks, [], [], min(max(wait, 0), 0.05))[0]:
        while True:
            try:
                data, src = sock.recvfrom(4096)
            except OSError:  # nothing more (an unconnected socket reports no ICMP errors)
                break
            got, at = parse(data), time.time()
            if src != server or got is None:
                continue
            rec = pending.pop((index[sock], got[0]), None)
            if rec is None:
                continue
            rec["answer"], rec["rcode"], rec["upstream"] = at, got[1], got[2]
            if at - rec["sent"] <= timeout:
                rec["answered"] = got[2] is not None
            else:
                rec["late"] = True
print(json.dumps(records))
'''


# --- the load ------------------------------------------------------------------------------------------

class Load(object):
    """A run of LOAD_SCRIPT on the client, started by load(): ``started`` (epoch the first query left),
    wait_until(offset), and ``records`` once the run is over."""

    def __init__(self, duration, rate, sockets, timeout, name):
        self.duration, self.timeout = duration, timeout
        cfg = {"server": labcheck.VIP, "name": name, "rate": rate, "sockets": sockets, "duration": duration,
               "timeout": timeout}
        self.errors = tempfile.TemporaryFile(mode="w+")
        # the script on stdin (python3 -), its configuration as argument: nothing to install on the client
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", "ipt-client", "python3", "-", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, universal_newlines=True)
        self.proc.stdin.write(LOAD_SCRIPT)
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise AssertionError("the load did not start on the client: %s" % self.error_text())
        self.started = json.loads(line)["started"]
        self.records = None

    def error_text(self):
        self.errors.seek(0)
        return self.errors.read()

    def wait_until(self, offset):
        """Sleep until ``offset`` seconds after the start of the load (at once if that is past)."""
        time.sleep(max(0.0, self.started + offset - time.time()))

    def collect(self):
        """Wait for the end of the run (it stops by itself) and read its records."""
        out = self.proc.stdout.read()
        rc = self.proc.wait(timeout=30)
        assert rc == 0, "the load failed on the client (rc %s): %s" % (rc, self.error_text())
        self.records = json.loads(out)
        return self.records


@contextlib.contextmanager
def load(duration, rate=LOAD_RATE, sockets=LOAD_SOCKETS, timeout=LOAD_TIMEOUT, name="www.example.com"):
    """Run the DNS load from the client to the VIP for ``duration`` seconds while the block runs; it stops by
    itself. Yields the Load; its ``records`` are there when the block ends (the block's end waits for the
    load's)."""
    run = Load(duration, rate, sockets, timeout, name)
    try:
        yield run
    except BaseException:
        # stop reading; the script on the client ends by itself (a broken pipe at the latest)
        run.proc.kill()
        run.proc.wait()
        raise
    run.collect()


# --- faults ----------------------------------------------------------------------------------------------

def host_veth(upstream):
    """Name, on this machine, of the host side of the veth that carries ``upstream``'s lab address: the
    container's interface's iflink is the peer's ifindex here."""
    host = labcheck.lab_host(upstream)
    ifname = labcheck.interface_with(host, labcheck.UPSTREAMS[upstream])
    peer = int(host.check_output("cat /sys/class/net/%s/iflink" % ifname))
    for name in os.listdir("/sys/class/net"):
        with open("/sys/class/net/%s/ifindex" % name) as f:
            if int(f.read()) == peer:
                return name
    raise AssertionError("no interface with ifindex %d here (the peer of %s's %s)" % (peer, upstream, ifname))


def dig_outcome(host, command):
    """What ``command`` (a dig with +time=1 +tries=1) got: "answer", "refused" (an ICMP port unreachable came
    back), "timeout" (nothing came back, or only a reply from another source, which dig ignores)."""
    out = host.run(command).stdout
    if "status: NOERROR" in out:
        return "answer"
    if "refused" in out:
        return "refused"
    if "timed out" in out:
        return "timeout"
    return "other: %s" % out.strip()[-200:]


def probe_from_proxy(upstream):
    """What the proxy gets back from ``upstream``'s lab address: ping (an echo reply or not), ``closed_port`` (a
    DNS query to port 9: "refused" while the host is there to send the ICMP port unreachable, "timeout" when
    nothing comes back) and ``dns`` (a query to port 53: "answer", "refused" with the DNS server stopped,
    "timeout"; with origin NAT (2b) the upstream rewrites even its replies to the proxy, which then drops
    them: "timeout" there when all is well), and ``dns_local``, the DNS server asked on the upstream itself."""
    proxy, address = labcheck.lab_host("lb"), labcheck.UPSTREAMS[upstream]
    ping = proxy.run("ping -n -c 1 -W 1 %s" % address)
    return {
        "ping": "bytes from %s" % address in ping.stdout,
        "closed_port": dig_outcome(proxy, "dig +time=1 +tries=1 -p 9 @%s www.example.com" % address),
        "dns": dig_outcome(proxy, "dig +time=1 +tries=1 @%s www.example.com" % address),
        "dns_local": dig_outcome(labcheck.lab_host(upstream), "dig +time=1 +tries=1 @%s www.example.com" % address),
    }


class Fault(object):
    """One fault on one upstream: apply() and restore(). ``time``: the epoch the fault was ordered (it may take
    effect from then on; ``applied``: when the command had completed); ``returned``: the epoch the command that
    brought the upstream back had completed (it is certainly back then). restore() is idempotent, and fault()
    calls it in any case."""

    kind = None

    def __init__(self, upstream):
        self.upstream = upstream
        self.host = labcheck.lab_host(upstream)
        self.time = self.applied = self.returned = None

    def apply(self):
        self.time = time.time()
        self._apply()
        self.applied = time.time()
        return self

    def restore(self):
        if self.time is not None and self.returned is None:
            self._restore()
            self.returned = time.time()
        return self

    def _apply(self):
        raise NotImplementedError

    def _restore(self):
        raise NotImplementedError


class DnsStopped(Fault):
    """(a) The DNS server stopped on the upstream, the host up: queries get an ICMP port unreachable."""

    kind = "dns_stopped"

    def _apply(self):
        self.host.check_output("systemctl stop named")

    def _restore(self):
        self.host.check_output("systemctl start named")  # Type=notify: returns once named serves

    def check_applied(self):
        seen = probe_from_proxy(self.upstream)
        assert seen["ping"] and seen["dns"] == "refused" and seen["dns_local"] == "refused", \
            "named stopped on %s, yet: %s" % (self.upstream, seen)
        return seen


class HostSilent(Fault):
    """(b) The upstream gone silent, as a pulled cable: the host side of its veth set down on this machine, so
    nothing it sends arrives and no ICMP either; inside the container the interface, its addresses and
    routes stay, and setting the link up again is a real "cable back"."""

    kind = "host_silent"

    def __init__(self, upstream):
        super(HostSilent, self).__init__(upstream)
        self.veth = host_veth(upstream)

    def _apply(self):
        subprocess.check_call(["ip", "link", "set", self.veth, "down"])

    def _restore(self):
        subprocess.check_call(["ip", "link", "set", self.veth, "up"])

    def check_applied(self):
        seen = probe_from_proxy(self.upstream)
        assert not seen["ping"] and seen["closed_port"] == "timeout" and seen["dns"] == "timeout", \
            "%s's link is down, yet the proxy got %s" % (self.upstream, seen)
        assert seen["dns_local"] == "answer", "%s's DNS server should still run: %s" % (self.upstream, seen)
        route = self.host.check_output("ip -4 route show default")
        assert route, "%s lost its default route with its link" % self.upstream
        return seen


FAULTS = {cls.kind: cls for cls in (DnsStopped, HostSilent)}


@contextlib.contextmanager
def fault(kind, upstream=FAULTY):
    """A Fault of ``kind`` ("dns_stopped", "host_silent") on ``upstream``, applied by the caller with apply()
    and restored with restore(); restored when the block ends in any case."""
    injected = FAULTS[kind](upstream)
    try:
        yield injected
    finally:
        injected.restore()


def wait_back(upstream, within=RETURN_WITHIN):
    """Wait (bounded) until ``upstream`` is back: the proxy gets its echo replies and its ICMP port unreachables,
    and its DNS server answers on the host. Returns the seconds waited, None if it was not back within
    ``within`` seconds."""
    begin = time.time()
    while True:
        seen = probe_from_proxy(upstream)
        if seen["ping"] and seen["closed_port"] == "refused" and seen["dns_local"] == "answer":
            return round(time.time() - begin, 3)
        if time.time() - begin >= within:
            return None
        time.sleep(0.2)


# --- the health checker's state (when there is one) ------------------------------------------------------

def read_checker_state():
    """The health checker's state file on the proxy as a dict, None without one."""
    out = labcheck.lab_host("lb").run("cat %s" % STATE_FILE)
    if out.rc != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def checker_since(state, address, wanted="down", service=None):
    """The latest since_epoch of an entry {"state": ``wanted``, "since_epoch": ...} in ``state`` found under a key
    naming ``address`` (the address, or address:port) and, when ``service`` is given, under a key containing it;
    None if there is none. Tolerant of the nesting (service -> upstream -> entry)."""
    found = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if node.get("state") == wanted and "since_epoch" in node:
            names_address = any(key == address or key.startswith(address + ":") for key in path)
            names_service = service is None or any(service in key for key in path)
            if names_address and names_service:
                found.append(float(node["since_epoch"]))
        for key, value in node.items():
            walk(value, path + [str(key)])

    walk(state or {}, [])
    return max(found) if found else None


# --- analysis --------------------------------------------------------------------------------------------

def analyse(records, fault_time, return_time, address, removal_state=None, grace=GRACE, quiet=OBSERVED_QUIET):
    """Figures of a run with a fault on the upstream at ``address`` from ``fault_time`` to ``return_time``.
    A query is lost when it was not answered within the load's timeout; its time is its send time.

    Removal (when the upstream stopped receiving its share), two definitions:
    - removal_state: the checker's since_epoch of the upstream's "down" state, when its state file has one;
    - removal_observed: from the client alone, the send time of the last query lost between the fault and the
      return, if nothing was lost for at least ``quiet`` seconds before the return (fault_time when nothing was
      lost at all); None when the losses went on until the return: the upstream was never taken out.
    ``removal`` is removal_state when there is one, else removal_observed; lost_fault_to_removal and
    lost_after_removal split the losses between fault and return at it (with the observed definition the
    latter is 0 by construction; with no removal at all every loss is before it).

    Also: lost_before_fault; lost_after_fault_grace (sent from fault + ``grace`` to the return: the number the
    fix must bring to 0); time_to_return (the first answer by the upstream received after its return, minus
    the return time; None if it never answered again); lost_after_return; sent, answered, lost; answers per
    upstream before the fault, between fault and return, and after the return; losses per client socket
    between fault and return."""
    def lost(begin, end):
        return sum(1 for r in records if not r["answered"] and begin <= r["sent"] < end)

    def shares(begin, end):
        counts = {}
        for r in records:
            if r["answered"] and begin <= r["sent"] < end:
                counts[r["upstream"]] = counts.get(r["upstream"], 0) + 1
        return dict(sorted(counts.items()))

    inf = float("inf")
    window = [r for r in records if not r["answered"] and fault_time <= r["sent"] < return_time]
    if not window:
        removal_observed = fault_time
    elif return_time - max(r["sent"] for r in window) >= quiet:
        removal_observed = max(r["sent"] for r in window) + 1e-6  # just after the last loss
    else:
        removal_observed = None
    removal = removal_state if removal_state is not None else removal_observed
    split = return_time if removal is None else min(max(removal, fault_time), return_time)
    back = [r["answer"] for r in records if r["answered"] and r["upstream"] == address and r["answer"] >= return_time]
    by_socket = {}
    for r in window:
        by_socket[r["sock"]] = by_socket.get(r["sock"], 0) + 1

    def since_fault(t):
        return None if t is None else round(t - fault_time, 3)

    return {
        "sent": len(records),
        "answered": sum(1 for r in records if r["answered"]),
        "lost": sum(1 for r in records if not r["answered"]),
        "late": sum(1 for r in records if r.get("late")),
        "lost_before_fault": lost(-inf, fault_time),
        "lost_fault_to_return": len(window),
        "lost_after_fault_grace": lost(fault_time + grace, return_time),
        "sent_after_fault_grace": sum(1 for r in records if fault_time + grace <= r["sent"] < return_time),
        "removal_definition": "state" if removal_state is not None else "observed",
        "time_to_removal": since_fault(removal),
        "time_to_removal_state": since_fault(removal_state),
        "time_to_removal_observed": since_fault(removal_observed),
        "lost_fault_to_removal": lost(fault_time, split),
        "lost_after_removal": lost(split, return_time),
        "time_to_return": round(min(back) - return_time, 3) if back else None,
        "lost_after_return": lost(return_time, inf),
        "down_seconds": round(return_time - fault_time, 3),
        "answers_before_fault": shares(-inf, fault_time),
        "answers_during_fault": shares(fault_time, return_time),
        "answers_after_return": shares(return_time, inf),
        "lost_by_socket_during_fault": dict(sorted(by_socket.items())),
    }


def analyse_reloads(records, reload_times):
    """Figures of a run with graceful reloads at ``reload_times``: sent, answered, lost, lost while reloading
    (sent from the first reload to one timeout after the last), and the longest run of consecutive losses."""
    first, last = min(reload_times), max(reload_times) + LOAD_TIMEOUT
    longest = run = 0
    for r in sorted(records, key=lambda r: r["sent"]):
        run = 0 if r["answered"] else run + 1
        longest = max(longest, run)
    return {
        "sent": len(records),
        "answered": sum(1 for r in records if r["answered"]),
        "lost": sum(1 for r in records if not r["answered"]),
        "lost_while_reloading": sum(1 for r in records if not r["answered"] and first <= r["sent"] < last),
        "reloads": len(reload_times),
        "longest_loss_run": longest,
    }


# --- the checks the scenarios run --------------------------------------------------------------------------

def assert_method(method):
    """The proxy runs ``method`` (its stream configuration names it), so that figures are not mislabelled."""
    conf = labcheck.lab_host("lb").check_output("nginx -T 2>/dev/null")
    assert "# Method: %s." % method in conf, "the proxy does not run %s" % method


def nginx_workers(serving=True):
    """PIDs of the nginx workers on the proxy: those serving (``serving``) or those shutting down after a reload
    but still holding sessions of their own."""
    out = labcheck.lab_host("lb").check_output("ps -o pid=,args= --ppid $(cat /run/nginx.pid)")
    return {line.split()[0] for line in out.splitlines() if ("shutting down" in line) != serving}


def check_upstream_fault(method, kind, upstream=FAULTY):
    """Under the client's load, ``kind`` of fault on ``upstream`` at FAULT_AT, back at RETURN_AT: nothing sent
    from GRACE seconds after the fault until the return is lost, and the upstream answers again within
    RETURN_WITHIN seconds of its return. Prints the figures on one line starting with "health"."""
    assert_method(method)
    address = labcheck.UPSTREAMS[upstream]
    began = time.time()
    with fault(kind, upstream) as injected:
        with load(LOAD_SECONDS) as run:
            run.wait_until(FAULT_AT)
            injected.apply()
            seen = injected.check_applied()
            run.wait_until(RETURN_AT)
            state_down = read_checker_state()
            injected.restore()
            back_seconds = wait_back(upstream)
    state_after = read_checker_state()
    figures = analyse(run.records, injected.time, injected.returned, address,
                      removal_state=checker_since(state_down, address, "down"))
    up_again = checker_since(state_after, address, "up")
    figures["checker_up_after_return"] = None if up_again is None else round(up_again - injected.returned, 3)
    figures["checker_state"] = state_down is not None
    figures["fault_command_seconds"] = round(injected.applied - injected.time, 3)
    figures["back_as_seen_from_the_proxy"] = back_seconds
    figures["wall_seconds"] = round(time.time() - began, 1)
    removal, back = figures["time_to_removal"], figures["time_to_return"]
    print("health %s %s on %s: sent %d, lost %d (%d before the fault, %d between fault and return, %d of %d sent "
          "after fault+%gs, %d after the return); removed %s (%s); answered again %s; %.1f s" % (
              method, kind, upstream, figures["sent"], figures["lost"], figures["lost_before_fault"],
              figures["lost_fault_to_return"], figures["lost_after_fault_grace"], figures["sent_after_fault_grace"],
              GRACE, figures["lost_after_return"],
              "never before the return" if removal is None else "%.2f s after the fault" % removal,
              figures["removal_definition"], "never" if back is None else "%.3f s after its return" % back,
              figures["wall_seconds"]))
    print("  the proxy saw from %s during the fault: %s" % (upstream, seen))
    print("  figures: %s" % json.dumps(figures, sort_keys=True))
    assert back_seconds is not None, "%s was not back within %gs of its return (%s)" % (upstream, RETURN_WITHIN, kind)
    assert figures["lost_after_fault_grace"] == 0, \
        "%s: %d of %d queries sent from %gs after the fault (%s on %s) until its return were lost" % (
            method, figures["lost_after_fault_grace"], figures["sent_after_fault_grace"], GRACE, kind, upstream)
    assert figures["time_to_return"] is not None and figures["time_to_return"] <= RETURN_WITHIN, \
        "%s: %s did not answer again within %gs of its return (%s)" % (method, upstream, RETURN_WITHIN, kind)
    return figures


def check_reloads_under_load(method, in_flight_allowance=0):
    """RELOADS graceful reloads of nginx (systemctl reload), one every RELOAD_EVERY seconds, under the client's
    load: not one query lost (or, with ``in_flight_allowance`` N, at most N per reload, never two in a row), and
    the workers were really replaced. Prints one line starting with "health"."""
    assert_method(method)
    proxy = labcheck.lab_host("lb")
    workers_before = nginx_workers()
    began = time.time()
    reloads = []
    with load(RELOAD_LOAD_SECONDS) as run:
        for i in range(RELOADS):
            run.wait_until(RELOAD_AT + i * RELOAD_EVERY)
            reloads.append(time.time())
            proxy.check_output("systemctl reload nginx")
    figures = analyse_reloads(run.records, reloads)
    figures["new_workers"] = len(nginx_workers() - workers_before)
    # workers that served before the reloads and still hold sessions (they go at the sessions' proxy_timeout)
    figures["old_workers_left"] = len(nginx_workers(serving=False) & workers_before)
    figures["wall_seconds"] = round(time.time() - began, 1)
    print("health %s %d reloads under load: sent %d, lost %d (%d while reloading, at most %d in a row); nginx "
          "workers: %d new, %d of those serving before still shutting down; %.1f s" % (
              method, figures["reloads"], figures["sent"], figures["lost"], figures["lost_while_reloading"],
              figures["longest_loss_run"], figures["new_workers"], figures["old_workers_left"], figures["wall_seconds"]))
    assert figures["new_workers"], "the reloads did not start new nginx workers"
    assert figures["lost"] <= in_flight_allowance * RELOADS, "%s: %d of %d queries lost across %d reloads" % (
        method, figures["lost"], figures["sent"], RELOADS)
    assert figures["longest_loss_run"] <= min(1, in_flight_allowance), "%s: %d queries lost in a row" % (
        method, figures["longest_loss_run"])
    return figures
