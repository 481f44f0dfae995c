# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Diagnosis of a transparent proxy deployment from read-only snapshots (transparency_info).

Pure functions, run on the controller by the troubleshoot role's filters: ``diagnose(config, hosts)``
runs the article's troubleshooting checklist as checks over every proxy and upstream host - nginx
(transparent binding, proxy_responses, worker privileges), the active health checker, the fwmark
rule, local route and reply marking, forwarding, the stateless NAT rules and whether the kernel can
run them, the upstreams' route back to the clients, effective reverse-path filtering against the
real routes, overlapping networks, reachability (ping). Each result is
``{host, check, severity (ok|info|warning|error), problem, evidence, fix}`` (info: what was left unchecked, e.g.
IPv6 upstreams without an IPv6 client address). IPv6 has no rp_filter sysctl: its reverse-path filters are firewall
rules (``nft -j list ruleset`` and ``ip6tables-save``, read by the role), classified by _rpfilter6. A dual-stack
service has one nginx server block and upstream group per family: each is checked, IPv6 upstreams against the IPv6
rules, routes, forwarding and VIP. ``ping_plan`` and ``first_host`` prepare the role's inputs. Imports _nginx_conf and _rpfilter6; nothing imports back.

One proxy may serve each service by its own method (``service["method"]``, settled by
``service_methods``; a service without one takes ``config["method"]``): each method's checks run for
its own services only - the fwmark marking for the IP Transparency ones, forwarding and the router NAT
for the DSR router NAT ones, the origin NAT on the upstreams for the DSR origin NAT ones - and, when
origin NAT is mixed with a method whose replies go back via the proxy, the upstreams' rules that route
only those services' replies (by protocol and source port) to a table whose default route is the proxy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _addresses
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ValidationError, parse_address, parse_prefix
from ansible_collections.netops.ip_transparency.plugins.plugin_utils._nginx_conf import METHODS, detect_method, dump_directive, find_servers
from ansible_collections.netops.ip_transparency.plugins.plugin_utils._nginx_conf import parse_nginx, server_method
from ansible_collections.netops.ip_transparency.plugins.plugin_utils._rpfilter6 import rpfilter6_drops, rpfilter6_rules, rule_applies, uses_mark

STRICT, LOOSE, OFF = "strict", "loose", "off"
MAIN_RULE_PRIORITY = 32766
NFT_EGRESS_KERNEL = (5, 16)  # the netdev egress hook of the nftables NAT backend
IP_PROTOCOLS = {"6": "tcp", "17": "udp"}


# --- small helpers -------------------------------------------------------------------------------


def _ip(value):
    """An address, or None (the report names bad values instead of failing)."""
    try:
        return parse_address(value)
    except ValidationError:
        return None


def _net(value):
    """A prefix (host bits allowed), or None."""
    try:
        return parse_prefix(value, strict=False)
    except ValidationError:
        return None


def _version(address):
    """4 or 6 for an address, None for anything else."""
    found = _ip(address)
    return found.version if found is not None else None


def _of(addresses, version):
    """The addresses of one family, in their order."""
    return [a for a in addresses if _version(a) == version]


def _families(services):
    """The families (4, 6) of the services' upstreams, IPv4 (the collection's first family) when none is known."""
    found = set(_version(u) for s in services for u in s["upstreams"]) - set([None])
    return sorted(found) or [4]


def _kernel_version(release):
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


class Results(object):
    """Collects the outcome of every check."""

    def __init__(self):
        self.items = []

    def add(self, host, check, severity, problem, evidence=(), fix=""):
        self.items.append({"host": host, "check": check, "severity": severity, "problem": problem,
                           "evidence": [str(line) for line in evidence], "fix": fix})

    def ok(self, host, check, what):
        self.add(host, check, "ok", what)


# --- the method of each service -------------------------------------------------------------------


def method_of(config, service):
    """The method a service is checked for: its own, else the proxy's."""
    return service.get("method") or config["method"]


def methods_of(config):
    """The methods of the services, in the order of METHODS (the proxy's method when no service has one)."""
    found = set(method_of(config, s) for s in config["services"])
    return [m for m in METHODS if m in found] or [config["method"]]


def services_by(config, *methods):
    return [s for s in config["services"] if method_of(config, s) in methods]


def _names(services):
    return ", ".join(s["name"] for s in services)


def _for(config, services):
    """' (for <services>)' when the proxy mixes methods: a proxy-wide finding names the services it concerns."""
    return " (for %s)" % _names(services) if len(methods_of(config)) > 1 else ""


def service_methods(services, facts, forced="", default="", keep_all=False):
    """Each service with the method it is checked for (``method``) and where that came from (``method_from``):
    ``forced`` (troubleshoot_method), else what the proxy's nginx files deploy (the service's server block's
    ``# Service <name>: method <m>.``, else the header's single ``# Method: <m>.``), else the service's own
    ``method`` in the inventory, else ``default`` (nginx_transparent_proxy_method), else ip_transparency.
    ``inventory_method`` and ``deployed_method`` keep both sides ('' when unknown). DSR carries UDP only: a DSR
    service that is TCP or HTTP is left out, unless ``keep_all`` (troubleshoot_services given)."""
    for value, what in [(forced, "troubleshoot_method"), (default, "nginx_transparent_proxy_method")] + [
            (s.get("method"), "the method of service %s" % s.get("name")) for s in services]:
        if value and value not in METHODS:
            raise ValidationError("%s is %r: it must be one of %s" % (what, value, ", ".join(METHODS)))
    parsed = parse_nginx((facts.get("nginx") or {}).get("config"))
    header = detect_method(facts)
    result = []
    for service in services:
        marks = [server_method(server) for _f, server in find_servers(parsed, service)]
        marks = [m for m in marks if m and m[0] == service["name"]] or [m for m in marks if m]
        deployed = marks[0][1] if marks else header
        wanted = service.get("method") or ""
        if forced:
            method, source = forced, "troubleshoot_method"
        elif deployed:
            method, source = deployed, "nginx"
        else:
            method, source = wanted or default or "ip_transparency", "inventory"
        if keep_all or method == "ip_transparency" or (service.get("protocol") == "udp" and not service.get("http")):
            result.append(dict(service, method=method, method_from=source, inventory_method=wanted, deployed_method=deployed or ""))
    return result


def check_service_methods(results, host, config):
    """The services' methods: an inventory method other than the deployed one (warning); in a mix, two services of
    different methods whose replies cannot be told apart (same protocol and upstream port on an upstream)."""
    for service in config["services"]:
        wanted, deployed = service.get("inventory_method"), service.get("deployed_method")
        if wanted and deployed and wanted != deployed and service.get("method_from") == "nginx":
            results.add(host, "service_methods", "warning",
                        "service %s: the inventory asks for %s, the nginx files on %s deploy %s (checked as deployed)"
                        % (service["name"], wanted, host, deployed),
                        ["nginx_transparent_proxy_services: %s method %s" % (service["name"], wanted),
                         "nginx -T: # Service %s: method %s." % (service["name"], deployed)],
                        "Apply the playbooks again to deploy %s for %s (or correct the service's method in the inventory)."
                        % (wanted, service["name"]))
    if len(methods_of(config)) < 2:
        return
    clashes = []
    services = config["services"]
    for index, one in enumerate(services):
        for other in services[index + 1:]:
            shared = sorted(set(one["upstreams"]) & set(other["upstreams"]))
            if (one["protocol"], one["upstream_port"]) == (other["protocol"], other["upstream_port"]) and shared \
                    and method_of(config, one) != method_of(config, other):
                clashes.append((one, other, shared))
    for one, other, shared in clashes:
        results.add(host, "service_methods", "error",
                    "services %s (%s) and %s (%s) both reach %s on %s %d: their replies cannot be told apart (the marking, the NAT "
                    "and the upstreams' source port rules select replies by protocol and source port)"
                    % (one["name"], method_of(config, one), other["name"], method_of(config, other), ", ".join(shared),
                       one["protocol"], one["upstream_port"]),
                    ["%s: %s %s %d -> %s" % (s["name"], method_of(config, s), s["protocol"], s["upstream_port"], ", ".join(s["upstreams"]))
                     for s in (one, other)],
                    "Give one of them another upstream port (upstream_port) or other upstreams, or the same method.")
    if not clashes:
        results.ok(host, "service_methods", ", ".join("%s: %s" % (s["name"], method_of(config, s)) for s in services))


