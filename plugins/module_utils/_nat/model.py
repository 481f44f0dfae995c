# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""The rule model of tc_nat_filter: normalised rules and excluded destinations, and the set arithmetic on them.

Everything else in the package (backends, persistence, run) imports from here; this module imports nothing of
the package. It raises the domain errors of _common and never talks to the kernel or to Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import ipaddress

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    ValidationError,
    check_range,
    parse_address,
    parse_prefix,
    same_family,
)

PROTOCOLS = ("udp", "tcp")
IPPROTO = {"udp": 17, "tcp": 6}
BACKENDS = ("auto", "tc", "nftables")

# the tc backend writes one u32 filter per upstream address (see tc_backend): a prefix
# of more than this many addresses is refused there (the nftables backend takes any prefix)
TC_MAX_ADDRESSES_PER_RULE = 256

# the tc backend writes one pass filter per excluded prefix, with node ids 1..0x7ff of prio 1's root
# hash table: below the link's (0x800, where the kernel's own ids start), so that they are tried first
TC_MAX_EXCLUSIONS = 0x7FF


def device_id(device):
    """A device name as an identifier for nft tables, unit and file names: letters and digits kept, every other
    byte as ``_xx`` (injective, so two devices never share a table or a file)."""
    out = []
    for byte in bytearray(device.encode("utf-8")):
        char = chr(byte)
        out.append(char if (char.isalnum() and byte < 128) else "_%02x" % byte)
    return "".join(out)


class Rule(collections.namedtuple("Rule", "src protocol sport nat_to")):
    """One normalised rule: ``src`` an ip_network, ``protocol`` udp|tcp, ``sport`` int, ``nat_to`` an ip_address."""

    __slots__ = ()

    @property
    def version(self):
        return self.src.version

    @property
    def match(self):
        """What a packet is matched on, without the rewrite: (version, protocol, sport)."""
        return (self.src.version, self.protocol, self.sport)

    def sort_key(self):
        return (self.src.version, self.protocol, self.sport, int(self.src.network_address), self.src.prefixlen, int(self.nat_to))

    def as_dict(self):
        return {"src": str(self.src), "protocol": self.protocol, "sport": self.sport, "nat_to": str(self.nat_to)}

    def __str__(self):
        return "%s %s sport %d -> %s" % (self.src, self.protocol, self.sport, self.nat_to)


def normalise_rule(raw, what="rule"):
    """A rule dict {src, protocol, sport, nat_to} -> Rule, or ValidationError."""
    if not isinstance(raw, dict):
        raise ValidationError("%s must be a dict with src, protocol, sport and nat_to, got %r" % (what, raw))
    unknown = sorted(set(raw) - set(("src", "protocol", "sport", "nat_to")))
    if unknown:
        raise ValidationError("%s: unknown key(s) %s (expected src, protocol, sport, nat_to)" % (what, ", ".join(unknown)))
    for key in ("src", "sport", "nat_to"):
        if raw.get(key) in (None, ""):
            raise ValidationError("%s.%s is required" % (what, key))
    src = parse_prefix(raw["src"], what="%s.src" % what, strict=True)
    protocol = str(raw.get("protocol") or "udp").lower()
    if protocol not in PROTOCOLS:
        raise ValidationError("%s.protocol %r is not one of %s" % (what, raw.get("protocol"), ", ".join(PROTOCOLS)))
    if isinstance(raw["sport"], bool):
        raise ValidationError("%s.sport %r is not a port number" % (what, raw["sport"]))
    sport = check_range(raw["sport"], 1, 65535, "%s.sport" % what)
    nat_to = parse_address(raw["nat_to"], what="%s.nat_to" % what)
    same_family([src, nat_to], what="%s: src and nat_to" % what)
    return Rule(src, protocol, sport, nat_to)


def collapse(rules):
    """Merge rules that differ only in ``src`` into the fewest prefixes; refuse conflicting rewrites.

    Contiguous upstreams with the same protocol, port and target collapse
    (172.16.0.8/30 + 172.16.0.12/30 -> 172.16.0.8/29). A source matched by two rules with
    different ``nat_to`` is ambiguous and refused.
    """
    groups = collections.OrderedDict()
    for rule in rules:
        groups.setdefault((rule.match, rule.nat_to), []).append(rule.src)
    result = []
    for (match, nat_to), sources in groups.items():
        for network in ipaddress.collapse_addresses(sources):
            result.append(Rule(network, match[1], match[2], nat_to))
    by_match = collections.defaultdict(list)
    for rule in result:
        by_match[rule.match].append(rule)
    for match, same in by_match.items():
        same.sort(key=lambda r: (int(r.src.network_address), r.src.prefixlen))
        for first, second in zip(same, same[1:]):
            if first.src.overlaps(second.src) and first.nat_to != second.nat_to:
                raise ValidationError(
                    "rules conflict: %s sport %d from %s would be rewritten both to %s and to %s"
                    % (match[1], match[2], first.src if first.src.prefixlen >= second.src.prefixlen else second.src, first.nat_to, second.nat_to)
                )
    return sorted(result, key=Rule.sort_key)


