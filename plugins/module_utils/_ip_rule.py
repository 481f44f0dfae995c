# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Policy routing rules (``ip rule``) over netlink: read, normalise, diff, apply.

A rule's identity is every selector the user gave (from, to, fwmark/fwmask, iif, oif, ipproto,
sport, dport), its action and table, and its priority when given. Only kernel rules that match
that identity exactly are ever removed; rules carrying selectors this code does not model (tos,
uidrange, ``not``, ...) never match. The kernel's default rules (0 lookup local,
32766 lookup main, 32767 lookup default) are only removed when asked for by priority.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import socket

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, KernelFeatureError, ValidationError, Plan
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import check_ifname, check_range, interface_index
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import parse_prefix
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import AF_BY_VERSION, NAME_BY_VERSION, U32_MAX, VERSION_BY_AF, UndoLog
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import add_or_delete, attr, attr_names, converge, msg_table
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import parse_family, parse_table, parse_u32, table_name

# FR_ACT_* of include/uapi/linux/fib_rules.h
ACTIONS = {"lookup": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}
ACTION_NAMES = dict((v, k) for k, v in ACTIONS.items())
FIB_RULE_INVERT = 0x2

# A rule added without a priority gets this one (pyroute2's default, in 0.7 and 0.9 alike; made explicit).
DEFAULT_PRIORITY = 32000

KERNEL_DEFAULT_RULES = ((0, 255), (32766, 254), (32767, 253))

# Attributes the model understands; anything else on a kernel rule makes it "foreign".
_KNOWN_ATTRS = frozenset(
    ["FRA_UNSPEC", "FRA_PAD", "FRA_TABLE", "FRA_PRIORITY", "FRA_PROTOCOL", "FRA_SRC", "FRA_DST",
     "FRA_FWMARK", "FRA_FWMASK", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP",
     "FRA_IP_PROTO", "FRA_SPORT_RANGE", "FRA_DPORT_RANGE"]
)

# IP protocol numbers by the names iproute2 shows (/etc/protocols); other names are looked up in the system's database.
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
             "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "udplite": 136}
PROTOCOL_NAMES = dict((v, k) for k, v in PROTOCOLS.items() if k != "icmpv6")
# The protocols whose headers carry ports the kernel's rule matching reads (fib_rule_port_range_set).
PORT_PROTOCOLS = frozenset([6, 17, 33, 132])
# FRA_IP_PROTO, FRA_SPORT_RANGE and FRA_DPORT_RANGE came with Linux 4.17; an older kernel ignores them
# (it would add a rule without the selectors), so they are refused before any change.
SELECTORS_MIN_KERNEL = (4, 17)


def kernel_release():
    """The running kernel's release (``uname -r``); a function so the tests can fake it."""
    return os.uname()[2]


def check_kernel_selectors(release=None):
    """Refuse the ipproto/sport/dport selectors on a kernel older than 4.17 (KernelFeatureError)."""
    release = kernel_release() if release is None else release
    match = re.match(r"(\d+)\.(\d+)", release)
    if match and (int(match.group(1)), int(match.group(2))) >= SELECTORS_MIN_KERNEL:
        return
    raise KernelFeatureError(
        "the rule selectors ipproto, sport and dport need Linux %d.%d or later; this kernel is %s"
        % (SELECTORS_MIN_KERNEL + (release,))
    )


def parse_ipproto(value):
    """An IP protocol name or number 0-255 as its number."""
    if isinstance(value, bool):
        raise ValidationError("ipproto %r is neither a protocol name nor a number 0-255" % (value,))
    if isinstance(value, int):
        return check_range(value, 0, 255, "ipproto")
    text = str(value).strip().lower()
    if re.match(r"^[0-9]+$", text):
        return check_range(int(text), 0, 255, "ipproto")
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    try:
        return socket.getprotobyname(text)
    except (OSError, socket.error):
        raise ValidationError("ipproto %r is neither a protocol name (tcp, udp, sctp, dccp, icmp, ipv6-icmp...) nor a number 0-255" % (value,))


def protocol_name(number):
    """The protocol as ``ip rule`` shows it: its name where known, else the number."""
    return PROTOCOL_NAMES.get(number, str(number))