def _server_families(server):
    """The families of a server block's listeners: 6 for ``[addr]:port``, 4 otherwise."""
    found = set(6 if listen.args and listen.args[0].startswith("[") else 4 for listen in server.directives("listen"))
    return sorted(found) or [4]


def _wanted_bind(method, family):
    """What proxy_bind must say for a method and a client family. DSR keeps the client's port: an IPv6 address needs
    brackets before it, else nginx parses ``addr:port`` as one IPv6 address (a wrong bind) or rejects it."""
    if method == "ip_transparency":
        return "$remote_addr"
    return "[$remote_addr]:$remote_port" if family == 6 else "$remote_addr:$remote_port"


def _bind_problem(method, families, bind):
    """Why a server block's proxy_bind is wrong for its method and listeners' families: (kind, text) or None."""
    first = bind.args[0] if bind is not None and bind.args else ""
    if bind is None or "transparent" not in bind.args or not (first.startswith("$remote_addr") or first.startswith("[$remote_addr]")):
        return "own", None
    for family in families:
        want = _wanted_bind(method, family)
        if family == 6 and first == "$remote_addr:$remote_port":
            return "ipv6_port", want
        if method == "ip_transparency":
            if family == 4 and first.startswith("["):
                return "brackets", want
        elif first != want:
            return "port", want
    return None


def _upstream_addresses(parsed, server):
    """The addresses of the servers of the upstream group a server block passes to (its own block and the files it
    includes, which ``nginx -T`` prints too): [(address, line)]; hostnames and unix sockets are left out."""
    target = server.inherited("proxy_pass")
    name = target.args[0].split("://", 1)[-1].split("/", 1)[0] if target is not None and target.args else ""
    files = dict(parsed)
    found = []
    for _fname, root in parsed:
        for block in root.walk():
            if block.name != "upstream" or block.args[:1] != [name]:
                continue
            entries = block.directives("server")
            for include in block.directives("include"):
                entries += [d for path, iroot in files.items() if include.args and path == include.args[0] for d in iroot.directives("server")]
            for entry in entries:
                text = entry.args[0] if entry.args else ""
                address = text[1:].split("]", 1)[0] if text.startswith("[") else text.rsplit(":", 1)[0]
                if _ip(address) is not None:
                    found.append((address, dump_directive(entry)))
    return found


def check_nginx(results, host, config, facts):
    nginx = facts.get("nginx") or {}
    if nginx.get("rc") != 0:
        results.add(host, "nginx_config", "error", "nginx -T fails: the configuration is invalid or nginx is not installed",
                    nginx.get("test") or ["rc %s" % nginx.get("rc")],
                    "Run `nginx -t` on %s and correct the reported line, or apply the playbook of the method%s."
                    % (host, "s" if len(methods_of(config)) > 1 else ""))
        return
    results.ok(host, "nginx_config", "nginx -T reads the configuration")
    parsed = parse_nginx(nginx.get("config"))
    users = [d for _f, root in parsed for d in root.directives("user")]
    for service in config["services"]:
        method = method_of(config, service)
        label = "%s (%s/%d)" % (service["name"], service["protocol"], service["port"])
        servers = find_servers(parsed, service)
        if not servers:
            results.add(host, "nginx_listen", "error", "no nginx server listens on %s" % label,
                        ["listen directives: %s" % ", ".join(sorted(set(" ".join(d.args) for _f, r in parsed for d in r.walk() if d.name == "listen")))],
                        "Add the service to nginx_transparent_proxy_services and apply the %s playbook." % method)
            continue
        for fname, server in servers:
            check_server(results, host, service, method, parsed, fname, server)
    check_workers(results, host, nginx, users)


def check_server(results, host, service, method, parsed, fname, server):
    """One server block of a service (a dual-stack service has one per family): its transparent binding for the
    method and the family of its listeners, the family of the upstream group it passes to, and proxy_responses."""
    families = _server_families(server)
    label = "%s (%s/%d%s)" % (service["name"], service["protocol"], service["port"], ", IPv6" if families == [6] else "")
    bind = server.inherited("proxy_bind")
    want = _wanted_bind(method, families[-1])
    evidence = ["%s: server { listen %s; ... %s }" % (fname, " ".join(server.directives("listen")[0].args), dump_directive(bind))]
    problem = _bind_problem(method, families, bind)
    if problem is not None and problem[0] == "own":
        results.add(host, "nginx_transparent", "error",
                    "%s: nginx connects to the upstreams from its own address, not the client's (no `proxy_bind %s transparent`)" % (label, want),
                    evidence, "Set `proxy_bind %s transparent;` in that server block (the role renders it) and reload nginx." % want)
    elif problem is not None and problem[0] == "ipv6_port":
        results.add(host, "nginx_transparent", "error",
                    "%s: `proxy_bind $remote_addr:$remote_port` with IPv6 clients: nginx reads `<address>:<port>` as one IPv6 address "
                    "(binds to a wrong address for ports below 10000, fails above); the address needs brackets" % label,
                    evidence, "Set `proxy_bind %s transparent;` in that server block and reload nginx." % problem[1])
    elif problem is not None and problem[0] == "brackets":
        results.add(host, "nginx_transparent", "error",
                    "%s: `%s` brackets an IPv4 client's address: nginx cannot parse it as a local address" % (label, dump_directive(bind)),
                    evidence, "Set `proxy_bind %s transparent;` (brackets only for IPv6 listeners) and reload nginx." % problem[1])
    elif problem is not None:
        results.add(host, "nginx_transparent", "error",
                    "%s: DSR needs the client's port too (`proxy_bind %s transparent`), found `%s`" % (label, problem[1], dump_directive(bind)),
                    evidence, "Set `proxy_bind %s transparent;` and reload nginx." % problem[1])
    else:
        results.ok(host, "nginx_transparent", "%s: %s" % (label, dump_directive(bind)))
    others = [(a, line) for a, line in _upstream_addresses(parsed, server) if _version(a) not in families]
    if others:
        results.add(host, "nginx_upstream_family", "error",
                    "%s: the server block listens on IPv%s but its upstream group has IPv%s servers: nginx opens the upstream socket in "
                    "the upstream's family and cannot bind it to the client's address" % (
                        label, "/".join(str(f) for f in families), "/".join(sorted(set(str(_version(a)) for a, _l in others)))),
                    evidence + ["upstream server: %s" % line for _a, line in others],
                    "One upstream group and one listener per family (the role renders netops_<name> and netops_<name>_v6).")
    if service["protocol"] != "udp":
        return
    responses = server.inherited("proxy_responses")
    value = int(responses.args[0]) if responses is not None and responses.args and responses.args[0].isdigit() else None
    if method == "ip_transparency" and value == 0:
        results.add(host, "nginx_proxy_responses", "error",
                    "%s: proxy_responses 0 with IP Transparency - nginx closes the upstream socket and the replies it "
                    "receives back have no socket to go to" % label, evidence + [dump_directive(responses)],
                    "Set proxy_responses to the number of datagrams each request gets (1 for DNS).")
    elif method != "ip_transparency" and value != 0:
        results.add(host, "nginx_proxy_responses", "error",
                    "%s: DSR needs `proxy_responses 0` - the replies bypass nginx, which otherwise waits for them and "
                    "marks the upstreams as failed" % label, evidence + [dump_directive(responses)],
                    "Set `proxy_responses 0;` and remove proxy_timeout in that server block.")
    else:
        results.ok(host, "nginx_proxy_responses", "%s: %s" % (label, dump_directive(responses)))


