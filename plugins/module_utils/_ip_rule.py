# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Policy routing rules (``ip rule``) over netlink: read, normalise, diff, apply.

A rule's identity is every selector the user gave (from, to, fwmark/fwmask, iif, oif), its
action and table, and its priority when given. Only kernel rules that match that identity
exactly are ever removed; rules carrying selectors this code does not model (tos, ipproto,
ports, uidrange, ``not``, ...) never match. The kernel's default rules (0 lookup local,
32766 lookup main, 32767 lookup default) are only removed when asked for by priority.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ValidationError, Plan, check_ifname, check_range, interface_index
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
     "FRA_FWMARK", "FRA_FWMASK", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP"]
)
# Attributes whose value here means "not set" (the kernel dumps them anyway).
_NEUTRAL = {"FRA_SUPPRESS_PREFIXLEN": (U32_MAX, -1), "FRA_SUPPRESS_IFGROUP": (U32_MAX, -1)}


class Rule(object):
    """One rule, normalised: addresses are ``ipaddress`` networks, table/fwmark are ints."""

    FIELDS = ("family", "priority", "src", "dst", "fwmark", "fwmask", "iif", "oif", "table", "action", "foreign")

    def __init__(self, family, priority=None, src=None, dst=None, fwmark=None, fwmask=None,
                 iif=None, oif=None, table=None, action="lookup", foreign=()):
        self.family = family
        self.priority = priority
        self.src = src
        self.dst = dst
        self.fwmark = fwmark
        self.fwmask = fwmask
        self.iif = iif
        self.oif = oif
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
        return all(getattr(self, f) == getattr(other, f) for f in ("src", "dst", "fwmark", "fwmask", "iif", "oif", "table", "action"))

    def is_kernel_default(self):
        return (
            not self.foreign
            and self.action == "lookup"
            and (self.priority, self.table) in KERNEL_DEFAULT_RULES
            and self.src is None and self.dst is None and self.fwmark is None
            and self.iif is None and self.oif is None
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

    return Rule(
        family,
        priority=priority,
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


def from_netlink(msg):
    """A kernel rule (pyroute2 fibmsg) as a Rule; unknown selectors go to ``foreign``."""
    version = VERSION_BY_AF.get(msg["family"])
    foreign = []
    for name in attr_names(msg):
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
    """Refuse rules on devices this host does not have (only when adding)."""
    for name in (want.iif, want.oif):
        if name is not None:
            interface_index(ipr, name)


def apply(ipr, the_plan):
    """Make the kernel follow the plan; undo on failure (raises ApplyError)."""
    log = UndoLog()
    for rule in the_plan.to_remove:
        add_or_delete(log, "del", "rule", rule, ipr.rule)
    for rule in the_plan.to_add:
        add_or_delete(log, "add", "rule", rule, ipr.rule)


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
