# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address and subnet helpers for the collection's roles.

The roles have to find interfaces from addresses (container and cloud interface names are not
stable), check that a gateway is on a directly connected subnet and that the client-facing and
private networks do not overlap. Jinja has no bitwise arithmetic and ansible.utils.ipaddr needs
netaddr on the controller, so these few filters use Python's ``ipaddress`` instead. Each filter is
documented in its own sidecar file, plugins/filter/<filter name>.yml.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import ipaddress
import json
import shlex

from ansible.module_utils.six import string_types

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _addresses


def _addr(value):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None


def _net(value):
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return None


def ip_version(value):
    addr = _addr(value)
    return addr.version if addr else 0


def network_version(value):
    net = _net(value)
    return net.version if net else 0


def network_has_host_bits(value):
    """True for a valid prefix whose address has bits set beyond the prefix length (10.1.2.3/8)."""
    net = _net(value)
    if net is None:
        return False
    try:
        ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError:
        return True
    return False


def _interface_facts(facts):
    """Yield the per-interface fact dicts (keyed by a mangled name, found by their 'device')."""
    for value in (facts or {}).values():
        if isinstance(value, dict) and isinstance(value.get("device"), string_types) and (
            "ipv4" in value or "ipv6" in value or "type" in value
        ):
            yield value


def connected_addresses(facts):
    result = []
    for iface in _interface_facts(facts):
        name = iface["device"]
        entries = []
        if isinstance(iface.get("ipv4"), dict):
            entries.append(iface["ipv4"])
        entries.extend(e for e in iface.get("ipv4_secondaries") or [] if isinstance(e, dict))
        entries.extend(e for e in iface.get("ipv6") or [] if isinstance(e, dict))
        for entry in entries:
            address = entry.get("address")
            if not address:
                continue
            if "netmask" in entry:
                iface_net = ipaddress.ip_interface(u"%s/%s" % (address, entry["netmask"]))
            elif "prefix" in entry:
                iface_net = ipaddress.ip_interface(u"%s/%s" % (address, entry["prefix"]))
            else:
                continue
            if iface_net.is_loopback:
                continue
            result.append(
                {
                    "interface": name,
                    "address": str(iface_net.ip),
                    "prefix": iface_net.network.prefixlen,
                    "network": str(iface_net.network),
                    "version": iface_net.version,
                    "link_local": iface_net.ip.is_link_local,
                }
            )
    return sorted(result, key=lambda e: (e["interface"], e["version"], e["address"]))


def _connected(facts_or_list):
    if isinstance(facts_or_list, dict):
        return connected_addresses(facts_or_list)
    return list(facts_or_list or [])


def canonical_ip(value):
    """An address in its canonical spelling (a list: each of them); anything else unchanged."""
    if isinstance(value, (list, tuple)):
        return [_addresses.canonical_ip(v) for v in value]
    return _addresses.canonical_ip(value)


def _address_entries(facts_or_list):
    """Entries {interface, address, scope?} of every address: from gathered facts with their scope, else the list."""
    if not isinstance(facts_or_list, dict):
        return list(facts_or_list or [])
    entries = []
    for iface in _interface_facts(facts_or_list):
        for entry in iface.get("ipv6") or []:
            if isinstance(entry, dict) and entry.get("address"):
                entries.append(dict(entry, interface=iface["device"]))
    return entries


def public_ipv6(facts_or_list, interface):
    """The candidate public IPv6 addresses of ``interface`` (plugin_utils/_addresses.public_ipv6_candidates)."""
    return _addresses.public_ipv6_candidates(_address_entries(facts_or_list), interface)


def ra_routes_lost(routes, accept_ra):
    """The RA-learned default routes that turning IPv6 forwarding on would delete (plugin_utils/_addresses)."""
    return _addresses.ra_routes_lost_to_forwarding(routes, accept_ra)


def connected_interface(address, facts_or_list):
    """The interface whose connected (non link-local) subnet holds ``address``; the longest prefix wins."""
    addr = _addr(address)
    if addr is None:
        return ""
    best = None
    for entry in _connected(facts_or_list):
        if entry.get("link_local"):
            continue
        net = _net(entry["network"])
        if net is not None and net.version == addr.version and addr in net:
            if best is None or net.prefixlen > best[0]:
                best = (net.prefixlen, entry["interface"])
    return best[1] if best else ""


def in_networks(address, networks):
    addr = _addr(address)
    if addr is None:
        return False
    if isinstance(networks, string_types):
        networks = [networks]
    for network in networks or []:
        net = _net(network)
        if net is not None and net.version == addr.version and addr in net:
            return True
    return False


def overlapping_networks(networks_a, networks_b):
    if isinstance(networks_a, string_types):
        networks_a = [networks_a]
    if isinstance(networks_b, string_types):
        networks_b = [networks_b]
    pairs = []
    for a in networks_a or []:
        net_a = _net(a)
        for b in networks_b or []:
            net_b = _net(b)
            if net_a is None or net_b is None or net_a.version != net_b.version:
                continue
            if net_a.overlaps(net_b):
                pairs.append("%s overlaps %s" % (net_a, net_b))
    return pairs


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
        applies = [name for name in interfaces
                   if (not finding["interfaces"] or _covers(finding["interfaces"], name))
                   and not _covers(finding["except_interfaces"], name)]
        if applies:
            kept.append(dict(finding, applies_to=applies))
    return kept


class FilterModule(object):
    def filters(self):
        return {
            "ip_version": ip_version,
            "network_version": network_version,
            "network_has_host_bits": network_has_host_bits,
            "connected_addresses": connected_addresses,
            "connected_interface": connected_interface,
            "canonical_ip": canonical_ip,
            "public_ipv6": public_ipv6,
            "ra_routes_lost": ra_routes_lost,
            "in_networks": in_networks,
            "overlapping_networks": overlapping_networks,
            "rpfilter6_rules": rpfilter6_rules,
        }