def check_workers(results, host, nginx, users):
    """nginx's workers can bind to the clients' addresses (CAP_NET_RAW or root); its error log about it."""
    workers = [p for p in nginx.get("processes", []) if p["role"] == "worker"]
    if not workers:
        results.add(host, "nginx_workers", "error", "no nginx worker process is running", ["processes: %s" % nginx.get("processes")],
                    "Start nginx (`systemctl start nginx`) and look at `journalctl -u nginx`.")
        return
    weak = [p for p in workers if not p["net_raw"]]
    if weak:
        results.add(host, "nginx_workers", "error",
                    "nginx workers cannot bind to the clients' addresses: %d of %d run without CAP_NET_RAW and not as root"
                    % (len(weak), len(workers)),
                    ["worker pid %d uid %d CAP_NET_RAW no" % (p["pid"], p["uid"]) for p in weak]
                    + ["user directive: %s" % (", ".join(dump_directive(u) for u in users) or "(none)")]
                    + ["error.log: %s" % line for line in nginx.get("error_log", [])],
                    "nginx >= 1.13.8 keeps CAP_NET_RAW in its workers when the configuration uses `proxy_bind ... transparent` "
                    "at start: restart nginx after adding it; on older nginx set `user root;` (the article's advice).")
    else:
        results.ok(host, "nginx_workers", "%d workers hold CAP_NET_RAW (or run as root)" % len(workers))
    errors = nginx.get("error_log", [])
    transparent = any(re.search(r"IP(V6)?_TRANSPARENT", line) for line in errors)
    if transparent and weak:
        return
    if transparent:
        results.add(host, "nginx_error_log", "warning", "nginx logged transparent binding failures (maybe from before a fix)",
                    errors, "Check that they are older than the last nginx restart.")


# --- kernel state ---------------------------------------------------------------------------------


def _rule_lines(facts):
    return ["ip rule: %s" % r["line"] for r in facts.get("rules", [])]


def _route_lines(facts, table):
    return ["ip route table %s: %s" % (table, r["line"]) for r in facts.get("routes", {}).get(str(table), [])] or ["table %s is empty" % table]


def _rule_family(line):
    """The families an nft rule selects: {6} for ``ip6 ...`` (or ``meta nfproto ipv6``), {4} for ``ip saddr ...``,
    both when it names neither (an inet table's rule without an address match)."""
    if re.search(r"\bip6 |\bnfproto ipv6\b", line):
        return set([6])
    if re.search(r"\bip (saddr|daddr|protocol) |\bnfproto ipv4\b", line):
        return set([4])
    return set([4, 6])


def _policy_facts(facts, family):
    """(rules, routes, ``ip`` or ``ip -6``) of one family; rules None when the snapshot has none of that family."""
    if family == 6:
        return facts.get("rules6"), facts.get("routes6") or {}, "ip -6"
    return facts.get("rules", []), facts.get("routes", {}), "ip"


def check_policy_routing(results, host, config, facts):
    """IP Transparency's policy routing, for its services, per family of their upstreams (an IPv6 upstream's replies
    need ``ip -6 rule fwmark ... lookup <table>`` and ``local ::/0 dev lo`` there); ``others``: the DSR router NAT
    services of the proxy, whose replies pass through it and must not be marked (they are no reply to nginx: the
    marking would deliver them to it). Origin NAT replies never reach the proxy: whether they would be marked does not matter."""
    fwmark, table = int(config["fwmark"]), int(config["route_table"])
    mine = services_by(config, "ip_transparency")
    others = services_by(config, "dsr_router_nat")
    for family in _families(mine):
        found, tables, ip = _policy_facts(facts, family)
        v6 = " (IPv6)" if family == 6 else ""
        if found is None:
            results.add(host, "fwmark_rule", "warning", "the IPv6 policy routing rules were not read: IPv6 upstreams not checked%s"
                        % _for(config, mine), ["transparency_info returned no rules6"],
                        "Run the troubleshooter with the collection's own transparency_info (it reads both families).")
            continue
        everything = "::/0" if family == 6 else "0.0.0.0/0"
        rules = [r for r in found if r["fwmark"] == fwmark and r["action"] == "lookup" and not r["selectors"]
                 and (r["fwmask"] in (None, 0xFFFFFFFF))]
        good = [r for r in rules if r["table"] == table and r["priority"] < MAIN_RULE_PRIORITY]
        rule_lines = ["%s rule: %s" % (ip, r["line"]) for r in found]
        route_lines = ["%s route table %s: %s" % (ip, table, r["line"]) for r in tables.get(str(table), [])] or ["table %s is empty" % table]
        if family == 4:
            rule_lines, route_lines = _rule_lines(facts), _route_lines(facts, table)
        if good:
            results.ok(host, "fwmark_rule", good[0]["line"] + v6)
        else:
            results.add(host, "fwmark_rule", "error",
                        "no %spolicy routing rule sends the marked replies (fwmark %#x) to table %d: the upstreams' replies are "
                        "routed (or dropped) instead of delivered to nginx%s" % ("IPv6 " if family == 6 else "", fwmark, table, _for(config, mine)),
                        rule_lines,
                        "%s rule add priority %s fwmark %d lookup %d (re-run the ip_transparency playbook, which also persists it)"
                        % (ip, config["rule_priority"], fwmark, table))
        local = [r for r in tables.get(str(table), []) if r["type"] == "local" and r["dest"] == everything and r["device"] == "lo"]
        if local:
            results.ok(host, "local_route", local[0]["line"] + v6)
        else:
            results.add(host, "local_route", "error",
                        "table %d has no `local %s dev lo`: marked replies are not delivered locally to nginx%s" % (table, everything, _for(config, mine)),
                        route_lines, "%s route add local %s dev lo table %d (re-run the playbook)" % (ip, everything, table))
    missing, marked = [], []
    for service in mine + others:
        pattern = re.compile(r"\b%s sport %d\b.*\bmark set (0x[0-9a-f]+|\d+)" % (service["protocol"], service["upstream_port"]))
        marks = [(int(m.group(1), 0), _rule_family(line)) for line, m in ((line, pattern.search(line)) for line in facts.get("nft_ruleset", [])) if m]
        for family in _families([service]):
            v6 = " (IPv6)" if family == 6 else ""
            mark_here = [mark for mark, families in marks if family in families]
            if service in mine and fwmark not in mark_here:
                missing.append("%s %s sport %d%s" % (service["name"], service["protocol"], service["upstream_port"], v6))
            elif service in others and fwmark in mark_here:
                marked.append("%s (%s, %s sport %d%s)" % (service["name"], method_of(config, service), service["protocol"], service["upstream_port"], v6))
    if marked:
        results.add(host, "reply_marking", "error",
                    "replies of router NAT services are marked %#x: the fwmark rule delivers them to nginx, which has no "
                    "socket for them (DSR replies bypass nginx) instead of forwarding them: %s" % (fwmark, "; ".join(marked)),
                    ["nft: %s" % line.strip() for line in facts.get("nft_ruleset", []) if "mark" in line],
                    "Re-run the playbooks: the marking of table inet netops_transparent_proxy must select the IP Transparency "
                    "services' replies only.")
    if missing:
        results.add(host, "reply_marking", "error",
                    "the upstreams' replies are not marked with %#x for: %s" % (fwmark, ", ".join(missing)),
                    ["nft: %s" % line.strip() for line in facts.get("nft_ruleset", []) if "mark" in line] or ["no rule sets a mark"]
                    + ([facts["nft_error"]] if facts.get("nft_error") else []),
                    "Re-run the ip_transparency playbook (it loads table inet netops_transparent_proxy), or add "
                    "`meta mark set %d` for replies from the upstreams' service ports on the private interface." % fwmark)
    else:
        results.ok(host, "reply_marking", "replies of every service are marked %#x%s" % (fwmark, _for(config, mine)))


