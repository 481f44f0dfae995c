# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""IPv6 reverse-path filtering as a host's firewall rules say it (IPv6 has no rp_filter sysctl).

Pure functions, run on the controller: ``rpfilter6_rules`` classifies the rules of ``nft -j list ruleset`` and
``ip6tables-save`` that drop (or reject) IPv6 packets failing the reverse-path check, strict or loose, and the
interfaces they apply to (``rule_applies``); ``rpfilter6_drops`` says whether those rules drop a packet arriving on an interface, given
the route back to its source. One copy for the filter ``netops.ip_transparency.rpfilter6_rules`` (plugins/filter/network.py,
the origin_nat role's preflight) and the troubleshoot role's checks (_checks.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import json
import shlex

from ansible.module_utils.six import string_types

# IPv6 has no rp_filter sysctl: reverse-path filtering is a firewall rule. These are the rules that drop (or reject)
# what fails the check, as `nft -j list ruleset` and `ip6tables-save` print them.
_NFT_DROPS = ("drop", "reject")
_IP6T_DROPS = ("DROP", "REJECT")


def _nft_rule_family(table_family, exprs):
    """4, 6 or 0 (both) for the packets an nft rule can see: its table's family, narrowed by a meta nfproto or an
    ip/ip6 payload match of an inet table's rule."""
    if table_family == "ip6":
        return 6
    if table_family != "inet":
        return 4  # ip, arp, bridge, netdev: no IPv6 reverse-path lookup there
    for expr in exprs:
        match = expr.get("match") if isinstance(expr, dict) else None
        if not isinstance(match, dict) or match.get("op", "==") != "==":
            continue
        left = match.get("left") or {}
        if isinstance(left, dict) and isinstance(left.get("meta"), dict) and left["meta"].get("key") == "nfproto":
            return {"ipv4": 4, "ipv6": 6}.get(match.get("right"), 0)
        if isinstance(left, dict) and isinstance(left.get("payload"), dict) and left["payload"].get("protocol") in ("ip", "ip6"):
            return 4 if left["payload"]["protocol"] == "ip" else 6
    return 0


def _names(right):
    if isinstance(right, dict) and isinstance(right.get("set"), list):
        return [str(name) for name in right["set"]]
    return [str(right)]


def _nft_names(names):
    quoted = ['"%s"' % name for name in names]
    return quoted[0] if len(quoted) == 1 else "{ %s }" % ", ".join(quoted)


def _nft_findings(nft_json):
    if isinstance(nft_json, string_types):
        try:
            nft_json = json.loads(nft_json) if nft_json.strip() else {}
        except ValueError:
            return []
    items = nft_json.get("nftables") if isinstance(nft_json, dict) else None
    findings = []
    for item in items if isinstance(items, list) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or not isinstance(rule.get("expr"), list):
            continue
        exprs = [e for e in rule["expr"] if isinstance(e, dict)]
        if _nft_rule_family(rule.get("family"), exprs) == 4:
            continue
        if not any(name in e for e in exprs for name in _NFT_DROPS):
            continue
        fib = None
        interfaces, except_interfaces = [], []
        for expr in exprs:
            match = expr.get("match")
            if not isinstance(match, dict) or not isinstance(match.get("left"), dict):
                continue
            left, right, op = match["left"], match.get("right"), match.get("op", "==")
            if isinstance(left.get("fib"), dict):
                flags = left["fib"].get("flags") or []
                flags = [flags] if isinstance(flags, string_types) else list(flags)
                # `oif missing` is false in the JSON, the older spelling `oif 0` is "0"
                if ("saddr" in flags and left["fib"].get("result") in ("oif", "oifname") and op == "=="
                        and right in (False, 0, "0", "missing")):
                    fib = flags
            elif isinstance(left.get("meta"), dict) and left["meta"].get("key") in ("iifname", "iif"):
                (interfaces if op == "==" else except_interfaces).extend(_names(right))
        if fib is None:
            continue
        text = "fib %s %s missing %s" % (" . ".join(fib), "oif", next(n for e in exprs for n in _NFT_DROPS if n in e))
        if except_interfaces:
            text = "iifname != %s %s" % (_nft_names(except_interfaces), text)
        if interfaces:
            text = "iifname %s %s" % (_nft_names(interfaces), text)
        findings.append({
            "source": "nftables",
            "mode": "strict" if "iif" in fib else "loose",
            "table": "%s %s" % (rule.get("family", ""), rule.get("table", "")),
            "chain": rule.get("chain", ""),
            "rule": text,
            "interfaces": interfaces,
            "except_interfaces": except_interfaces,
        })
    return findings


def _ip6tables_findings(text):
    findings = []
    table = ""
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A ") or "rpfilter" not in line:
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        modules = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-m"]
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        if "rpfilter" not in modules or "--invert" not in words or target not in _IP6T_DROPS:
            continue
        interfaces, except_interfaces = [], []
        for i, word in enumerate(words[:-1]):
            if word in ("-i", "--in-interface"):
                name = words[i + 1][:-1] + "*" if words[i + 1].endswith("+") else words[i + 1]  # eth+: every eth...
                (except_interfaces if i > 0 and words[i - 1] == "!" else interfaces).append(name)
        findings.append({
            "source": "ip6tables",
            "mode": "loose" if "--loose" in words else "strict",
            "table": table,
            "chain": words[1],
            "rule": line,
            "interfaces": interfaces,
            "except_interfaces": except_interfaces,
        })
    return findings


def _covers(patterns, name):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def rpfilter6_rules(nft_json, ip6tables_save="", interfaces=None):
    """The IPv6 reverse-path filters of a host: nft rules ``fib saddr [. mark] [. iif] oif missing drop|reject`` that
    IPv6 packets meet (strict with ``iif``, else loose) and ip6tables ``-m rpfilter [--loose] --invert -j DROP|REJECT``
    rules. With ``interfaces``, only the rules that apply to one of them, each with ``applies_to``."""
    findings = _nft_findings(nft_json) + _ip6tables_findings(ip6tables_save)
    if interfaces is None:
        return findings
    if isinstance(interfaces, string_types):
        interfaces = [interfaces]
    kept = []
    for finding in findings:
        applies = [name for name in interfaces if rule_applies(finding, name)]
        if applies:
            kept.append(dict(finding, applies_to=applies))
    return kept


def rule_applies(rule, interface):
    """Whether a rule (an entry of rpfilter6_rules) sees the packets arriving on ``interface``."""
    return (not rule["interfaces"] or _covers(rule["interfaces"], interface)) and not _covers(rule["except_interfaces"], interface)


def uses_mark(rule):
    """Whether a rule looks the source up with the packet's firewall mark (nft ``fib saddr . mark``, ip6tables
    ``--validmark``): a packet marked for a table whose route is local then fails the check."""
    return " . mark" in rule["rule"] if rule["source"] == "nftables" else "--validmark" in rule["rule"].split()


def rpfilter6_drops(rules, interface, route_device, route_error=False):
    """The rules of ``rules`` (rpfilter6_rules' entries) that drop an IPv6 packet arriving on ``interface`` whose route
    back leaves by ``route_device`` (``route_error``: there is no route back): a strict rule when the route back leaves
    by another interface, or there is none; a loose rule when there is none."""
    dropping = []
    for rule in rules:
        if not rule_applies(rule, interface):
            continue
        if route_error or (rule["mode"] == "strict" and route_device != interface):
            dropping.append(rule)
    return dropping
