"""Stand-ins for pyroute2 messages and IPRoute, for the unit tests of the netlink module_utils."""

import socket

from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401  (re-exported for the tests)


class Msg(dict):
    """A pyroute2-like message: header fields as items, ``attrs`` as (name, value) pairs."""

    def __init__(self, attrs=(), **fields):
        super(Msg, self).__init__(fields)
        self["attrs"] = [[k, v] for k, v in attrs]

    def get_attr(self, name):
        for key, value in self["attrs"]:
            if key == name:
                return value
        return None


def rule_msg(priority=None, table=254, action=1, family=socket.AF_INET, src=None, src_len=0, dst=None, dst_len=0, tos=0, flags=0, **extra):
    attrs = [("FRA_TABLE", table), ("FRA_SUPPRESS_PREFIXLEN", extra.pop("FRA_SUPPRESS_PREFIXLEN", 0xFFFFFFFF)), ("FRA_PROTOCOL", 0)]
    if priority is not None:
        attrs.append(("FRA_PRIORITY", priority))
    if src is not None:
        attrs.append(("FRA_SRC", src))
    if dst is not None:
        attrs.append(("FRA_DST", dst))
    attrs.extend(extra.items())
    return Msg(attrs, family=family, dst_len=dst_len, src_len=src_len, tos=tos, table=table if table < 256 else 252, action=action, flags=flags)


def route_msg(dst=None, dst_len=0, table=254, rtype=1, family=socket.AF_INET, proto=3, scope=0, tos=0, flags=0, **extra):
    attrs = [("RTA_TABLE", table)]
    if dst is not None:
        attrs.append(("RTA_DST", dst))
    attrs.extend(extra.items())
    return Msg(attrs, family=family, dst_len=dst_len, src_len=0, tos=tos, table=table if table < 256 else 252,
               proto=proto, scope=scope, type=rtype, flags=flags)


class FakeIPRoute(object):
    """Records rule()/route() calls; ``fail_on`` = (command, n) makes the n-th such call raise."""

    def __init__(self, rules=(), routes=(), links=None, fail_on=None):
        self.rules = list(rules)
        self.routes = list(routes)
        self.links = links or {1: "lo", 2: "eth0", 3: "eth0.100"}
        self.calls = []
        self.fail_on = fail_on
        self.counts = {}

    def _call(self, kind, command, kwargs):
        self.counts[(kind, command)] = self.counts.get((kind, command), 0) + 1
        if self.fail_on and self.fail_on == ((kind, command), self.counts[(kind, command)]):
            raise NetlinkError(17, "File exists")
        self.calls.append((kind, command, kwargs))

    def get_rules(self, family=socket.AF_INET):
        return tuple(m for m in self.rules if m["family"] == family)

    def get_routes(self, family=socket.AF_INET):
        return tuple(m for m in self.routes if m["family"] == family)

    def rule(self, command, **kwargs):
        self._call("rule", command, kwargs)

    def route(self, command, **kwargs):
        self._call("route", command, kwargs)

    def link_lookup(self, ifname):
        return [i for i, n in self.links.items() if n == ifname]

    def get_links(self):
        return [Msg([("IFLA_IFNAME", n)], index=i) for i, n in self.links.items()]