def _forward_chains(ruleset):
    """The chains of ``nft list ruleset`` hooked at forward: [(name, policy, rule lines)]."""
    chains, current = [], None
    for line in ruleset:
        text = line.strip()
        match = re.match(r"chain (\S+) \{", text)
        if match:
            current = [match.group(1), "accept", [], False]
            chains.append(current)
        elif current is not None and text == "}":
            current = None
        elif current is not None and text.startswith("type "):
            current[3] = "hook forward" in text
            policy = re.search(r"\bpolicy (\w+)", text)
            current[1] = policy.group(1) if policy else "accept"
        elif current is not None and text:
            current[2].append(text)
    return [(name, policy, rules) for name, policy, rules, forward in chains if forward]


def check_forward_filter(results, host, config, facts, public_if):
    """Router NAT forwards the upstreams' replies out of the public interface: a forward filter (the role's, or any
    other) must let each router NAT service's replies through before it drops traffic towards that interface."""
    services = services_by(config, "dsr_router_nat")
    out = re.compile(r'\boifname (\{ )?"?%s"?(?=[\s,}]|$)' % re.escape(public_if)) if public_if else None
    blocked, evidence = [], []
    for name, policy, rules in _forward_chains(facts.get("nft_ruleset", [])):
        drops = [i for i, rule in enumerate(rules) if re.search(r"\bdrop\b", rule) and "sport" not in rule and "ct state" not in rule
                 and ((out is not None and out.search(rule)) or "oifname" not in rule and "iifname" not in rule)]
        end = drops[0] if drops else (len(rules) if policy == "drop" else None)
        if end is None:
            continue
        for service in services:
            selects = re.compile(r"\b%s sport %d\b.*\baccept\b" % (service["protocol"], service["upstream_port"]))
            for family in _families([service]):
                if not any(selects.search(rule) and family in _rule_family(rule) for rule in rules[:end]):
                    v6 = ", IPv6" if family == 6 else ""
                    blocked.append("%s (%s sport %d%s) in chain %s" % (service["name"], service["protocol"], service["upstream_port"], v6, name))
        evidence += ["nft: %s" % rule for rule in rules] + (["nft: chain %s policy drop" % name] if policy == "drop" else [])
    if blocked:
        results.add(host, "forward_filter", "error",
                    "the forward filter drops the router NAT replies of %s before they leave by %s: the clients never get them"
                    % ("; ".join(blocked), public_if), evidence,
                    "Re-run the playbooks (nginx_transparent_proxy_forward_filter accepts each router NAT service's replies), or "
                    "accept `iifname <private> oifname %s ip saddr <upstreams> <protocol> sport <port>` (`ip6 saddr` for IPv6 upstreams) "
                    "before the drop." % public_if)
    else:
        results.ok(host, "forward_filter", "no forward filter drops the router NAT replies of %s" % _names(services))


def _nat_rules(facts, device):
    entry = facts.get("nat", {}).get(device, {})
    return [("tc", r) for r in entry.get("tc", [])] + [("nftables", r) for r in entry.get("nftables", [])]


def _nat_read_errors(facts, device):
    """Why the NAT state on ``device`` could not be read (transparency_info's tc_error, nftables_error,
    nftables_problems): a failed read is not "no rule", so it must not be reported as one."""
    entry = facts.get("nat", {}).get(device, {}) if device else {}
    errors = ["tc: %s" % entry["tc_error"]] if entry.get("tc_error") else []
    errors += ["nftables: %s" % entry["nftables_error"]] if entry.get("nftables_error") else []
    return errors + ["nftables: %s" % problem for problem in entry.get("nftables_problems", [])]


def _nat_covers(rules, source, sport, nat_to):
    for _backend, rule in rules:
        network = _net(rule["src"])
        if network is not None and source in network and rule["protocol"] == "udp" and int(rule["sport"]) == sport and _ip(rule["nat_to"]) == nat_to:
            return True
    return False


def check_nat(results, host, config, facts, device, sources, where, vip=None):
    """The stateless NAT rules rewriting the replies of ``sources`` to the VIP (``vip``: the IPv6 one for IPv6 sources)
    on ``device``, and whether the kernel runs them (tc nat is IPv4-only: IPv6 rules need the nftables backend)."""
    vip = vip or _ip(config["public_address"])
    ipv6 = vip.version == 6
    rules = _nat_rules(facts, device) if device else []
    missing = ["%s: %s udp sport %d -> %s" % (service["name"], source, service["upstream_port"], vip)
               for service in config["services"] if service["protocol"] == "udp"
               for source in sources if not _nat_covers(rules, source, service["upstream_port"], vip)]
    evidence = ["%s on %s: %s %s sport %s -> %s" % (backend, device, r["src"], r["protocol"], r["sport"], r["nat_to"]) for backend, r in rules] \
        or ["no stateless NAT rule on %s (tc and nftables netdev table both read)" % (device or "(no device)")]
    act = facts.get("act_nat", {})
    kernel = _kernel_version(facts.get("kernel"))
    support = "kernel %s: tc nat action %s (%s); nftables netdev egress hook %s (needs >= %d.%d)" % (
        facts.get("kernel"), "available" if act.get("available") else "missing", act.get("how"),
        "available" if kernel >= NFT_EGRESS_KERNEL else "missing", NFT_EGRESS_KERNEL[0], NFT_EGRESS_KERNEL[1])
    unreadable = _nat_read_errors(facts, device)
    if unreadable and ipv6 and any(f["check"] == "nat_unreadable" and f["host"] == host for f in results.items):
        return  # said once, for the IPv4 rules on the same device
    if unreadable:
        results.add(host, "nat_unreadable", "error",
                    "the stateless NAT rules on %s of %s could not be read: whether the replies are rewritten to %s is unknown"
                    % (device, host, vip), unreadable + evidence[:len(rules)] + [support],
                    "Fix the read error shown (permissions, nft/tc on the host, a table the module does not own), "
                    "then run the troubleshooter again.")
    elif missing:
        results.add(host, where, "error",
                    "the replies are not rewritten to %s on %s: missing %s - the clients drop replies from the upstream's address"
                    % (vip, device or "the egress interface", "; ".join(missing)), evidence + [support],
                    "Re-run the %s playbook (netops.ip_transparency.tc_nat_filter, backend auto picks what this kernel runs)." % config["method"])
    else:
        results.ok(host, where, "every reply is rewritten to %s on %s" % (vip, device))
    if ipv6:
        if kernel < NFT_EGRESS_KERNEL:
            results.add(host, "nat_kernel_support", "error", "IPv6 replies need the nftables backend, which this kernel cannot run",
                        [support], "Use a kernel >= 5.16 (the tc nat action is IPv4-only).")
        return
    if not act.get("available") and kernel < NFT_EGRESS_KERNEL:
        results.add(host, "nat_kernel_support", "error", "this kernel can run neither NAT backend", [support],
                    "Load act_nat (modprobe act_nat; CONFIG_NET_ACT_NAT) or use a kernel >= 5.16 for the nftables backend.")
    elif any(backend == "tc" for backend, _r in rules) and not act.get("available"):
        results.add(host, "nat_kernel_support", "error", "tc nat rules are installed but the kernel reports no act_nat", [support],
                    "Use backend nftables.")
    else:
        results.ok(host, "nat_kernel_support", support)


def check_nat6(results, host, config, facts, device, sources, where):
    """check_nat for the IPv6 sources, against the IPv6 VIP (config ``public_address6``); an info finding when that
    address is unknown."""
    vip6 = _ip(config.get("public_address6"))
    if vip6 is None or vip6.version != 6:
        results.add(host, where, "info", "IPv6 upstreams not checked: the proxy's public IPv6 address is unknown (%s)" % ", ".join(sources),
                    ["public address (IPv6): %s" % (config.get("public_address6") or "none")],
                    "Set troubleshoot_public_address6 (or nginx_transparent_proxy_public_address6), or give the public interface an IPv6 address.")
        return
    check_nat(results, host, config, facts, device, [_ip(u) for u in sources], where, vip6)