def normalise_rules(raw_rules):
    """The module's ``rules`` option -> collapsed, sorted list of Rule (ValidationError on bad input)."""
    rules = [normalise_rule(raw, "rules[%d]" % i) for i, raw in enumerate(raw_rules or [])]
    return collapse(rules)


def subtract(rules, removals):
    """``rules`` minus ``removals`` (same protocol, port and target), address space-wise, collapsed."""
    remaining = []
    for rule in rules:
        pieces = [rule.src]
        for removal in removals:
            if (removal.match, removal.nat_to) != (rule.match, rule.nat_to):
                continue
            next_pieces = []
            for piece in pieces:
                if not piece.overlaps(removal.src):
                    next_pieces.append(piece)
                elif removal.src.supernet_of(piece):
                    continue
                else:
                    next_pieces.extend(piece.address_exclude(removal.src))
            pieces = next_pieces
        remaining.extend(Rule(piece, rule.protocol, rule.sport, rule.nat_to) for piece in pieces)
    return collapse(remaining)


# --- exclude_destinations ------------------------------------------------------------------------


def collapse_networks(networks):
    """Networks of both families -> the fewest prefixes covering them, IPv4 first, each family by address."""
    result = []
    for version in (4, 6):
        same = [network for network in networks if network.version == version]
        result.extend(sorted(ipaddress.collapse_addresses(same), key=lambda n: (int(n.network_address), n.prefixlen)))
    return result


def normalise_exclusions(raw):
    """The module's ``exclude_destinations`` option -> collapsed, sorted list of ip_network (ValidationError on bad input).

    Each item is an address (a host prefix) or a prefix, IPv4 or IPv6; host bits set are refused as in
    ``rules[].src``. Every message names the offending item (``exclude_destinations[2]``).
    """
    if raw is None:
        return []
    if isinstance(raw, (str, bytes, dict)) or not isinstance(raw, (list, tuple)):
        raise ValidationError("exclude_destinations must be a list of addresses or prefixes, got %r" % (raw,))
    networks = []
    for i, item in enumerate(raw):
        what = "exclude_destinations[%d]" % i
        if not isinstance(item, str):
            raise ValidationError("%s must be an address or prefix (a string), got %r" % (what, item))
        networks.append(parse_prefix(item, what=what, strict=True))
    return collapse_networks(networks)


def subtract_networks(networks, removals):
    """``networks`` minus ``removals``, address space-wise, collapsed."""
    remaining = []
    for network in networks:
        pieces = [network]
        for removal in removals:
            next_pieces = []
            for piece in pieces:
                if piece.version != removal.version or not piece.overlaps(removal):
                    next_pieces.append(piece)
                elif removal.supernet_of(piece):
                    continue
                else:
                    next_pieces.extend(piece.address_exclude(removal))
            pieces = next_pieces
        remaining.extend(pieces)
    return collapse_networks(remaining)


def wanted_objects(state, backend, looked, rules, exclusions, existing):
    """What each backend holds after the run: {"tc": (rules, exclusions), "nftables": (rules, exclusions)}.

    ``existing``: the same, read from the kernel. ``present``: ``backend`` gets ``rules`` and
    ``exclusions``, the other backend nothing. ``absent``, in the backends ``looked`` at: with neither
    rules nor exclusions listed, nothing is left; otherwise the listed rules and exclusions are taken out
    (address-wise). Exclusions only exist alongside rules: a backend left without rules keeps none.
    Backends not looked at keep what they hold.
    """
    wanted = {}
    for name in ("tc", "nftables"):
        have_rules, have_excl = existing[name]
        if state == "present":
            want_rules, want_excl = (rules, exclusions) if name == backend else ([], [])
        elif name not in looked:
            want_rules, want_excl = have_rules, have_excl
        elif not rules and not exclusions:
            want_rules, want_excl = [], []
        else:
            want_rules = subtract(have_rules, rules) if rules else list(have_rules)
            want_excl = subtract_networks(have_excl, exclusions) if exclusions else list(have_excl)
        wanted[name] = (list(want_rules), list(want_excl) if want_rules else [])
    return wanted


def tc_unsupported(rules, exclusions=()):
    """Why ``rules`` and ``exclusions`` cannot be written with the tc backend (a message), or None."""
    for rule in rules:
        if rule.version != 4:
            return "rule %s is IPv6: the tc nat action is IPv4-only (use backend nftables)" % (rule,)
        if rule.src.num_addresses > TC_MAX_ADDRESSES_PER_RULE:
            return (
                "rule %s covers %d addresses: the tc backend writes one filter per upstream address "
                "(a nat action maps a prefix onto a prefix, never many addresses onto one), at most %d "
                "per rule; use backend nftables for large prefixes" % (rule, rule.src.num_addresses, TC_MAX_ADDRESSES_PER_RULE)
            )
    for network in exclusions:
        if network.version != 4:
            return "exclude_destinations %s is IPv6: the tc backend matches IPv4 only (use backend nftables)" % network
    if len(exclusions) > TC_MAX_EXCLUSIONS:
        return (
            "%d exclusions (after collapsing exclude_destinations): the tc backend writes one pass filter per prefix, "
            "at most %d; use backend nftables" % (len(exclusions), TC_MAX_EXCLUSIONS)
        )
    return None