def parse_port_range(value, what):
    """A port or a range ``LO-HI`` (LO <= HI) as a ``(lo, hi)`` pair; the kernel takes ports 1 to 65534 only."""
    if isinstance(value, bool):
        raise ValidationError("%s %r is neither a port 1-65535 nor a range LO-HI" % (what, value))
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
    else:
        match = re.match(r"^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$", str(value))
        if not match:
            raise ValidationError("%s %r is neither a port 1-65535 nor a range LO-HI" % (what, value))
        low, high = match.group(1), match.group(2) or match.group(1)
    low = check_range(int(low), 1, 65535, what)
    high = check_range(int(high), 1, 65535, what)
    if high == 65535:
        raise ValidationError("%s %r: the kernel refuses port 65535 in a rule (fib_rule_port_range_valid: ports 1-65534)" % (what, value))
    if low > high:
        raise ValidationError("%s %r is a range whose start %d is above its end %d" % (what, value, low, high))
    return (low, high)


def port_text(pair):
    """A port pair as ``ip rule`` shows it: ``80`` or ``1000-2000``."""
    return str(pair[0]) if pair[0] == pair[1] else "%d-%d" % pair


def _netlink_port_range(value):
    """FRA_SPORT_RANGE/FRA_DPORT_RANGE as pyroute2 decodes them (0.7 and 0.9 alike: ``"start:end"``) as a pair."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[1]))
    if hasattr(value, "get") and value.get("start") is not None:
        return (int(value["start"]), int(value["end"]))
    low, _sep, high = str(value).partition(":")
    return (int(low), int(high or low))


# Attributes whose value here means "not set" (the kernel dumps them anyway).
_NEUTRAL = {"FRA_SUPPRESS_PREFIXLEN": (U32_MAX, -1), "FRA_SUPPRESS_IFGROUP": (U32_MAX, -1)}


class Rule(object):
    """One rule, normalised: addresses are ``ipaddress`` networks, table/fwmark are ints."""

    FIELDS = ("family", "priority", "src", "dst", "fwmark", "fwmask", "iif", "oif", "ipproto", "sport", "dport",
              "table", "action", "foreign")
    SELECTORS = ("src", "dst", "fwmark", "fwmask", "iif", "oif", "ipproto", "sport", "dport")

    def __init__(self, family, priority=None, src=None, dst=None, fwmark=None, fwmask=None,
                 iif=None, oif=None, table=None, action="lookup", foreign=(), ipproto=None, sport=None, dport=None):
        self.family = family
        self.priority = priority
        self.src = src
        self.dst = dst
        self.fwmark = fwmark
        self.fwmask = fwmask
        self.iif = iif
        self.oif = oif
        self.ipproto = ipproto
        self.sport = sport
        self.dport = dport
        self.table = table
        self.action = action
        self.foreign = tuple(foreign)

    def __repr__(self):
        return "Rule(%s)" % self.render()

    def __eq__(self, other):
        return isinstance(other, Rule) and all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(tuple(getattr(self, f) for f in self.FIELDS))

    def matches(self, other):
        """Whether kernel rule ``other`` is exactly this wanted rule (priority only when given)."""
        if other.foreign or self.family != other.family:
            return False
        if self.priority is not None and self.priority != other.priority:
            return False
        return all(getattr(self, f) == getattr(other, f) for f in self.SELECTORS + ("table", "action"))

    def has_l4_selectors(self):
        return self.ipproto is not None or self.sport is not None or self.dport is not None

    def is_kernel_default(self):
        return (
            not self.foreign
            and self.action == "lookup"
            and (self.priority, self.table) in KERNEL_DEFAULT_RULES
            and self.src is None and self.dst is None and self.fwmark is None
            and self.iif is None and self.oif is None
            and not self.has_l4_selectors()
        )

    def render(self):
        """``ip rule``-like line: ``100: from all fwmark 0x1 lookup 100``."""
        words = ["%s:" % ("auto" if self.priority is None else self.priority)]
        words.append("from %s" % (self.src if self.src is not None else "all"))
        if self.dst is not None:
            words.append("to %s" % self.dst)
        if self.fwmark is not None:
            words.append("fwmark %#x" % self.fwmark if self.fwmask == U32_MAX else "fwmark %#x/%#x" % (self.fwmark, self.fwmask))
        if self.iif is not None:
            words.append("iif %s" % self.iif)
        if self.oif is not None:
            words.append("oif %s" % self.oif)
        if self.ipproto is not None:
            words.append("ipproto %s" % protocol_name(self.ipproto))
        if self.sport is not None:
            words.append("sport %s" % port_text(self.sport))
        if self.dport is not None:
            words.append("dport %s" % port_text(self.dport))
        words.extend(self.foreign)
        if self.action == "lookup":
            words.append("lookup %s" % table_name(self.table))
        else:
            words.append(self.action)
        return " ".join(words)

    def as_params(self):
        """The rule as module options (so a returned rule can be fed back to the module)."""
        return {
            "family": NAME_BY_VERSION[self.family],
            "priority": self.priority,
            "from": None if self.src is None else str(self.src),
            "to": None if self.dst is None else str(self.dst),
            "fwmark": self.fwmark,
            "fwmask": self.fwmask,
            "iif": self.iif,
            "oif": self.oif,
            "ipproto": None if self.ipproto is None else (PROTOCOL_NAMES.get(self.ipproto) or self.ipproto),
            "sport": None if self.sport is None else (self.sport[0] if self.sport[0] == self.sport[1] else port_text(self.sport)),
            "dport": None if self.dport is None else (self.dport[0] if self.dport[0] == self.dport[1] else port_text(self.dport)),
            "table": self.table if self.action == "lookup" else None,
            "action": self.action,
        }

    def netlink_args(self):
        """Keyword arguments for ``IPRoute.rule()`` (same on pyroute2 0.7 and 0.9)."""
        args = {"family": AF_BY_VERSION[self.family], "action": ACTIONS[self.action]}
        if self.action == "lookup":
            args["table"] = self.table
        args["priority"] = DEFAULT_PRIORITY if self.priority is None else self.priority
        if self.src is not None:
            args["src"] = str(self.src.network_address)
            args["src_len"] = self.src.prefixlen
        if self.dst is not None:
            args["dst"] = str(self.dst.network_address)
            args["dst_len"] = self.dst.prefixlen
        if self.fwmark is not None:
            args["fwmark"] = self.fwmark
            args["fwmask"] = self.fwmask
        if self.iif is not None:
            args["iifname"] = self.iif
        if self.oif is not None:
            args["oifname"] = self.oif
        # pyroute2 (0.7 and 0.9) encodes FRA_IP_PROTO from an int and a fib_rule_port_range from "start:end"
        if self.ipproto is not None:
            args["ip_proto"] = self.ipproto
        if self.sport is not None:
            args["sport_range"] = "%d:%d" % self.sport
        if self.dport is not None:
            args["dport_range"] = "%d:%d" % self.dport
        return args


def _prefix_or_all(value, what):
    """The selector as a network, or None for any address (``all``); also returns the IP version
    the spelling implies (``::/0`` says IPv6 as ``all`` says nothing).

    A zero-length prefix (``0.0.0.0/0``, ``::/0``) selects every address: the kernel keeps no such
    selector (it dumps the rule as ``from all``), so it must compare as ``all`` to be idempotent.
    """
    if value is None or str(value).strip() == "all":
        return None, None
    network = parse_prefix(value, what, strict=True)
    return (None if network.prefixlen == 0 else network), network.version


def normalise(params):
    """Validate the module options and return the wanted Rule. Raises ValidationError."""
    state = params.get("state") or "present"
    if state not in ("present", "absent"):
        raise ValidationError("state %r must be present or absent" % (state,))
    action = params.get("action") or "lookup"
    if action not in ACTIONS:
        raise ValidationError("action %r must be one of %s" % (action, ", ".join(sorted(ACTIONS))))
    src, src_version = _prefix_or_all(params.get("from"), "from")
    dst, dst_version = _prefix_or_all(params.get("to"), "to")
    versions = set(v for v in (src_version, dst_version) if v is not None)
    if len(versions) > 1:
        raise ValidationError("from and to mix IPv4 and IPv6: %s, %s" % (params.get("from"), params.get("to")))
    version = versions.pop() if versions else None
    family = parse_family(params.get("family"))
    if family is not None and version is not None and family != version:
        raise ValidationError(
            "family %s does not match the IPv%s addresses in from/to" % (params.get("family"), version)
        )
    family = family or version or 4

    priority = params.get("priority")
    if priority is not None:
        priority = check_range(priority, 0, U32_MAX, "priority")

    fwmark = params.get("fwmark")
    fwmask = params.get("fwmask")
    if fwmask is not None and fwmark is None:
        raise ValidationError("fwmask needs fwmark: a mask alone selects nothing")
    if fwmark is not None:
        fwmark = parse_u32(fwmark, "fwmark")
        fwmask = U32_MAX if fwmask is None else parse_u32(fwmask, "fwmask")
        if fwmark & ~fwmask & U32_MAX:
            raise ValidationError("fwmark %#x has bits outside fwmask %#x: the rule could never match" % (fwmark, fwmask))

    table = params.get("table")
    if action == "lookup":
        table = parse_table(table)
    elif table is not None:
        raise ValidationError("table is only used with action=lookup, not with action=%s" % action)

    ipproto = params.get("ipproto")
    ipproto = None if ipproto is None or ipproto == "" else parse_ipproto(ipproto)
    ports = {}
    for what in ("sport", "dport"):
        value = params.get(what)
        ports[what] = None if value is None or value == "" else parse_port_range(value, what)
        if ports[what] is not None and ipproto not in PORT_PROTOCOLS:
            raise ValidationError(
                "%s needs ipproto tcp, udp, sctp or dccp (ports are only matched for those); ipproto is %s"
                % (what, "not set" if ipproto is None else protocol_name(ipproto))
            )

    return Rule(
        family,
        priority=priority,
        ipproto=ipproto,
        sport=ports["sport"],
        dport=ports["dport"],
        src=src,
        dst=dst,
        fwmark=fwmark,
        fwmask=fwmask,
        iif=check_ifname(params.get("iif"), "iif"),
        oif=check_ifname(params.get("oif"), "oif"),
        table=table,
        action=action,
    )


def _address(msg, name, length):
    if not length:
        return None
    value = attr(msg, name)
    if value is None:
        return None
    return parse_prefix("%s/%d" % (value, length), name, strict=False)


# FRA_SPORT_MASK and FRA_DPORT_MASK (Linux 6.15+; pyroute2 does not know them and dumps them as UNKNOWN): the kernel
# sets and dumps a mask of 0xffff for a single port, which selects nothing more than the port itself.
_PORT_MASK_TYPES = (28, 29)


def _is_exact_port_mask(item):
    """Whether a raw attribute of a rule message is FRA_SPORT_MASK/FRA_DPORT_MASK with the neutral value 0xffff."""
    nla = getattr(item, "nla", None)
    if nla is None or getattr(item, "name", None) != "UNKNOWN":
        return False
    try:
        if nla["header"]["type"] not in _PORT_MASK_TYPES:
            return False
        raw = bytes(nla.data[nla.offset + 4:nla.offset + 6])
    except (AttributeError, KeyError, TypeError):
        return False
    return raw == b"\xff\xff"


def from_netlink(msg):
    """A kernel rule (pyroute2 fibmsg) as a Rule; unknown selectors go to ``foreign``."""
    version = VERSION_BY_AF.get(msg["family"])
    foreign = []
    for item in msg.get("attrs", ()):
        if _is_exact_port_mask(item):
            continue
        name = attr_names({"attrs": [item]})[0]
        if name in _NEUTRAL:
            if attr(msg, name) not in _NEUTRAL[name]:
                foreign.append("%s %s" % (name[4:].lower(), attr(msg, name)))
        elif name not in _KNOWN_ATTRS:
            foreign.append(name[4:].lower())
    if msg.get("tos"):
        foreign.append("tos %#x" % msg["tos"])
    if msg.get("flags", 0) & FIB_RULE_INVERT:
        foreign.insert(0, "not")
    action = ACTION_NAMES.get(msg["action"])
    if action is None:
        foreign.append("action %d" % msg["action"])
        action = "lookup"
    fwmark = attr(msg, "FRA_FWMARK")
    fwmask = attr(msg, "FRA_FWMASK")
    if fwmark is None and fwmask is not None:
        fwmark = 0
    if fwmark is not None and fwmask is None:
        fwmask = U32_MAX
    return Rule(
        version,
        priority=attr(msg, "FRA_PRIORITY", 0),
        src=_address(msg, "FRA_SRC", msg["src_len"]),
        dst=_address(msg, "FRA_DST", msg["dst_len"]),
        fwmark=fwmark,
        fwmask=fwmask,
        iif=attr(msg, "FRA_IIFNAME"),
        oif=attr(msg, "FRA_OIFNAME"),
        ipproto=attr(msg, "FRA_IP_PROTO"),
        sport=_netlink_port_range(attr(msg, "FRA_SPORT_RANGE")),
        dport=_netlink_port_range(attr(msg, "FRA_DPORT_RANGE")),
        table=msg_table(msg, "FRA_TABLE") if action == "lookup" else None,
        action=action,
        foreign=foreign,
    )


def read_rules(ipr, family):
    """The kernel's rules of one family (4 or 6), in priority order."""
    rules = [from_netlink(msg) for msg in ipr.get_rules(family=AF_BY_VERSION[family])]
    return [r for r in rules if r.family == family]