def check_rp_filter(results, host, facts, arrivals):
    """``arrivals``: (interface, source address, what) the host must accept; checked against the real routes."""
    values = facts.get("sysctl", {}).get("rp_filter", {})
    bad = []
    for iface, source, what in arrivals:
        value = values.get(iface, {}).get("effective", "?")
        route = facts.get("route_get", {}).get(str(source), {})
        configured = "all=%s %s=%s -> effective %s" % (values.get("all", {}).get("configured"), iface, values.get(iface, {}).get("configured"), value)
        kind = "" if route.get("type") == "unicast" else "%s " % route.get("type", "?")
        via = ("via %s" % route["gateway"]) if route.get("gateway") else "direct"
        back = "route back to %s: %s" % (source, route.get("error") or "%s%s dev %s" % (kind, via, route.get("device")))
        if value == STRICT and not route.get("error") and route.get("device") != iface:
            bad.append(("strict reverse-path filtering on %s drops %s (source %s): the route back leaves by %s, not %s"
                        % (iface, what, source, route.get("device"), iface), [configured, back]))
        elif value in (STRICT, LOOSE) and route.get("error"):
            bad.append(("reverse-path filtering (%s) on %s drops %s: no route back to %s" % (value, iface, what, source), [configured, back]))
        else:
            results.ok(host, "rp_filter", "%s: %s accepted (%s; %s)" % (iface, what, configured, back))
    for problem, evidence in bad:
        results.add(host, "rp_filter", "error", problem, evidence,
                    "Make the route back to the clients leave by the interface the requests arrive on, or set loose filtering "
                    "there: netops.ip_transparency.rp_filter interfaces=[<if>] value=loose (effective: the kernel uses max(all, <if>)).")


RPF6_MARK = "#netops-troubleshoot"  # the role's read: nft -j list ruleset, "<mark> nft <rc>", ip6tables-save, "<mark> ip6tables-save <rc>"


def parse_rpfilter6_read(text):
    """The role's read of a host's IPv6 firewall rules -> ({"nft": text, "ip6tables": text}, [what could not be read]);
    (None, []) when nothing was read. A command that is not there (rc 127) holds no rule; another failure is unreadable."""
    if text is None:
        return None, []
    parts, unreadable, current = {"nft": [], "ip6tables-save": []}, [], "nft"
    for line in text.splitlines():
        if line.startswith(RPF6_MARK):
            words = line.split()
            name, rc = (words[1], words[2]) if len(words) > 2 else (current, "?")
            if rc not in ("0", "127"):
                unreadable.append("%s failed (exit %s)" % ("nft -j list ruleset" if name == "nft" else name, rc))
            current = "ip6tables-save"
            continue
        parts.setdefault(current, []).append(line)
    return {"nft": "\n".join(parts["nft"]), "ip6tables": "\n".join(parts["ip6tables-save"])}, unreadable


def check_rp_filter6(results, host, facts, read, arrivals, marked=()):
    """IPv6 reverse-path filtering (firewall rules, see _rpfilter6) against the real IPv6 routes. ``arrivals``:
    (interface, source address, what) the host must accept; ``marked``: the interfaces where replies marked for a
    local route arrive (IP Transparency), which a rule looking the source up with the mark drops."""
    parsed, unreadable = parse_rpfilter6_read(read)
    arrivals = [a for a in arrivals if a[0]]
    if parsed is None or not arrivals:
        return
    if unreadable:
        results.add(host, "rp_filter", "info", "IPv6 reverse-path filtering not checked: the firewall rules could not be read",
                    unreadable, "Run `nft -j list ruleset` and `ip6tables-save` as root on %s and check their rules by hand." % host)
        return
    rules = rpfilter6_rules(parsed["nft"], parsed["ip6tables"])
    bad = []
    for iface, source, what in arrivals:
        route = facts.get("route_get", {}).get(str(source), {})
        mine = [r for r in rules if rule_applies(r, iface)]
        shown = ["%s %s %s: '%s' (%s)" % (r["source"], r["table"], r["chain"], r["rule"], r["mode"]) for r in mine]
        if not route:
            if mine:
                results.add(host, "rp_filter", "info", "IPv6 reverse-path filtering on %s not checked for %s: the route back to %s was not read"
                            % (iface, what, source), shown, "Check by hand that the rules accept %s." % what)
            continue
        via = ("via %s" % route["gateway"]) if route.get("gateway") else "direct"
        back = "ip -6 route get %s: %s" % (source, route.get("error") or "%s dev %s" % (via, route.get("device")))
        drops = rpfilter6_drops(mine, iface, route.get("device"), bool(route.get("error")))
        strict = [r for r in drops if r["mode"] == "strict"]
        if drops and not route.get("error"):
            bad.append(("strict IPv6 reverse-path filtering on %s drops %s (source %s): the route back leaves by %s, not %s"
                        % (iface, what, source, route.get("device"), iface), shown + [back],
                        "IPv6 has no rp_filter sysctl and the collection does not change firewall rules: make the rule loose (nft "
                        "'fib saddr oif missing drop', ip6tables '-m rpfilter --loose'), leave %s out of it (nft 'iifname != \"%s\"', "
                        "ip6tables '! -i %s'), or make the route back to %s leave by %s." % (iface, iface, iface, source, iface)))
        elif drops:
            bad.append(("IPv6 reverse-path filtering (%s) on %s drops %s: no route back to %s" % ("strict" if strict else "loose", iface, what, source),
                        shown + [back], "Add a route back to %s (ip -6 route), or leave %s out of the rule." % (source, iface)))
        elif iface in marked and any(uses_mark(r) for r in mine):
            results.add(host, "rp_filter", "warning",
                        "IPv6 reverse-path filtering on %s looks the source up with the packet's mark: %s, marked to be delivered to "
                        "nginx (a local route), fail that lookup and are dropped if the rule runs after the marking" % (iface, what),
                        shown + [back], "Leave %s out of the rule (nft 'iifname != \"%s\"', ip6tables '! -i %s'), or drop the mark from its "
                        "lookup (nft 'fib saddr . iif', no ip6tables --validmark)." % (iface, iface, iface))
        else:
            results.ok(host, "rp_filter", "%s: %s accepted (%s; %s)" % (
                iface, what, "; ".join("%s %s" % (r["mode"], r["rule"]) for r in mine) or "no IPv6 reverse-path filter rule", back))
    for problem, evidence, fix in bad:
        results.add(host, "rp_filter", "error", problem, evidence, fix)


def _connected(facts):
    return [(a["interface"], _net(a["network"]), a["address"]) for a in facts.get("addresses", [])
            if a["interface"] != "lo" and not _ip(a["address"]).is_link_local]


def _holder(facts, address):
    target = _ip(address)
    for iface, network, _addr in _connected(facts):
        if target in network:
            return iface
    return None


def check_ping(results, host, pings, what):
    for target, outcome in sorted((pings or {}).items()):
        if outcome.get("ok"):
            results.ok(host, "reachability", "ping %s (%s): %s" % (target, what.get(target, ""), outcome.get("summary", "ok")))
        else:
            results.add(host, "reachability", "error", "%s cannot ping %s (%s)" % (host, target, what.get(target, "")),
                        [outcome.get("summary") or "no reply"],
                        "Check the link, the address and the routes on both hosts, and any firewall between them (the article's 'Test with ping').")


# --- per host -------------------------------------------------------------------------------------


