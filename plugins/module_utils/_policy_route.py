# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Routes in any table (``ip route ... table N``) over netlink: read, normalise, diff, apply.

A route's identity is what the kernel keys it by: (family, table, destination prefix, metric),
TOS 0 and no IPv6 source prefix. The same identity with another type, gateway, device, next
hops (ECMP), source, protocol or onlink flag is replaced. ``exclusive`` also removes every other
route to the same destination in that table (other metrics, other types), and reports them as
module options so they can be put back later exactly as they were. ``append`` adds the route next to
the routes of the same identity (``ip route append``) instead of replacing them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ValidationError, Plan, check_ifname, check_range, interface_index
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import interface_names, parse_address, parse_prefix, same_family
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import AF_BY_VERSION, NAME_BY_VERSION, U32_MAX, VERSION_BY_AF, UndoLog
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import add_or_delete, attr, converge, msg_table, parse_family
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import parse_table, read_rt_tables, table_name

# RTN_* of include/uapi/linux/rtnetlink.h
TYPES = {"unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5,
         "blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10}
TYPE_NAMES = dict((v, k) for k, v in TYPES.items())
MANAGED_TYPES = ("unicast", "local", "blackhole", "unreachable", "prohibit", "throw")
NO_NEXTHOP_TYPES = ("blackhole", "unreachable", "prohibit", "throw")

SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST = 0, 253, 254
SCOPE_NAMES = {SCOPE_UNIVERSE: "global", 200: "site", SCOPE_LINK: "link", SCOPE_HOST: "host", 255: "nowhere"}
RTPROT_BOOT = 3
# RTPROT_* of include/uapi/linux/rtnetlink.h, named as iproute2 names them (rt_protos)
PROTO_NAMES = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
               11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
               42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
RT_PROTOS_FILES = ("/etc/iproute2/rt_protos", "/usr/share/iproute2/rt_protos", "/usr/lib/iproute2/rt_protos")
RT_PROTOS_DIRS = ("/etc/iproute2/rt_protos.d", "/usr/share/iproute2/rt_protos.d")
RTM_F_CLONED = 0x200
RTNH_F_ONLINK = 0x4  # in rtm_flags of a route, and in rtnh_flags of each hop of a multipath route
MAX_WEIGHT = 256  # rtnh_hops is a byte holding weight - 1

IPV6_DEFAULT_METRIC = 1024  # the kernel stores IPv6 metric 0 as 1024 (IP6_RT_PRIO_USER)


class NextHop(object):
    """One next hop of a multipath (ECMP) route. ``device`` None means any (the kernel picks it)."""

    def __init__(self, gateway=None, device=None, oif=None, weight=1, onlink=False):
        self.gateway, self.device, self.oif, self.weight, self.onlink = gateway, device, oif, weight, bool(onlink)

    def __repr__(self):
        return "NextHop(%s)" % self.render()

    def satisfied_by(self, have):
        """Whether kernel hop ``have`` is this wanted hop (device only compared when wanted)."""
        return (
            have.gateway == self.gateway and have.weight == self.weight and have.onlink == self.onlink
            and (self.device is None or have.device == self.device)
        )

    def render(self):
        words = ["nexthop"]
        if self.gateway is not None:
            words.append("via %s" % self.gateway)
        if self.device is not None:
            words.append("dev %s" % self.device)
        words.append("weight %d" % self.weight)
        return " ".join(words + (["onlink"] if self.onlink else []))

    def as_params(self):
        return {
            "gateway": None if self.gateway is None else str(self.gateway),
            "device": self.device,
            "weight": self.weight,
            "onlink": self.onlink,
        }

    def netlink_args(self):
        args = {"hops": self.weight - 1}
        if self.gateway is not None:
            args["gateway"] = str(self.gateway)
        if self.oif is not None:
            args["oif"] = self.oif
        if self.onlink:
            args["flags"] = RTNH_F_ONLINK
        return args


class Route(object):
    """One route, normalised. ``device`` is a name; ``oif`` the index when known; ``multipath`` the
    NextHops of an ECMP route. ``proto`` and ``onlink`` None (in a wanted route) mean "not given":
    not compared, and added as ``ip route add`` would (proto boot, no onlink)."""

    def __init__(self, family, table, dest, rtype="unicast", gateway=None, device=None, source=None, metric=0,
                 proto=RTPROT_BOOT, scope=None, oif=None, multipath=(), foreign=(), onlink=False):
        self.family = family
        self.table = table
        self.dest = dest
        self.type = rtype
        self.gateway = gateway
        self.device = device
        self.source = source
        self.metric = metric
        self.proto = proto
        self.scope = default_scope(family, rtype, gateway is not None or bool(multipath)) if scope is None else scope
        self.oif = oif
        self.multipath = tuple(multipath)
        self.foreign = tuple(foreign)
        self.onlink = onlink

    def __repr__(self):
        return "Route(%s)" % self.render()

    @property
    def key(self):
        """The kernel's identity of the route."""
        return (self.family, self.table, self.dest, self.metric)

    def render(self):
        """``ip route``-like line: ``local default dev lo table 100 scope host``."""
        words = [] if self.type == "unicast" else [self.type]
        words.append("default" if self.dest.prefixlen == 0 else str(self.dest))
        words.extend(self.foreign)
        if self.gateway is not None:
            words.append("via %s" % self.gateway)
        if self.device is not None:
            words.append("dev %s" % self.device)
        words.extend(hop.render() for hop in self.multipath)
        words.append("table %s" % table_name(self.table))
        if self.proto not in (RTPROT_BOOT, None):
            words.append("proto %s" % proto_name(self.proto))
        if self.family == 4 and self.scope != SCOPE_UNIVERSE:
            words.append("scope %s" % SCOPE_NAMES.get(self.scope, self.scope))
        if self.source is not None:
            words.append("src %s" % self.source)
        if self.metric or self.family == 6:
            words.append("metric %d" % self.metric)
        if self.onlink:
            words.append("onlink")
        return " ".join(words)

    def as_params(self):
        """The route as module options (so a removed route can be fed back to the module)."""
        return {
            "family": NAME_BY_VERSION[self.family],
            "table": self.table,
            "dest": str(self.dest),
            "type": self.type,
            "gateway": None if self.gateway is None else str(self.gateway),
            "device": self.device,
            "source": None if self.source is None else str(self.source),
            "metric": self.metric,
            "proto": None if self.proto is None else proto_name(self.proto),
            "onlink": self.onlink,
            "nexthops": [hop.as_params() for hop in self.multipath],
        }

    def netlink_args(self):
        """Keyword arguments for ``IPRoute.route()`` (same on pyroute2 0.7 and 0.9); every
        header field is explicit so neither version's defaults matter (delete matches on them)."""
        args = {
            "family": AF_BY_VERSION[self.family],
            "table": self.table,
            "dst": str(self.dest.network_address),
            "dst_len": self.dest.prefixlen,
            "tos": 0,
            "type": TYPES[self.type],
            "proto": RTPROT_BOOT if self.proto is None else self.proto,
            "scope": self.scope,
            "priority": self.metric,
        }
        if self.gateway is not None:
            args["gateway"] = str(self.gateway)
        if self.oif is not None:
            args["oif"] = self.oif
        if self.source is not None:
            args["prefsrc"] = str(self.source)
        if self.multipath:
            args["multipath"] = [hop.netlink_args() for hop in self.multipath]
        if self.onlink:
            args["flags"] = RTNH_F_ONLINK
        return args


def default_scope(family, rtype, has_nexthop):
    """The scope ``ip route add`` would give such a route (``has_nexthop``: a gateway or next hops)."""
    if family == 6:
        return SCOPE_UNIVERSE
    if rtype == "local":
        return SCOPE_HOST
    if rtype == "unicast" and not has_nexthop:
        return SCOPE_LINK
    return SCOPE_UNIVERSE


def proto_name(number):
    """A route protocol as iproute2 names it (the number when it has no name here)."""
    return PROTO_NAMES.get(number, number)


def parse_proto(value, rt_protos=None):
    """The route protocol for ``value``: a number 0-255 or a name (built in, or from iproute2's ``rt_protos``)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        return check_range(value, 0, 255, "proto")
    numbers = dict((name, number) for number, name in PROTO_NAMES.items())
    if text not in numbers:
        numbers.update(read_rt_tables(RT_PROTOS_FILES, RT_PROTOS_DIRS) if rt_protos is None else rt_protos)
    if text not in numbers:
        raise ValidationError("proto %r is neither a number (0-255) nor a protocol name known to iproute2 "
                              "(boot, static, kernel, dhcp, ... or a name in /etc/iproute2/rt_protos)" % (value,))
    return check_range(numbers[text], 0, 255, "proto")


def _check_gateway(gateway, onlink, device, what):
    if gateway is not None and (gateway.is_multicast or gateway.is_unspecified):
        raise ValidationError("%s %s is not a usable next hop" % (what, gateway))
    if onlink and (gateway is None or device is None):
        raise ValidationError("onlink needs a gateway and a device: it says the gateway is on that link")


def normalise_nexthops(items):
    """The ``nexthops`` option as NextHops (devices not resolved yet). Raises ValidationError."""
    hops = []
    for number, item in enumerate(items or (), 1):
        what = "nexthops[%d]" % number
        if not isinstance(item, dict):
            raise ValidationError("%s must be a dict with gateway, device, weight and onlink" % what)
        gateway = None if item.get("gateway") in (None, "") else parse_address(item["gateway"], "%s gateway" % what)
        device = check_ifname(item.get("device") or None, "%s device" % what)
        if gateway is None and device is None:
            raise ValidationError("%s needs a gateway or a device" % what)
        weight = 1 if item.get("weight") is None else check_range(item["weight"], 1, MAX_WEIGHT, "%s weight" % what)
        onlink = bool(item.get("onlink"))
        _check_gateway(gateway, onlink, device, "%s gateway" % what)
        hops.append(NextHop(gateway, device, weight=weight, onlink=onlink))
    if len(hops) == 1:
        raise ValidationError("nexthops has one next hop: write it with gateway/device (the kernel keeps a one-hop route as a plain route)")
    return hops


def normalise(params):
    """Validate the module options; return the wanted Route (``oif`` not resolved yet)."""
    state = params.get("state") or "present"
    rtype = params.get("type") or "unicast"
    if rtype not in MANAGED_TYPES:
        raise ValidationError("type %r must be one of %s" % (rtype, ", ".join(MANAGED_TYPES)))
    raw_dest = params.get("dest")
    if raw_dest is None or str(raw_dest).strip() == "":
        raise ValidationError("dest is required: a prefix, an address or 'default'")
    is_default = str(raw_dest).strip() == "default"
    dest = None if is_default else parse_prefix(raw_dest, "dest", strict=True)
    gateway = None if params.get("gateway") in (None, "") else parse_address(params["gateway"], "gateway")
    source = None if params.get("source") in (None, "") else parse_address(params["source"], "source")
    hops = normalise_nexthops(params.get("nexthops"))
    version = same_family([dest, gateway, source] + [hop.gateway for hop in hops], "dest, gateway, nexthops and source")
    family = parse_family(params.get("family"))
    if family is not None and version is not None and family != version:
        raise ValidationError("family %s does not match the IPv%s addresses in dest/gateway/nexthops/source" % (params["family"], version))
    family = family or version or 4
    if is_default:
        dest = parse_prefix("0.0.0.0/0" if family == 4 else "::/0", "dest")
    device = check_ifname(params.get("device"), "device")
    onlink = params.get("onlink")
    onlink = None if onlink is None else bool(onlink)

    for given, name in ((gateway is not None, "gateway is"), (hops, "nexthops are")):
        if given and rtype != "unicast":
            raise ValidationError("%s only for unicast routes: a %s route has no next hop" % (name, rtype))
    if device is not None and rtype in NO_NEXTHOP_TYPES:
        raise ValidationError("device is not used by %s routes" % rtype)
    if hops and (gateway is not None or device is not None or onlink):
        raise ValidationError("nexthops replace gateway, device and onlink: give either nexthops or those")
    if state == "present" and rtype == "unicast" and gateway is None and device is None and not hops:
        raise ValidationError("a unicast route needs a gateway or a device (or nexthops)")
    _check_gateway(gateway, onlink, device, "gateway")

    if params.get("append") and params.get("exclusive"):
        raise ValidationError("append and exclusive are mutually exclusive: append keeps the routes of the same "
                              "table, dest and metric, exclusive removes every other route to dest")

    table = parse_table(params.get("table"))
    metric = params.get("metric")
    metric = 0 if metric is None else check_range(metric, 0, U32_MAX, "metric")
    if family == 6 and metric == 0:
        metric = IPV6_DEFAULT_METRIC
    return Route(family, table, dest, rtype, gateway=gateway, device=device, source=source, metric=metric,
                 proto=parse_proto(params.get("proto")), multipath=hops, onlink=onlink)


def from_netlink(msg, names):
    """A kernel route (pyroute2 rtmsg) as a Route; ``names`` maps ifindex -> name."""
    family = VERSION_BY_AF.get(msg["family"])
    dst = attr(msg, "RTA_DST")
    dest = parse_prefix("%s/%d" % (dst or ("0.0.0.0" if family == 4 else "::"), msg["dst_len"]), "dest", strict=False)
    foreign = []
    if msg.get("tos"):
        foreign.append("tos %#x" % msg["tos"])
    if msg.get("src_len"):
        foreign.append("from %s/%d" % (attr(msg, "RTA_SRC"), msg["src_len"]))
    gateway = attr(msg, "RTA_GATEWAY")
    oif = attr(msg, "RTA_OIF")
    source = attr(msg, "RTA_PREFSRC")
    hops = []
    for hop in attr(msg, "RTA_MULTIPATH", ()) or ():
        hop_oif = hop.get("oif")
        hop_gateway = hop.get_attr("RTA_GATEWAY")
        hops.append(NextHop(
            None if hop_gateway is None else parse_address(hop_gateway),
            None if not hop_oif else names.get(hop_oif, "if%s" % hop_oif),
            oif=hop_oif or None,
            weight=(hop.get("hops") or 0) + 1,
            onlink=(hop.get("flags") or 0) & RTNH_F_ONLINK,
        ))
    return Route(
        family,
        msg_table(msg, "RTA_TABLE"),
        dest,
        TYPE_NAMES.get(msg["type"], str(msg["type"])),
        gateway=None if gateway is None else parse_address(gateway),
        device=None if oif is None else names.get(oif, "if%d" % oif),
        source=None if source is None else parse_address(source),
        metric=attr(msg, "RTA_PRIORITY", 0),
        proto=msg["proto"],
        scope=msg["scope"],
        oif=oif,
        multipath=hops,
        foreign=foreign,
        onlink=bool(msg.get("flags", 0) & RTNH_F_ONLINK),
    )


def read_routes(ipr, family, table, dest=None):
    """The kernel's routes of a family in one table (to ``dest`` only, when given)."""
    names = interface_names(ipr)
    routes = []
    for msg in ipr.get_routes(family=AF_BY_VERSION[family]):
        if msg.get("flags", 0) & RTM_F_CLONED or msg_table(msg, "RTA_TABLE") != table:
            continue
        route = from_netlink(msg, names)
        if dest is None or route.dest == dest:
            routes.append(route)
    return routes


def satisfies(have, want):
    """Whether kernel route ``have`` is route ``want`` (device/source/proto/onlink only compared when wanted)."""
    if have.key != want.key or have.foreign or have.type != want.type:
        return False
    if have.gateway != want.gateway or len(have.multipath) != len(want.multipath):
        return False
    return _given_fields_match(have, want)


def _given_fields_match(have, want):
    """Whether ``have`` carries what ``want`` gives: device, source, proto, onlink and next hops (in order)."""
    for field in ("device", "source", "proto", "onlink"):
        if getattr(want, field) is not None and getattr(have, field) != getattr(want, field):
            return False
    if want.multipath and len(have.multipath) != len(want.multipath):
        return False
    return all(hop.satisfied_by(other) for hop, other in zip(want.multipath, have.multipath))


def plan(want, existing, state, exclusive=False, append=False):
    """Compute the Plan for ``want`` against the routes ``existing`` (same table and dest). With
    ``append`` a same-identity route that differs stays, and ``want`` is added next to it."""
    before = [r.render() for r in existing]
    same_key = [r for r in existing if r.key == want.key and not r.foreign]
    if state == "absent":
        to_remove = [r for r in same_key if _absent_match(r, want)]
        after = [r for r in existing if not any(r is x for x in to_remove)]
        return Plan(before, [r.render() for r in after], to_remove=to_remove)
    kept = next((r for r in same_key if satisfies(r, want)), None)
    if kept is not None:
        to_add, replaced = [], []
    else:
        to_add, replaced = [want], [] if append else same_key
    # exclusive: everything but the route that stays, including routes appended (`ip route append`)
    # next to a route that already satisfies the request, as they share its key
    others = [r for r in existing if r is not kept and not any(r is x for x in replaced)] if exclusive else []
    to_remove = replaced + others
    after = [r for r in existing if not any(r is x for x in to_remove)] + to_add
    after.sort(key=lambda r: r.metric)
    return Plan(before, [r.render() for r in after], to_add=to_add, to_remove=to_remove)


def _absent_match(have, want):
    if have.type != want.type:
        return False
    if want.gateway is not None and have.gateway != want.gateway:
        return False
    return _given_fields_match(have, want)


def resolve_devices(ipr, want):
    """Look the wanted device up (unknown devices are refused before any change)."""
    if want.device is not None:
        want.oif = interface_index(ipr, want.device)
    for hop in want.multipath:
        if hop.device is not None:
            hop.oif = interface_index(ipr, hop.device)


def apply(ipr, the_plan, want, append=False):
    """Make the kernel follow the plan: replace/add (``append``: append) the wanted route first (so a
    default route is never missing), then delete what it replaces or excludes. Undo everything on failure."""
    log = UndoLog()
    replaced = [r for r in the_plan.to_remove if r.key == want.key and not r.foreign]
    others = [r for r in the_plan.to_remove if not any(r is x for x in replaced)]
    for route in the_plan.to_add:
        args = route.netlink_args()
        if replaced:
            old = replaced[0].netlink_args()
            log.run("replacing route '%s' with '%s'" % (replaced[0].render(), route.render()),
                    lambda a=args: ipr.route("replace", **a),
                    lambda o=old: ipr.route("replace", **o))
            others = replaced[1:] + others
        else:
            add_or_delete(log, "append" if append else "add", "route", route, ipr.route)
    if not the_plan.to_add:
        others = the_plan.to_remove
    for route in others:
        add_or_delete(log, "del", "route", route, ipr.route, restore="append")


def ensure(ipr, params, check_mode=False):
    """The whole module run: returns the result dict (changed, diff, route, routes, added, removed)."""
    want, state, existing, the_plan, current = converge(
        params, normalise, lambda w: resolve_devices(ipr, w), lambda w: read_routes(ipr, w.family, w.table, w.dest),
        lambda w, e, s: plan(w, e, s, exclusive=bool(params.get("exclusive")) and s == "present", append=bool(params.get("append"))),
        lambda p, w: apply(ipr, p, w, append=bool(params.get("append"))), check_mode)
    if current is not None:
        routes = [r.render() for r in current]
        found = [r for r in current if satisfies(r, want)]
        route = found[0] if found and state == "present" else None
    else:
        routes = the_plan.after
        route = (want if the_plan.to_add else next((r for r in existing if satisfies(r, want)), want)) if state == "present" else None
    return {
        "changed": the_plan.changed,
        "diff": the_plan.diff(),
        "route": None if route is None else route.as_params(),
        "routes": routes,
        "added": [r.as_params() for r in the_plan.to_add],
        "removed": [r.as_params() for r in the_plan.to_remove],
    }