def plan(want, existing, state):
    """Compute the Plan for rule ``want`` against the kernel rules ``existing``."""
    before = [r.render() for r in existing]
    if state == "present":
        if any(want.matches(r) for r in existing):
            return Plan(before, before)
        shown = want
        if want.priority is None:
            shown = Rule(**dict((f, getattr(want, f)) for f in Rule.FIELDS))
            shown.priority = DEFAULT_PRIORITY
        after = sorted(list(existing) + [shown], key=lambda r: r.priority)
        return Plan(before, [r.render() for r in after], to_add=[want])
    to_remove = [
        r for r in existing
        if want.matches(r) and (want.priority is not None or not r.is_kernel_default())
    ]
    after = [r for r in existing if not any(r is x for x in to_remove)]
    return Plan(before, [r.render() for r in after], to_remove=to_remove)


def check_devices(ipr, want):
    """Refuse rules on devices this host does not have, and selectors this kernel lacks (only when adding)."""
    if want.has_l4_selectors():
        check_kernel_selectors()
    for name in (want.iif, want.oif):
        if name is not None:
            interface_index(ipr, name)


def apply(ipr, the_plan):
    """Make the kernel follow the plan; undo on failure (raises ApplyError)."""
    log = UndoLog()
    for rule in the_plan.to_remove:
        add_or_delete(log, "del", "rule", rule, ipr.rule)
    for rule in the_plan.to_add:
        try:
            add_or_delete(log, "add", "rule", rule, ipr.rule)
        except ApplyError as exc:
            if rule.has_l4_selectors() and _rejected_attribute(exc):
                raise KernelFeatureError(
                    "%s; the kernel (%s) refused the rule's ipproto/sport/dport selectors (they need Linux %d.%d or later)"
                    % ((exc, kernel_release()) + SELECTORS_MIN_KERNEL)
                )
            raise