def check_health(results, host, facts):
    """The active health checker's view: every upstream marked down is a finding with its evidence, a service
    failing open (all its upstreams dead) is an error, and so is a checker whose includes nginx uses but whose
    state cannot be read."""
    health = facts.get("health") or {}
    uses_checker = "/netops-transparent-proxy/upstreams/" in ((facts.get("nginx") or {}).get("config") or "")
    if health.get("error") or (uses_checker and not health.get("present")):
        results.add(host, "health_checker", "error", "nginx takes its upstreams from the health checker, whose state cannot be read",
                    [health.get("error") or "%s does not exist" % health.get("path")],
                    "Look at `systemctl status netops-healthcheck` and `journalctl -u netops-healthcheck` on %s." % host)
        return
    if not health.get("present"):
        return
    state = health.get("state") or {}
    down = 0
    for name, service in sorted((state.get("services") or {}).items()):
        for key, upstream in sorted((service.get("upstreams") or {}).items()):
            if upstream.get("state") != "down":
                continue
            down += 1
            results.add(host, "upstream_down", "warning", "service %s: upstream %s is marked down by the health checker" % (name, key),
                        ["down since %s: %s" % (upstream.get("since"), upstream.get("reason") or upstream.get("last_error")),
                         "last probe error: %s" % (upstream.get("last_error") or "none"),
                         "consecutive good/failed probes: %s/%s" % (upstream.get("ok"), upstream.get("fail"))],
                        "Check the service on %s (it gets no traffic until it answers the probe again)." % upstream.get("address", key))
        if service.get("fail_open"):
            results.add(host, "upstream_fail_open", "error",
                        "service %s: every upstream fails its health check; the checker fails open and nginx sends to all of them" % name,
                        ["failing open since %s" % service.get("fail_open_since")],
                        "Bring at least one upstream of %s back (journalctl -u netops-healthcheck names the errors)." % name)
    if state.get("last_reload_error"):
        results.add(host, "health_reload", "warning", "the health checker's last nginx reload failed",
                    [state["last_reload_error"], "at %s" % state.get("last_reload_error_time")],
                    "Run `nginx -t` on %s; the checker retries at the next change." % host)
    if not down:
        results.ok(host, "health_checker", "every upstream of %d services passes its health check"
                   % len(state.get("services") or {}))


def diagnose_proxy(results, host, config, facts, pings, entry=None):
    router_nat = services_by(config, "dsr_router_nat")
    public_if = _holder(facts, config["public_address"]) if any(a["address"] == config["public_address"] for a in facts.get("addresses", [])) else None
    upstreams = sorted(set(u for s in config["services"] for u in s["upstreams"]))
    private = sorted(set(filter(None, (_holder(facts, u) for u in upstreams))))
    addresses = ["%s %s/%s" % (a["interface"], a["address"], a["prefix"]) for a in facts.get("addresses", [])]
    if public_if is None:
        results.add(host, "public_address", "error", "the public address %s is not configured on %s" % (config["public_address"], host),
                    ["addresses: %s" % ", ".join(addresses)], "Set nginx_transparent_proxy_public_address to one of the proxy's addresses.")
    else:
        results.ok(host, "public_address", "%s on %s" % (config["public_address"], public_if))
    unconnected = [u for u in upstreams if _holder(facts, u) is None]
    if unconnected or not private:
        results.add(host, "upstream_networks", "error", "upstreams not on a network directly connected to the proxy: %s" % ", ".join(unconnected),
                    ["addresses: %s" % ", ".join(addresses)], "The upstreams must sit on a private network of the proxy (they route via it).")
    check_service_methods(results, host, config)
    check_nginx(results, host, config, facts)
    check_health(results, host, facts)
    if services_by(config, "ip_transparency"):
        check_policy_routing(results, host, config, facts)
    router_nat4 = [s for s in router_nat if 4 in _families([s])]
    router_nat6 = [s for s in router_nat if 6 in _families([s])]
    forwarding_needed = router_nat4 or config.get("upstream_egress")
    forward = facts.get("sysctl", {}).get("ip_forward")
    if forwarding_needed and forward != "1":
        results.add(host, "forwarding", "error", "IPv4 forwarding is off: the proxy drops the upstreams' %s"
                    % (("replies (router NAT forwards them)%s" % _for(config, router_nat4)) if router_nat4 else "traffic to external servers"),
                    ["net.ipv4.ip_forward = %s" % forward], "sysctl -w net.ipv4.ip_forward=1 (re-run the playbook, which persists it)")
    elif forwarding_needed:
        results.ok(host, "forwarding", "net.ipv4.ip_forward = 1")
    forward6 = facts.get("sysctl", {}).get("ipv6_forwarding")
    if router_nat6 and forward6 != "1":
        results.add(host, "forwarding", "error", "IPv6 forwarding is off: the proxy drops the upstreams' IPv6 replies (router NAT forwards "
                    "them)%s" % _for(config, router_nat6), ["net.ipv6.conf.all.forwarding = %s" % forward6],
                    "sysctl -w net.ipv6.conf.all.forwarding=1 (re-run the playbook, which persists it; a host that learns its default "
                    "route from router advertisements needs accept_ra=2 on that interface first)")
    elif router_nat6:
        results.ok(host, "forwarding", "net.ipv6.conf.all.forwarding = 1")
    if router_nat:
        demux = facts.get("sysctl", {}).get("udp_early_demux")
        if demux != "0":
            results.add(host, "udp_early_demux", "warning",
                        "UDP early demux is on: replies racing nginx's closing upstream socket are dropped instead of forwarded (10-25 % measured)",
                        ["net.ipv4.udp_early_demux = %s" % demux], "sysctl -w net.ipv4.udp_early_demux=0 (the role sets and persists it)")
        else:
            results.ok(host, "udp_early_demux", "net.ipv4.udp_early_demux = 0")
        check_forward_filter(results, host, config, facts, public_if)
        sources = sorted(set(u for s in router_nat for u in s["upstreams"]))
        if _of(sources, 4) or not _of(sources, 6):
            check_nat(results, host, dict(config, method="dsr_router_nat", services=router_nat), facts, public_if,
                      [_ip(u) for u in sources if _version(u) != 6], "router_nat")
        if _of(sources, 6):
            check_nat6(results, host, dict(config, method="dsr_router_nat", services=router_nat6), facts, public_if, _of(sources, 6), "router_nat")
    arrivals = [(public_if, config["client_address"], "client requests")] if public_if else []
    # rp_filter is IPv4's: IPv6 has none (its reverse-path filters are nftables fib or ip6tables rpfilter rules)
    # the upstreams whose replies reach the proxy (Method 1 and router NAT), both families
    replying = sorted(set(u for s in services_by(config, "ip_transparency", "dsr_router_nat") for u in s["upstreams"]))
    back = _of(replying, 4)
    arrivals += [(_holder(facts, u), u, "replies from upstream %s" % u) for u in back if _holder(facts, u)]
    check_rp_filter(results, host, facts, arrivals)
    read6 = (entry or {}).get("rpfilter6")
    if read6 is not None and _of(upstreams, 6):
        vip6 = config.get("public_address6") or ""
        public_if6 = _holder(facts, vip6) if vip6 and any(_ip(a["address"]) == _ip(vip6) for a in facts.get("addresses", [])) else None
        client6 = config.get("client_address6") or ""
        arrivals6 = [(public_if6, client6, "IPv6 client requests")] if public_if6 and client6 else []
        back6 = _of(replying, 6)
        arrivals6 += [(_holder(facts, u), u, "IPv6 replies from upstream %s" % u) for u in back6 if _holder(facts, u)]
        marked = set(_holder(facts, u) for s in services_by(config, "ip_transparency") for u in _of(s["upstreams"], 6))
        check_rp_filter6(results, host, facts, read6, arrivals6, marked)
    fib = [line.strip() for line in facts.get("nft_ruleset", []) if re.search(r"\bfib saddr\b", line) and 6 in _rule_family(line)]
    if fib and _of(upstreams, 6) and read6 is None:
        results.add(host, "rp_filter", "info", "IPv6 reverse-path filtering by nftables fib rules is not checked (IPv6 upstreams not checked)",
                    ["nft: %s" % line for line in fib], "Check by hand that the rules accept the clients' IPv6 requests and the upstreams' replies.")
    client_side = [n for n in (_net(c) for c in config["client_networks"]) if n is not None]
    client_side += [n for i, n, _a in _connected(facts) if i == public_if]
    overlaps = ["client network %s overlaps %s on %s" % (c, n, i) for i, n, _a in _connected(facts) if i in private for c in client_side if c.overlaps(n)]
    if overlaps:
        results.add(host, "overlapping_networks", "error",
                    "client and upstream networks overlap: replies would bypass the proxy and reverse-path filtering drops packets",
                    overlaps, "Use client networks (nginx_transparent_proxy_client_networks) disjoint from the private networks.")
    else:
        results.ok(host, "overlapping_networks", "client networks %s are disjoint from the private networks" % ", ".join(str(c) for c in client_side))
    check_ping(results, host, pings, dict((u, "upstream") for u in upstreams))


