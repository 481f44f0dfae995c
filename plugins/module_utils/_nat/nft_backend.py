# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""nftables backend of tc_nat_filter: one ``netdev`` table per device, on the ``egress`` hook.

The table (``netops_nat_<device>``, the device name mangled to nft's identifier rules)::

    table netdev netops_nat_eth0 {
        comment "netops.ip_transparency.tc_nat_filter device=eth0"
        map snat4 {
            type ipv4_addr . inet_proto . inet_service : ipv4_addr
            flags interval
            elements = { 172.16.0.8/29 . udp . 53 : 192.168.99.10 }
        }
        map snat6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr; flags interval; }
        chain egress {
            type filter hook egress device "eth0" priority 0; policy accept;
            ip saddr set ip saddr . meta l4proto . th sport map @snat4
            ip6 saddr set ip6 saddr . meta l4proto . th sport map @snat6
        }
    }

- One map lookup per packet whatever the number of upstreams (an interval map over the
  concatenation: nft's pipapo set); collapsed prefixes are single elements.
- ``ip saddr set`` makes nft fix the IP checksum and, as saddr is in the pseudo-header, the
  TCP/UDP checksum (NFT_PAYLOAD_L4CSUM_PSEUDOHDR), for packets with checksum offload or without.
- Loaded atomically with ``nft -f -``: ``table ... {}`` + ``delete table`` + the table, one
  transaction; read back with ``nft -j list table`` (structure and elements) and
  ``nft list table`` (the comment that marks the table as the module's, and the device).
- A table of that name without the module's comment is foreign: refused, never replaced.

``exclude_destinations`` adds, per family that has some, an interval set of destinations that are never
rewritten, tested in the same rule ahead of the map lookup::

        set exclude4 {
            type ipv4_addr
            flags interval
            elements = { 172.16.0.1 }
        }
        ...
            ip daddr != @exclude4 ip saddr set ip saddr . meta l4proto . th sport map @snat4

One more set lookup per packet of that family, two rules still, in the same ``nft -f -`` transaction. Without
exclusions the table is exactly what earlier versions wrote (no set, no condition, no extra lookup).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re
import shutil
import socket
import subprocess

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import KernelFeatureError, Plan, ReadError, ValidationError, c_locale_env
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.model import IPPROTO, Rule, collapse, collapse_networks, device_id
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import Step

TABLE_PREFIX = "netops_nat_"
CHAIN = "egress"
MAPS = {4: "snat4", 6: "snat6"}
SETS = {4: "exclude4", 6: "exclude6"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
FAMILY = {4: "ip", 6: "ip6"}
MARK = "netops.ip_transparency.tc_nat_filter"


# what nft says (in the C locale) when the table it is asked to list does not exist: the one error that means "no table"
NO_SUCH_TABLE = "No such file or directory"


def _one_line(text):
    return re.sub(r"\s+", " ", text).strip()


def table_name(device):
    """``netops_nat_<device>``, the device name as device_id() spells it."""
    return TABLE_PREFIX + device_id(device)


def comment(device):
    return "%s device=%s" % (MARK, device)


def element_text(rule):
    src = rule.src if rule.src.prefixlen < rule.src.max_prefixlen else rule.src.network_address
    return "%s . %s . %d : %s" % (src, rule.protocol, rule.sport, rule.nat_to)


def set_element_text(network):
    return str(network if network.prefixlen < network.max_prefixlen else network.network_address)


def rule_text(version, excluded=False):
    """The rewrite rule of a family; ``excluded``: its destinations are first tested against the family's set."""
    family = FAMILY[version]
    condition = "%s daddr != @%s " % (family, SETS[version]) if excluded else ""
    return "%s%s saddr set %s saddr . meta l4proto . th sport map @%s" % (condition, family, family, MAPS[version])


def _excluded_versions(exclusions):
    return set(network.version for network in exclusions)


def chain_text(device):
    return 'type filter hook egress device "%s" priority 0; policy accept;' % device


def render_table(device, rules, exclusions=()):
    """The table as nft source text."""
    name = table_name(device)
    lines = ["table netdev %s {" % name, '\tcomment "%s"' % comment(device)]
    excluded = _excluded_versions(exclusions)
    for version in sorted(excluded):
        lines.append("\tset %s {" % SETS[version])
        lines.append("\t\ttype %s" % ADDR_TYPE[version])
        lines.append("\t\tflags interval")
        lines.append("\t\telements = { %s }" % ",\n\t\t\t".join(set_element_text(n) for n in exclusions if n.version == version))
        lines.append("\t}")
    for version in (4, 6):
        elements = [element_text(r) for r in rules if r.version == version]
        lines.append("\tmap %s {" % MAPS[version])
        lines.append("\t\ttype %s . inet_proto . inet_service : %s" % (ADDR_TYPE[version], ADDR_TYPE[version]))
        lines.append("\t\tflags interval")
        if elements:
            lines.append("\t\telements = { %s }" % ",\n\t\t\t".join(elements))
        lines.append("\t}")
    lines.append("\tchain %s {" % CHAIN)
    lines.append("\t\t" + chain_text(device))
    lines.append("\t\t" + rule_text(4, 4 in excluded))
    lines.append("\t\t" + rule_text(6, 6 in excluded))
    lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def replace_script(device, rules, exclusions=()):
    """One nft transaction that (re)creates the table with exactly ``rules`` and ``exclusions``."""
    name = table_name(device)
    return "table netdev %s {}\ndelete table netdev %s\n%s" % (name, name, render_table(device, rules, exclusions))


def delete_script(device):
    name = table_name(device)
    return "table netdev %s {}\ndelete table netdev %s\n" % (name, name)


def state_lines(device, rules, exclusions=()):
    """Readable, nft-like lines for the diff: the table, its hook, its sets, its rules and one line per element."""
    name = table_name(device)
    excluded = _excluded_versions(exclusions)
    lines = ["table netdev %s" % name, "chain netdev %s %s { %s }" % (name, CHAIN, chain_text(device))]
    lines.extend("set netdev %s %s { type %s; flags interval; }" % (name, SETS[v], ADDR_TYPE[v]) for v in sorted(excluded))
    lines.extend("rule netdev %s %s %s" % (name, CHAIN, rule_text(v, v in excluded)) for v in (4, 6))
    lines.extend("element netdev %s %s { %s }" % (name, SETS[n.version], set_element_text(n)) for n in exclusions)
    lines.extend("element netdev %s %s { %s }" % (name, MAPS[r.version], element_text(r)) for r in rules)
    return lines


class NftState(object):
    def __init__(self):
        self.exists = False
        self.ours = False
        self.intact = False  # the structure is exactly what the module writes
        self.problems = []
        self.rules = []
        self.exclusions = []
        self.text = None  # `nft list table` output, to restore on rollback

    def lines(self, device):
        if not self.exists:
            return []
        lines = state_lines(device, self.rules, self.exclusions)
        if not self.intact:
            lines[1:1] = ["# drift: %s" % problem for problem in self.problems]
        return lines


def _key_value(value):
    """An element's address part -> list of networks (a prefix, an address or a range)."""
    if isinstance(value, dict):
        if "prefix" in value:
            return [ipaddress.ip_network("%s/%d" % (value["prefix"]["addr"], value["prefix"]["len"]))]
        if "range" in value:
            low, high = (ipaddress.ip_address(v) for v in value["range"])
            return list(ipaddress.summarize_address_range(low, high))
        raise ValueError("unexpected element key %r" % (value,))
    return [ipaddress.ip_network(value)]


def _protocol(value):
    names = dict((number, name) for name, number in IPPROTO.items())
    if isinstance(value, int):
        return names.get(value)
    return value if value in IPPROTO else None


def _port(value):
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return socket.getservbyname(value)


def parse_set_elements(elements):
    """``elem`` of an address set in nft's JSON -> list of networks."""
    networks = []
    for item in elements or []:
        if isinstance(item, dict) and "elem" in item:
            item = item["elem"]["val"]
        networks.extend(_key_value(item))
    return networks


def rule_signature(rule):
    """(family version, whether it tests the family's exclusion set) of one of the module's rewrite rules, or None.

    The rule is ``[<family> daddr != @exclude<v>] <family> saddr set ... map @snat<v>``: a mangle statement
    that uses one of the maps, optionally after a negated lookup of the same family's destination in its set.
    """
    expr = rule.get("expr") or []
    if not 1 <= len(expr) <= 2 or "mangle" not in expr[-1]:
        return None
    text = json.dumps(expr[-1], sort_keys=True)
    versions = [v for v in (4, 6) if text.count('"@%s"' % MAPS[v]) == 1]
    if len(versions) != 1 or any(('"@%s"' % name) in text for name in SETS.values()):
        return None
    version = versions[0]
    if len(expr) == 1:
        return (version, False)
    wanted = {"match": {"op": "!=", "left": {"payload": {"protocol": FAMILY[version], "field": "daddr"}}, "right": "@%s" % SETS[version]}}
    return (version, True) if expr[0] == wanted else None


def parse_elements(elements):
    """``elem`` of a map in nft's JSON -> list of Rule."""
    rules = []
    for item in elements or []:
        if isinstance(item, dict) and "elem" in item:
            item = [item["elem"]["val"], item["elem"].get("data")]
        key, data = item
        if isinstance(key, dict) and "elem" in key:
            key = key["elem"]["val"]
        parts = key["concat"]
        protocol = _protocol(parts[1])
        if protocol is None:
            raise ValueError("element with protocol %r" % (parts[1],))
        for network in _key_value(parts[0]):
            rules.append(Rule(network, protocol, _port(parts[2]), ipaddress.ip_address(data)))
    return rules


class NftBackend(object):
    name = "nftables"

    def __init__(self, device, nft=None):
        self.device = device
        self.table = table_name(device)
        self.nft = nft or shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin:/usr/local/sbin")

    def _run(self, args, stdin=None):
        proc = subprocess.run([self.nft] + list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              check=False, env=c_locale_env())
        return proc.returncode, proc.stdout, proc.stderr

    def read(self, required=False):
        """The table's state. Without the nft command nothing can exist (unless ``required``: then fail)."""
        state = NftState()
        if not self.nft:
            if required:
                raise KernelFeatureError("backend nftables needs the nft command (Debian package nftables); none found in PATH")
            return state
        rc, out, err = self._run(["-j", "list", "table", "netdev", self.table])
        if rc != 0:
            if NO_SUCH_TABLE in err:
                return state
            if required:
                raise KernelFeatureError("nft cannot list netdev tables here: %s" % _one_line(err))
            raise ReadError("nft list table netdev %s failed (rc %d): %s" % (self.table, rc, _one_line(err)))
        state.exists = True
        rc, text, err = self._run(["list", "table", "netdev", self.table])
        if rc != 0:
            raise ReadError("nft list table netdev %s failed (rc %d): %s" % (self.table, rc, _one_line(err)))
        state.text = text
        state.ours = bool(state.text) and ('comment "%s"' % comment(self.device)) in state.text
        try:
            self._check(state, json.loads(out).get("nftables", []))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            state.problems.append("unreadable table: %s" % exc)
            state.rules = []
            state.exclusions = []
        state.intact = state.ours and not state.problems
        return state

    def _check(self, state, objects):
        maps, sets, chains, rules, other = {}, {}, [], [], []
        for obj in objects:
            if "metainfo" in obj or "table" in obj:
                continue
            if "map" in obj:
                maps[obj["map"]["name"]] = obj["map"]
            elif "set" in obj:
                sets[obj["set"]["name"]] = obj["set"]
            elif "chain" in obj:
                chains.append(obj["chain"])
            elif "rule" in obj:
                rules.append(obj["rule"])
            else:
                other.append(list(obj)[0])
        found = []
        for version, name in sorted(MAPS.items()):
            data = maps.pop(name, None)
            if data is None:
                state.problems.append("map %s missing" % name)
                continue
            wanted_type = [ADDR_TYPE[version], "inet_proto", "inet_service"]
            if data.get("type") != wanted_type or data.get("map") != ADDR_TYPE[version] or "interval" not in (data.get("flags") or []):
                state.problems.append("map %s has another type" % name)
            found.extend(parse_elements(data.get("elem")))
        excluded, exclusions = set(), []
        for version, name in sorted(SETS.items()):
            data = sets.pop(name, None)
            if data is None:
                continue
            excluded.add(version)
            if data.get("type") != ADDR_TYPE[version] or "interval" not in (data.get("flags") or []):
                state.problems.append("set %s has another type" % name)
                continue
            exclusions.extend(parse_set_elements(data.get("elem")))
        if maps or sets or other:
            state.problems.append("objects the module does not write: %s" % ", ".join(sorted(list(maps) + list(sets) + other)))
        chain = chains[0] if len(chains) == 1 else {}
        if (chain.get("name"), chain.get("type"), chain.get("hook"), chain.get("prio"), chain.get("policy")) != (CHAIN, "filter", "egress", 0, "accept"):
            state.problems.append("chain is not the module's egress chain")
        if state.text is not None and ('hook egress device "%s"' % self.device) not in state.text:
            state.problems.append("the chain is not hooked to %s" % self.device)
        signatures = sorted(rule_signature(rule) or (0, False) for rule in rules)
        if signatures != [(4, 4 in excluded), (6, 6 in excluded)]:
            state.problems.append("chain rules differ from the module's")
        state.rules = collapse(found)
        state.exclusions = collapse_networks(exclusions)

    def plan(self, state, rules, exclusions=()):
        exclusions = list(exclusions) if rules else []
        before = state.lines(self.device)
        if state.exists and not state.ours:
            if not rules:
                return Plan(before, before)  # not ours: nothing of the module's to remove
            raise ValidationError(
                "nftables table netdev %s exists but was not created by tc_nat_filter (no comment \"%s\"); "
                "it will not replace it: delete or rename it" % (self.table, comment(self.device))
            )
        if not rules:
            if not state.exists:
                return Plan(before, [])
            return Plan(before, [], steps=[Step("nft delete table netdev %s" % self.table, self._delete, self._restore(state))])
        if self.nft is None:
            raise KernelFeatureError("backend nftables needs the nft command (Debian package nftables); none found in PATH")
        if '"' in self.device or "\\" in self.device:
            raise ValidationError("device %r cannot be named in an nftables chain" % self.device)
        after = state_lines(self.device, rules, exclusions)
        if state.intact and set(state.rules) == set(rules) and set(state.exclusions) == set(exclusions):
            return Plan(before, after)
        script = replace_script(self.device, rules, exclusions)
        line = "nft -f - <<< '%s'" % " ".join(render_table(self.device, rules, exclusions).split())
        return Plan(before, after, steps=[Step(line, lambda: self._load(script), self._restore(state))])

    def _load(self, script):
        rc, out, err = self._run(["-f", "-"], stdin=script)
        if rc != 0:
            raise RuntimeError("nft -f - failed (the transaction was not applied): %s" % _one_line(err))

    def _delete(self):
        self._load(delete_script(self.device))

    def _restore(self, state):
        """The undo of a change to the table: load back what was listed before, or delete it."""
        if state.exists and state.text:
            script = "table netdev %s {}\ndelete table netdev %s\n%s" % (self.table, self.table, state.text)
            return lambda: self._load(script)
        return self._delete