def _rejected_attribute(exc):
    """Whether an ApplyError comes from the kernel refusing an attribute (EINVAL, EOPNOTSUPP, ERANGE...)."""
    cause = getattr(exc, "__cause__", None) or getattr(exc, "__context__", None)
    code = getattr(cause, "code", None)
    if code in (errno.EINVAL, errno.EOPNOTSUPP, errno.ERANGE, errno.EAFNOSUPPORT):
        return True
    text = str(exc)
    return any(word in text for word in ("Invalid argument", "Operation not supported", "out of range"))


def ensure(ipr, params, check_mode=False):
    """The whole module run: returns the result dict (changed, diff, rules, added, removed)."""
    want, _state, existing, the_plan, current = converge(
        params, normalise, lambda w: check_devices(ipr, w), lambda w: read_rules(ipr, w.family),
        plan, lambda p, _w: apply(ipr, p), check_mode)
    if current is not None:
        before_keys = set((r.priority, r.render()) for r in existing)
        added = [r for r in current if (r.priority, r.render()) not in before_keys and want.matches(r)] if the_plan.to_add else []
        rules = [r.render() for r in current]
    else:
        added = list(the_plan.to_add)
        rules = the_plan.after
    return {
        "changed": the_plan.changed,
        "diff": the_plan.diff(),
        "rules": rules,
        "added": [r.as_params() for r in added],
        "removed": [r.as_params() for r in the_plan.to_remove],
    }