def _rule_selects(rule, protocol, port):
    """Whether a policy routing rule selects the packets of ``protocol`` from source port ``port`` (``ipproto`` and
    ``sport`` as transparency_info returns them, else as its ``ip rule`` line shows them)."""
    line = rule.get("line") or ""
    proto = rule.get("ipproto")
    if proto is None:
        match = re.search(r"\bipproto (\S+)", line)
        proto = match.group(1) if match else None
    sport = rule.get("sport")
    if sport is None:
        match = re.search(r"\bsport (\d+(?:-\d+)?)", line)
        sport = match.group(1) if match else None
    if proto is None or sport is None:
        return False
    proto = IP_PROTOCOLS.get(str(proto), str(proto).lower())
    if isinstance(sport, (list, tuple)):
        low, high = int(sport[0]), int(sport[-1])
    else:
        low, _sep, high = str(sport).partition("-")
        low, high = int(low), int(high or low)
    return proto == protocol and low <= port <= high


def _table_key(table):
    return "main" if str(table) in ("254", "main") else str(table)


def reply_route(facts, service, gateway):
    """How an upstream routes the replies of one service by source port: (ok, problem, the rule line or None)."""
    protocol, port = service["protocol"], service["upstream_port"]
    rules = [r for r in facts.get("rules", []) if r.get("action") == "lookup" and r.get("fwmark") is None and _rule_selects(r, protocol, port)]
    if not rules:
        return False, "no rule `ipproto %s sport %d lookup <table>`" % (protocol, port), None
    rule = rules[0]
    if rule["priority"] >= MAIN_RULE_PRIORITY:
        return False, "its rule `%s` comes after the main table's (priority %d)" % (rule["line"], MAIN_RULE_PRIORITY), rule
    key = _table_key(rule["table"])
    if key not in facts.get("routes", {}):
        return False, "its rule `%s` looks up table %s, which was not read (upstream_default_route_table names the table read)" \
            % (rule["line"], key), rule
    defaults = [r for r in facts["routes"][key] if r.get("dest") in ("0.0.0.0/0", "default") and r.get("type", "unicast") == "unicast"]
    if not any(r.get("gateway") == gateway for r in defaults):
        return False, "its rule `%s` looks up table %s, whose default route does not go via %s" % (rule["line"], key, gateway), rule
    return True, "`%s`, table %s: %s" % (rule["line"], key, [r["line"] for r in defaults if r.get("gateway") == gateway][0]), rule


def check_reply_routes(results, host, config, facts, gateway, services, entry, route_back):
    """The upstream's rules that send the replies of ``services`` (whose replies go back via the proxy) to a table
    whose default route is the proxy, by protocol and source port, while the main table's route goes elsewhere."""
    for service in services:
        good, what, rule = reply_route(facts, service, gateway)
        label = "service %s (%s, %s sport %d)" % (service["name"], method_of(config, service), service["protocol"], service["upstream_port"])
        if good:
            results.ok(host, "reply_route", "%s: %s" % (label, what))
            continue
        table = rule["table"] if rule else (entry.get("table") if str(entry.get("table") or "main") != "main" else "<table>")
        results.add(host, "reply_route", "error",
                    "%s: its replies follow the main table's route, not the proxy %s: %s - they never reach the proxy"
                    % (label, gateway, what),
                    _rule_lines(facts) + (_route_lines(facts, _table_key(rule["table"])) if rule else []) + [route_back],
                    "ip rule add priority %s ipproto %s sport %d lookup %s; ip route replace default via %s table %s (re-run the "
                    "playbooks: role upstream_default_route routes each such service's replies by source port, "
                    "upstream_default_route_table names the table)"
                    % (entry.get("rule_priority") or 1000, service["protocol"], service["upstream_port"], table, gateway, table))


def diagnose_upstream(results, host, config, facts, gateway, pings, entry=None, gateway6=None):
    upstreams = set(u for s in config["services"] for u in s["upstreams"])
    own = [a["address"] for a in facts.get("addresses", []) if a["address"] in upstreams]
    if own and not _of(own, 4):
        # an IPv6-only upstream: its IPv6 side only
        diagnose_upstream6(results, host, config, facts, _of(own, 6)[0], gateway6, entry)
        check_ping(results, host, pings, {gateway6: "the proxy"})
        return
    own = _of(own, 4) + _of(own, 6)
    client = config["client_address"]
    route = facts.get("route_get", {}).get(client, {})
    main = _route_lines(facts, "main")
    if not own:
        results.add(host, "upstream_address", "error", "%s holds none of the configured upstream addresses" % host,
                    ["addresses: %s" % ", ".join(a["address"] for a in facts.get("addresses", []))],
                    "List this host's address in the services' upstreams, or remove it from the upstream group.")
        return
    address = own[0]
    here = [s for s in config["services"] if address in s["upstreams"]]
    direct = [s for s in here if method_of(config, s) == "dsr_origin_nat"]
    back = [s for s in here if s not in direct]
    arrival = _holder(facts, address)
    via = route.get("gateway")
    found = ("via %s dev %s" % (via, route.get("device"))) if via else "dev %s (directly connected)" % route.get("device")
    route_back = "ip route get %s: %s" % (client, route.get("error") or found)
    by_rule = [s for s in back if reply_route(facts, s, gateway)[2] is not None]
    if direct and via == gateway:
        results.add(host, "default_route", "error",
                    "with origin NAT the replies%s must not go via the proxy (%s): it drops packets carrying its own address as source"
                    % ((" of %s" % _names(direct)) if back or len(methods_of(config)) > 1 else "", gateway),
                    [route_back] + main, "Run the dsr_origin_nat playbook: it puts back the default route upstream_default_route replaced.")
    elif back and not direct and via != gateway and not by_rule:
        method = method_of(config, back[0])
        results.add(host, "default_route", "error",
                    "replies to the clients go %s, not via the proxy %s: %s"
                    % (("via %s" % via) if via else "out directly" if not route.get("error") else "nowhere", gateway,
                       "the proxy never sees them" if method == "ip_transparency" else "they are never rewritten"),
                    [route_back] + main,
                    "ip route replace default via %s (re-run the %s playbook: role upstream_default_route), and remove any more "
                    "specific route that sends the clients' networks elsewhere" % (gateway, method))
    else:
        results.ok(host, "default_route", route_back)
    if back and via != gateway and (direct or by_rule):
        check_reply_routes(results, host, config, facts, gateway, back, entry or {}, route_back)
    client_nets = [n for n in (_net(c) for c in config["client_networks"]) if n is not None]
    overlaps = ["%s %s/%s is in client network %s" % (i, a, n.prefixlen, c) for i, n, a in _connected(facts) for c in client_nets if c.overlaps(n)]
    if overlaps:
        results.add(host, "overlapping_networks", "error",
                    "a client network is directly connected to %s: its replies go straight to that link, not via the proxy, and "
                    "reverse-path filtering may drop the requests" % host, overlaps + [route_back],
                    "Remove the overlapping address/route, or renumber: the clients' networks must not be connected to an upstream.")
    else:
        results.ok(host, "overlapping_networks", "no client network is directly connected")
    check_rp_filter(results, host, facts, [(arrival, client, "requests from the proxy carrying the client's address")])
    if direct:
        check_nat(results, host, dict(config, method="dsr_origin_nat", services=direct), facts, route.get("device"), [_ip(address)], "origin_nat")
    if _of(own, 6):
        diagnose_upstream6(results, host, config, facts, _of(own, 6)[0], gateway6, entry)
    check_ping(results, host, pings, dict([(gateway, "the proxy")] + ([(gateway6, "the proxy (IPv6)")] if gateway6 and _of(own, 6) else [])))


