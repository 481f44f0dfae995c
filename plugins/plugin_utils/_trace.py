# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Packet trace of the troubleshoot role's probes through the tcpdump captures of every host.

Pure functions, run on the controller: ``probe_plan`` (which services to probe, from which client
ports), ``parse_probes`` (the probe loop's output), ``parse_capture``
(tcpdump lines as events), ``trace`` (follows each probe hop by hop and names the host where the
probe or its reply disappeared), ``upstream_address``. Each probe is followed by its service's method
(``probe["method"]``, else ``config["method"]``): a proxy may serve each service by another method.
An IPv6 probe (``probe["family"]`` 6) is sent to the IPv6 VIP (``probe["vip"]``) from the IPv6 client address and
followed through the upstreams' IPv6 addresses (``config["upstream_hosts6"]``); an IPv4 probe carries neither key.
No import of the other troubleshoot modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

# tcpdump prints `IP a.b.c.d.port > ...` and `IP6 x:y::z.port > ...` (the port after a dot in both families)
LINE = re.compile(r"^(?P<t>\d+\.\d+)\s+(?P<iface>\S+)\s+(?P<dir>In|Out|B|M|P)\s+(?P<ip>IP6?)\s+(?P<src>[0-9a-f.:]+?)(?:\.(?P<sport>\d+))?\s+>\s+"
                  r"(?P<dst>[0-9a-f.:]+?)(?:\.(?P<dport>\d+))?:\s+(?P<info>.*)$")


def parse_capture(host, lines):
    events = []
    for line in lines:
        match = LINE.match(line.strip())
        if not match:
            continue
        event = match.groupdict()
        event["family"] = 6 if event.pop("ip") == "IP6" else 4
        # an address with four dots and no port would be split wrongly: an IPv4 address has exactly three
        for key, port in (("src", "sport"), ("dst", "dport")):
            if event["family"] == 4 and event[key].count(".") != 3 and event[port]:
                event[key], event[port] = event[key] + "." + event[port], None
        event["t"] = float(event["t"])
        event["host"] = host
        event["sport"] = int(event["sport"]) if event["sport"] else None
        event["dport"] = int(event["dport"]) if event["dport"] else None
        info = event["info"]
        event["proto"] = "icmp" if info.startswith("ICMP") else "tcp" if "Flags [" in info else "udp"
        length = re.search(r"length (\d+)", info)
        event["payload"] = int(length.group(1)) if length else 0
        events.append(event)
    return events


def _canon(address):
    """An IPv6 address as tcpdump prints it (compressed, lower case); anything else unchanged."""
    if ":" not in (address or ""):
        return address
    try:
        return str(ipaddress.ip_address(u"%s" % address))
    except ValueError:
        return address


def probe_family(probe):
    return probe.get("family") or 4


def probe_vip(config, probe):
    """The VIP a probe was sent to: the IPv6 VIP it carries, else the (IPv4) public address."""
    return probe.get("vip") or config["public_address"]


def _upstream_hosts(config, probe):
    """upstream host -> its upstream address of the probe's family."""
    if probe_family(probe) == 6:
        return dict((name, _canon(address)) for name, address in (config.get("upstream_hosts6") or {}).items() if address)
    return config["upstream_hosts"]


def probe_method(config, probe):
    """The method a probe's service is served by: the probe's own, else the proxy's."""
    return probe.get("method") or config["method"]


def _stages(config, probe, leg):
    """The hops a probe and its reply take with the method: (name, host or '@upstream', predicate).
    ``leg`` holds the upstream connection once seen (address, proxy-side port): later hops must belong to it."""
    vip, client, port, uport = _canon(probe_vip(config, probe)), _canon(probe["client_address"]), probe["port"], probe["upstream_port"]
    proxy = config["proxy_host"]
    ups = set(_upstream_hosts(config, probe).values())
    stages = [
        ("request sent by the client", probe["host"], lambda e: e["dir"] == "Out" and e["src"] == client and e["dst"] == vip and e["dport"] == port),
        ("request received by the proxy (public side)", proxy, lambda e: e["dir"] == "In" and e["src"] == client and e["dst"] == vip and e["dport"] == port),
        ("request sent to an upstream with the client's address", proxy,
         lambda e: e["dir"] == "Out" and e["src"] == client and e["dst"] in ups and e["dport"] == uport),
        ("request received by the upstream", "@upstream",
         lambda e: e["dir"] == "In" and e["src"] == client and e["dport"] == uport and (e["dst"], e["sport"]) == leg.get("up")),
        ("reply sent by the upstream", "@upstream",
         lambda e: e["dir"] == "Out" and e["dst"] == client and e["sport"] == uport and e["dport"] == leg["up"][1]),
    ]
    # TCP: nginx answers the client's handshake itself; what comes back through it is the upstream's data
    data = probe.get("protocol") != "tcp"
    method = probe_method(config, probe)

    if method != "dsr_origin_nat":
        stages.append(("reply received by the proxy (private side)", proxy,
                       lambda e: e["dir"] == "In" and e["dst"] == client and (e["src"], e["dport"]) == leg["up"] and e["sport"] == uport))
        stages.append(("reply sent to the client by the proxy" if method == "ip_transparency" else
                       "reply forwarded to the client, source rewritten to the VIP", proxy,
                       lambda e: e["dir"] == "Out" and e["dst"] == client and e["src"] == vip and e["sport"] == port and (data or e["payload"] > 0)))
    stages.append(("reply received by the client from the VIP", probe["host"],
                   lambda e: e["dir"] == "In" and e["dst"] == client and e["src"] == vip and e["sport"] == port and e["dport"] == probe["client_port"]
                   and (data or e["payload"] > 0)))
    return stages


def hop_summary(event):
    """A hop in a few words: its TCP flags and payload length, else the start of tcpdump's text."""
    flags = re.search(r"Flags \[[^\]]*\]", event["info"])
    if flags:
        return "%s length %d" % (flags.group(0), event["payload"])
    return event["info"].split(" (")[0][:40]


def trace_probe(config, probe, events):
    """Follow one probe. ``events``: every host's events within the probe's time window."""
    by_address = dict((addr, name) for name, addr in _upstream_hosts(config, probe).items())
    leg = {}
    stages = _stages(config, probe, leg)
    hops, upstream = [], None
    if probe_method(config, probe) != "ip_transparency":
        # DSR keeps the client's port on every leg: only this probe's packets
        events = [e for e in events if probe["client_port"] in (e["sport"], e["dport"]) or e["proto"] == "icmp"]
    for index, (name, where, predicate) in enumerate(stages):
        host = upstream if where == "@upstream" else where
        candidates = [e for e in events if (host is None or e["host"] == host) and predicate(e)
                      and (where != "@upstream" or e["host"] in by_address.values())]
        if hops:
            candidates = [e for e in candidates if e["t"] >= hops[-1]["t"] - 0.00005]
        if not candidates:
            return hops, index, name, host
        event = candidates[0]
        if index == 2:
            upstream = by_address.get(event["dst"])
            leg["up"] = (event["dst"], event["sport"])
        elif where == "@upstream" and upstream is None:
            upstream = event["host"]
        hops.append(dict(event, stage=name, summary=hop_summary(event)))
    return hops, None, None, None


def _explain(config, probe, hops, missing, host, events):
    last = hops[-1] if hops else None
    client, vip = _canon(probe["client_address"]), _canon(probe_vip(config, probe))
    if last is None:
        return "the probe never left %s (no packet to %s captured there)" % (probe["host"], endpoint(vip, probe["port"])), probe["host"]
    if last["host"] == (host or last["host"]) or host is None:
        culprit = last["host"]
        what = "arrived on %s (%s %s) and went no further: dropped on %s" % (culprit, last["iface"], last["dir"], culprit)
    else:
        culprit = last["host"]
        what = "left %s by %s towards %s but never arrived at %s" % (culprit, last["iface"], last["dst"], host)
    upstream_hosts = set(config["upstream_hosts"]) | set(config.get("upstream_hosts6") or {})
    stray = [e for e in events if e["dst"] == client and e["src"] != vip and e["t"] >= last["t"] and e["host"] not in upstream_hosts
             and ((e["dir"] == "Out" and e["host"] != probe["host"]) or (e["dir"] == "In" and e["host"] == probe["host"]))]
    if stray:
        e = stray[0]
        if e["host"] == probe["host"]:
            what += "; the client received it from %s (not %s) and discards it" % (e["src"], vip)
        elif e["host"] == last["host"]:
            what = "%s forwarded it out of %s with source %s, not rewritten to %s: the client discards it" % (e["host"], e["iface"], e["src"], vip)
        else:
            what += "; instead %s sent it out of %s with source %s (not %s): the client discards it" % (e["host"], e["iface"], e["src"], vip)
            culprit = e["host"]
    icmp = [e for e in events if e["proto"] == "icmp" and e["t"] >= last["t"]]
    if icmp:
        what += "; ICMP from %s: %s" % (icmp[0]["src"], icmp[0]["info"])
    return "disappeared after '%s': %s (next expected: %s)" % (last["stage"], what, missing), culprit


def endpoint(address, port):
    """address:port, [address]:port for IPv6."""
    return ("[%s]:%d" if ":" in address else "%s:%d") % (address, port)


def upstream_address(facts, upstreams, version=4):
    """The configured upstream address a host holds, one of ``version`` first ('' when none); version 6: an IPv6
    one only (the IPv6 probes are followed through it)."""
    held = set(_canon(a["address"]) for a in (facts or {}).get("addresses", []))
    mine = [u for u in upstreams if _canon(u) in held]
    if int(version) == 6:
        return next((u for u in mine if ":" in u), "")
    return next((u for u in mine if ":" not in u), mine[0] if mine else "")


def parse_probes(lines, host, client_address, service, kind, vip=""):
    """The probe loop's output (``<client port> <rc> <answer>`` per probe) -> probe dicts for trace(). With an IPv6
    ``vip`` (the probes of the IPv6 VIP), each probe carries ``family`` 6 and ``vip``."""
    probes = []
    for line in lines or []:
        fields = line.split(None, 2)
        if len(fields) < 2 or not fields[0].isdigit():
            continue
        answer = fields[2] if len(fields) > 2 else ""
        probes.append({"host": host, "client_address": client_address, "client_port": int(fields[0]), "port": int(service["port"]),
                       "protocol": service["protocol"],
                       "upstream_port": int(service["upstream_port"]), "kind": kind, "answered": fields[1] == "0",
                       "output": answer})
        probes[-1].update((key, service[field]) for key, field in (("service", "name"), ("method", "method")) if service.get(field))
        if ":" in (vip or ""):
            probes[-1].update(family=6, vip=_canon(vip), client_address=_canon(client_address))
    return probes


PORTS_PER_SERVICE = 16  # the probes of each service come from their own block of client ports (at most 16 probes)
METHOD_ORDER = ("ip_transparency", "dsr_router_nat", "dsr_origin_nat")


def _choose(config, services, name):
    if name:
        return [s for s in services if s["name"] == name][:1]
    chosen = []
    for method in [m for m in METHOD_ORDER if any(probe_method(config, s) == m for s in services)]:
        mine = [s for s in services if probe_method(config, s) == method]
        candidates = ([s for s in mine if s.get("http")] if method == "ip_transparency" else []) \
            + [s for s in mine if s["protocol"] == "udp"] + mine
        chosen.append(candidates[0])
    return chosen


def probe_plan(config, name, base_port, count, count6=None):
    """The services to probe and the client ports of their probes: the one named ``name``, else one service of each
    method the proxy serves (IP Transparency: its first HTTP service, else its first UDP one; DSR: its first UDP one).
    Returns [{service, kind (http|dns), ports}], each service's ports from ``base_port`` + 16 * its rank.
    When the IPv6 VIP and client (``public_address6``, ``client_address6``) are known, the services with IPv6
    upstreams are chosen the same way among themselves and probed over IPv6 too (``count6`` probes each, default
    ``count``): these entries come after the IPv4 ones, from the next blocks of ports, with ``family`` 6, ``vip`` and
    ``client_address``."""
    services = config["services"]
    chosen = [(s, {}) for s in _choose(config, services, name)]
    vip6, client6 = config.get("public_address6") or "", config.get("client_address6") or ""
    if ":" in vip6 and ":" in client6:
        with6 = [s for s in services if any(":" in u for u in s["upstreams"])]
        chosen += [(s, {"family": 6, "vip": vip6, "client_address": client6}) for s in _choose(config, with6, name)]
    base = int(base_port)
    plan = []
    for rank, (service, family) in enumerate(chosen):
        first, number = base + PORTS_PER_SERVICE * rank, int(count6 if family and count6 is not None else count)
        plan.append(dict({"service": service, "kind": "http" if service.get("http") else "dns", "ports": list(range(first, first + number))},
                         **family))
    return plan


def trace(config, probes, captures):
    """``probes``: [{host, client_address, client_port, port, upstream_port, kind, start, answered, output}];
    ``captures``: host -> tcpdump lines. Returns one result per probe: hops, verdict, culprit host."""
    events = sorted((e for host, lines in captures.items() for e in parse_capture(host, lines)), key=lambda e: e["t"])
    starts = []
    for probe in probes:
        first = [e for e in events if e["host"] == probe["host"] and e["dir"] == "Out" and e["sport"] == probe["client_port"]]
        starts.append(first[0]["t"] if first else None)
    results = []
    for index, probe in enumerate(probes):
        start = starts[index]
        later = [s for s in starts[index + 1:] if s is not None]
        window = [e for e in events if start is not None and start - 0.0005 <= e["t"] < (later[0] - 0.0005 if later else float("inf"))]
        hops, missing_index, missing, host = trace_probe(config, probe, window)
        if missing_index is None:
            verdict, culprit, ok = "complete: the reply reached the client from %s" % probe_vip(config, probe), None, True
        else:
            verdict, culprit = _explain(config, probe, hops, missing, host, window)
            ok = False
        results.append({"probe": probe, "hops": hops, "ok": ok, "verdict": verdict, "culprit": culprit, "start": start})
    return results
