# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Routes in any table (``ip route ... table N``) over netlink: read, normalise, diff, apply.

A route's identity is what the kernel keys it by: (family, table, destination prefix, metric),
TOS 0 and no IPv6 source prefix. The same identity with another type, gateway, device or
source is replaced. ``exclusive`` also removes every other route to the same destination in
that table (other metrics, other types), and reports them so they can be put back later.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    ValidationError,
    Plan,
    check_ifname,
    check_range,
    interface_index,
    interface_names,
    parse_address,
    parse_prefix,
    same_family,
)
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import (
    AF_BY_VERSION,
    NAME_BY_VERSION,
    U32_MAX,
    VERSION_BY_AF,
    UndoLog,
    attr,
    msg_table,
    parse_family,
    parse_table,
    table_name,
)

# RTN_* of include/uapi/linux/rtnetlink.h
TYPES = {"unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5,
         "blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10}
TYPE_NAMES = dict((v, k) for k, v in TYPES.items())
MANAGED_TYPES = ("unicast", "local", "blackhole", "unreachable", "prohibit", "throw")
NO_NEXTHOP_TYPES = ("blackhole", "unreachable", "prohibit", "throw")

SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST = 0, 253, 254
SCOPE_NAMES = {SCOPE_UNIVERSE: "global", 200: "site", SCOPE_LINK: "link", SCOPE_HOST: "host", 255: "nowhere"}
RTPROT_BOOT = 3
PROTO_NAMES = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static"}
RTM_F_CLONED = 0x200

IPV6_DEFAULT_METRIC = 1024  # the kernel stores IPv6 metric 0 as 1024 (IP6_RT_PRIO_USER)


class Route(object):
    """One route, normalised. ``device`` is a name; ``oif`` the index when known."""

    def __init__(self, family, table, dest, rtype="unicast", gateway=None, device=None, source=None, metric=0,
                 proto=RTPROT_BOOT, scope=None, oif=None, multipath=(), foreign=()):
        self.family = family
        self.table = table
        self.dest = dest
        self.type = rtype
        self.gateway = gateway
        self.device = device
        self.source = source
        self.metric = metric
        self.proto = proto
        self.scope = default_scope(family, rtype, gateway) if scope is None else scope
        self.oif = oif
        self.multipath = tuple(multipath)
        self.foreign = tuple(foreign)

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
        for gateway, device, _oif in self.multipath:
            words.append("nexthop%s%s" % (" via %s" % gateway if gateway else "", " dev %s" % device if device else ""))
        words.append("table %s" % table_name(self.table))
        if self.proto not in (RTPROT_BOOT, None):
            words.append("proto %s" % PROTO_NAMES.get(self.proto, self.proto))
        if self.family == 4 and self.scope != SCOPE_UNIVERSE:
            words.append("scope %s" % SCOPE_NAMES.get(self.scope, self.scope))
        if self.source is not None:
            words.append("src %s" % self.source)
        if self.metric or self.family == 6:
            words.append("metric %d" % self.metric)
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
            "proto": self.proto,
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
            args["multipath"] = [dict(([("gateway", str(gw))] if gw else []) + [("oif", oif)]) for gw, _dev, oif in self.multipath]
        return args


def default_scope(family, rtype, gateway):
    """The scope ``ip route add`` would give such a route."""
    if family == 6:
        return SCOPE_UNIVERSE
    if rtype == "local":
        return SCOPE_HOST
    if rtype == "unicast" and gateway is None:
        return SCOPE_LINK
    return SCOPE_UNIVERSE


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
    version = same_family([dest, gateway, source], "dest, gateway and source")
    family = parse_family(params.get("family"))
    if family is not None and version is not None and family != version:
        raise ValidationError("family %s does not match the IPv%s addresses in dest/gateway/source" % (params["family"], version))
    family = family or version or 4
    if is_default:
        dest = parse_prefix("0.0.0.0/0" if family == 4 else "::/0", "dest")
    device = check_ifname(params.get("device"), "device")

    if gateway is not None and rtype != "unicast":
        raise ValidationError("gateway is only for unicast routes: a %s route has no next hop" % rtype)
    if device is not None and rtype in NO_NEXTHOP_TYPES:
        raise ValidationError("device is not used by %s routes" % rtype)
    if state == "present" and rtype == "unicast" and gateway is None and device is None:
        raise ValidationError("a unicast route needs a gateway or a device")
    if gateway is not None and (gateway.is_multicast or gateway.is_unspecified):
        raise ValidationError("gateway %s is not a usable next hop" % gateway)

    table = parse_table(params.get("table"))
    metric = params.get("metric")
    metric = 0 if metric is None else check_range(metric, 0, U32_MAX, "metric")
    if family == 6 and metric == 0:
        metric = IPV6_DEFAULT_METRIC
    return Route(family, table, dest, rtype, gateway=gateway, device=device, source=source, metric=metric)


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
        hops.append((hop.get_attr("RTA_GATEWAY"), names.get(hop_oif, "if%s" % hop_oif), hop_oif))
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
    """Whether kernel route ``have`` is route ``want`` (device/source only compared when wanted)."""
    if have.key != want.key or have.foreign or have.multipath or have.type != want.type:
        return False
    if have.gateway != want.gateway:
        return False
    if want.device is not None and have.device != want.device:
        return False
    if want.source is not None and have.source != want.source:
        return False
    return True


def plan(want, existing, state, exclusive=False):
    """Compute the Plan for ``want`` against the routes ``existing`` (same table and dest)."""
    before = [r.render() for r in existing]
    same_key = [r for r in existing if r.key == want.key and not r.foreign]
    if state == "absent":
        to_remove = [r for r in same_key if _absent_match(r, want)]
        after = [r for r in existing if not any(r is x for x in to_remove)]
        return Plan(before, [r.render() for r in after], to_remove=to_remove)
    if any(satisfies(r, want) for r in same_key):
        to_add, replaced = [], []
    else:
        to_add, replaced = [want], same_key
    others = [r for r in existing if r.key != want.key or r.foreign] if exclusive else []
    to_remove = replaced + others
    after = [r for r in existing if not any(r is x for x in to_remove)] + to_add
    after.sort(key=lambda r: r.metric)
    return Plan(before, [r.render() for r in after], to_add=to_add, to_remove=to_remove)


def _absent_match(have, want):
    if have.type != want.type:
        return False
    for field in ("gateway", "device", "source"):
        if getattr(want, field) is not None and getattr(have, field) != getattr(want, field):
            return False
    return True


def resolve_devices(ipr, want):
    """Look the wanted device up (unknown devices are refused before any change)."""
    if want.device is not None:
        want.oif = interface_index(ipr, want.device)


def apply(ipr, the_plan, want):
    """Make the kernel follow the plan: replace/add the wanted route first (so a default route is
    never missing), then delete what it replaces or excludes. Undo everything on failure."""
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
            log.run("adding route '%s'" % route.render(),
                    lambda a=args: ipr.route("add", **a),
                    lambda a=args: ipr.route("del", **a))
    if not the_plan.to_add:
        others = the_plan.to_remove
    for route in others:
        args = route.netlink_args()
        log.run("deleting route '%s'" % route.render(),
                lambda a=args: ipr.route("del", **a),
                lambda a=args: ipr.route("add", **a))


def ensure(ipr, params, check_mode=False):
    """The whole module run: returns the result dict (changed, diff, route, routes, added, removed)."""
    want = normalise(params)
    state = params.get("state") or "present"
    if state == "present":
        resolve_devices(ipr, want)
    existing = read_routes(ipr, want.family, want.table, want.dest)
    the_plan = plan(want, existing, state, exclusive=bool(params.get("exclusive")) and state == "present")
    if the_plan.changed and not check_mode:
        apply(ipr, the_plan, want)
        current = read_routes(ipr, want.family, want.table, want.dest)
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