def diagnose_upstream6(results, host, config, facts, address, gateway6, entry=None):
    """An upstream's IPv6 side: the route back to the IPv6 client (via the proxy, except with origin NAT), the IPv6
    reverse-path filters the proxy's requests meet and the origin NAT rules of its IPv6 address. Without an IPv6
    client address (or gateway) it says what it left unchecked."""
    here = [s for s in config["services"] if address in s["upstreams"]]
    direct = [s for s in here if method_of(config, s) == "dsr_origin_nat"]
    back = [s for s in here if s not in direct]
    client = config.get("client_address6") or ""
    route = facts.get("route_get", {}).get(client, {}) if client else {}
    via = route.get("gateway")
    if not client or not route or gateway6 is None:
        results.add(host, "default_route", "info", "IPv6 upstreams not checked: the route back of %s to the IPv6 clients (%s)" % (
            address, "no IPv6 client address: set troubleshoot_client_address6" if not client else
            "no IPv6 gateway: set upstream_default_route_gateway6" if gateway6 is None else "the route was not read"),
            ["IPv6 client: %s, IPv6 gateway: %s" % (client or "unknown", gateway6 or "unknown")],
            "Set troubleshoot_client_address6 (or an IPv6 network in troubleshoot_client_networks) and run again.")
    else:
        found = ("via %s dev %s" % (via, route.get("device"))) if via else "dev %s (directly connected)" % route.get("device")
        route_back = "ip -6 route get %s: %s" % (client, route.get("error") or found)
        main = ["ip -6 route table main: %s" % r["line"] for r in (facts.get("routes6") or {}).get("main", [])]
        proxy = via is not None and _ip(via) == _ip(gateway6)
        if direct and proxy:
            results.add(host, "default_route", "error",
                        "with origin NAT the IPv6 replies%s must not go via the proxy (%s): it drops packets carrying its own address as source"
                        % ((" of %s" % _names(direct)) if back or len(methods_of(config)) > 1 else "", gateway6),
                        [route_back] + main, "Run the dsr_origin_nat playbook: it puts back the default route upstream_default_route replaced.")
        elif back and not direct and not proxy:
            results.add(host, "default_route", "error",
                        "IPv6 replies to the clients go %s, not via the proxy %s: %s"
                        % (("via %s" % via) if via else "out directly" if not route.get("error") else "nowhere", gateway6,
                           "the proxy never sees them" if method_of(config, back[0]) == "ip_transparency" else "they are never rewritten"),
                        [route_back] + main,
                        "ip -6 route replace default via %s (re-run the %s playbook: role upstream_default_route with "
                        "upstream_default_route_gateway6)" % (gateway6, method_of(config, back[0])))
        elif back and direct:
            results.add(host, "reply_route", "info", "IPv6 upstreams not checked: the rules routing the IPv6 replies of %s via the proxy by "
                        "source port" % _names(back), [route_back], "Check `ip -6 rule` and the table it looks up by hand.")
        else:
            results.ok(host, "default_route", route_back)
    if client:
        check_rp_filter6(results, host, facts, (entry or {}).get("rpfilter6"),
                         [(_holder(facts, address), client, "IPv6 requests from the proxy carrying the client's address")])
    if direct:
        defaults = [r for r in (facts.get("routes6") or {}).get("main", []) if r.get("dest") in ("::/0", "default")]
        device = route.get("device") or (defaults[0].get("device") if defaults else None)
        check_nat6(results, host, dict(config, method="dsr_origin_nat", services=direct), facts, device, [address], "origin_nat")


def resolve_gateway(config, hosts, name, family=4):
    """An upstream's expected gateway of a family: its upstream_default_route_gateway (``gateway6`` for IPv6), else the
    proxy's address of that family on its subnet."""
    entry = hosts[name]
    given = entry.get("gateway6" if family == 6 else "gateway")
    if given:
        return given
    public = config.get("public_address6") if family == 6 else config["public_address"]
    own = [_ip(a["address"]) for a in entry.get("facts", {}).get("addresses", []) if a["interface"] != "lo" and _version(a["address"]) == family]
    for proxy in (n for n in sorted(hosts) if hosts[n]["group"] == "proxy"):
        for iface, network, address in _connected(hosts[proxy].get("facts", {})):
            if _version(address) == family and _ip(address) != _ip(public) and any(o in network for o in own):
                return address
    return None


def public_address6(config, hosts):
    """The proxy's public IPv6 address: ``config["public_address6"]``, else the only global IPv6 address on the
    interface holding the (IPv4) public address of the proxy ``config["proxy_host"]``, by the rule the proxy role uses
    (``_addresses.choose_public_ipv6``); '' if there is none or several (the role refuses to guess, so does this)."""
    entry = hosts.get(config.get("proxy_host") or "") or next((hosts[n] for n in sorted(hosts) if hosts[n]["group"] == "proxy"), {})
    facts = entry.get("facts") or {}
    public_if = _holder(facts, config["public_address"]) if _ip(config["public_address"]) is not None else None
    return _addresses.choose_public_ipv6(facts.get("addresses", []), public_if, config.get("public_address6") or "")[0]


def ping_plan(config, hosts):
    """The pings of the article's 'Test with ping': the proxy to every upstream, every upstream to its gateway."""
    upstreams = sorted(set(u for s in config["services"] for u in s["upstreams"]))
    plan = []
    for name in sorted(hosts):
        if hosts[name].get("unreachable"):
            continue
        if hosts[name]["group"] == "proxy":
            plan.extend({"host": name, "target": u} for u in upstreams)
        else:
            gateway = resolve_gateway(config, hosts, name)
            if gateway:
                plan.append({"host": name, "target": gateway})
            own = [a["address"] for a in hosts[name].get("facts", {}).get("addresses", [])]
            gateway6 = resolve_gateway(config, hosts, name, 6) if set(_of(upstreams, 6)) & set(own) else None
            if gateway6:
                plan.append({"host": name, "target": gateway6})
    return plan


def check_prerequisites(results, host, missing):
    """What the host lacks of what the collection runs there (prerequisites_info's ``missing``; None: not looked for)."""
    if missing is None:
        return
    if not missing:
        results.ok(host, "prerequisites", "pyroute2 and the commands the checks read with are there")
        return
    packages = sorted(set(m["package"] for m in missing if m.get("package")))
    results.add(host, "prerequisites", "error",
                "%s lacks %s: the collection's modules cannot run there (or read only part of the state)"
                % (host, ", ".join(m["name"] for m in missing)),
                [m["reason"] for m in missing],
                "Install %s on %s (apt-get install %s), then run again." % (", ".join(packages), host, " ".join(packages)))


def diagnose(config, hosts, pings=()):
    """Every check over every host. ``hosts``: name -> {group: proxy|upstream, facts, gateway, unreachable};
    ``pings``: [{host, target, ok, summary}] (ping_plan, run)."""
    results = Results()
    if any(_version(u) == 6 for s in config["services"] for u in s["upstreams"]):
        config = dict(config, public_address6=public_address6(config, hosts))
    for name in sorted(hosts, key=lambda n: (hosts[n]["group"] != "proxy", n)):
        entry = hosts[name]
        mine = dict((p["target"], p) for p in pings if p["host"] == name)
        check_prerequisites(results, name, entry.get("prerequisites"))
        if entry.get("unreachable"):
            results.add(name, "facts", "error", "the host could not be read: %s" % entry["unreachable"], [], "Check Ansible's access to it.")
        elif entry["group"] == "proxy":
            diagnose_proxy(results, name, config, entry["facts"], mine, entry)
        else:
            diagnose_upstream(results, name, config, entry["facts"], resolve_gateway(config, hosts, name), mine, entry,
                              resolve_gateway(config, hosts, name, 6))
    return results.items


def first_host(networks, version=4):
    """The first usable address of the first valid network of a family (a stand-in client address), '' when none."""
    for value in networks or []:
        network = _net(value)
        if network is not None and network.version == int(version):
            return str(next(network.hosts(), network.network_address))
    return ""
