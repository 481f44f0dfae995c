"""Unit tests of module_utils/policy_route: normalisation, validation, identity, plan, rendering, rollback."""

import ipaddress
import socket

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _policy_route as pr
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, ValidationError

from .netlink_fakes import FakeIPRoute, Msg, route_msg

NAMES = {1: "lo", 2: "eth0", 3: "eth0.100"}


def want(**params):
    return pr.normalise(params)


def kernel(*msgs):
    return [pr.from_netlink(m, NAMES) for m in msgs]


def default_via(gw, metric=None, oif=2, table=254):
    extra = {"RTA_GATEWAY": gw, "RTA_OIF": oif}
    if metric is not None:
        extra["RTA_PRIORITY"] = metric
    return route_msg(table=table, **extra)


LOCAL_100 = route_msg(table=100, rtype=2, scope=254, RTA_OIF=1)


# --- normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [
    ({"dest": "default", "gateway": "172.16.0.1"}, {"dest": "0.0.0.0/0", "gateway": "172.16.0.1", "table": "main", "metric": 0}),
    ({"dest": "172.16.0.11", "device": "eth0"}, {"dest": "172.16.0.11/32", "device": "eth0", "table": 254}),
    ({"dest": "default", "family": "ipv6", "device": "lo", "type": "local"}, {"dest": "::/0", "device": "lo", "type": "local", "metric": 1024}),
    ({"dest": "default", "gateway": "2001:db8::1"}, {"dest": "::/0", "gateway": "2001:db8::1", "metric": 0}),
])
def test_equivalent_spellings_normalise_alike(a, b):
    assert want(**a).render() == want(**b).render()
    assert want(**a).key == want(**b).key


def test_scopes_like_iproute2():
    assert want(dest="0.0.0.0/0", type="local", device="lo", table=100).scope == pr.SCOPE_HOST
    assert want(dest="10.0.0.0/8", device="eth0").scope == pr.SCOPE_LINK
    assert want(dest="10.0.0.0/8", gateway="172.16.0.1").scope == pr.SCOPE_UNIVERSE
    assert want(dest="::/0", type="local", device="lo").scope == pr.SCOPE_UNIVERSE


@pytest.mark.parametrize("params, message", [
    ({"dest": "10.0.0.0/8", "gateway": "2001:db8::1"}, "mix IPv4 and IPv6"),
    ({"dest": "default", "gateway": "172.16.0.1", "source": "2001:db8::2"}, "mix IPv4 and IPv6"),
    ({"dest": "default", "family": "ipv6", "gateway": "172.16.0.1"}, "does not match"),
    ({"dest": "0.0.0.0/0", "type": "local", "gateway": "172.16.0.1"}, "gateway is only for unicast"),
    ({"dest": "10.0.0.0/8", "type": "blackhole", "device": "eth0"}, "not used by blackhole"),
    ({"dest": "10.0.0.0/8"}, "needs a gateway or a device"),
    ({"dest": "172.16.0.1/24", "device": "eth0"}, "host bits set"),
    ({"dest": "", "device": "eth0"}, "dest is required"),
    ({"dest": "default", "gateway": "not-an-ip"}, "not an IPv4 or IPv6 address"),
    ({"dest": "default", "gateway": "0.0.0.0"}, "not a usable next hop"),
    ({"dest": "default", "device": "eth0", "table": 0}, "not a routing table"),
    ({"dest": "default", "device": "eth0", "table": 2 ** 32}, "out of range"),
    ({"dest": "default", "device": "eth0", "metric": -1}, "out of range"),
    ({"dest": "default", "device": "eth0", "type": "nat"}, "must be one of"),
    ({"dest": "default", "device": "bad name"}, "not a valid interface name"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}]}, "one next hop"),
    ({"dest": "default", "gateway": "10.0.2.1", "nexthops": [{"gateway": "10.0.2.2"}, {"gateway": "10.0.3.2"}]}, "either nexthops"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}, {"weight": 2}]}, r"nexthops\[2\] needs a gateway or a device"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}, {"gateway": "10.0.3.2", "weight": 257}]}, "weight 257 is out of range"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}, {"gateway": "2001:db8::1"}]}, "mix IPv4 and IPv6"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}, {"gateway": "10.0.3.2", "onlink": True}]}, "onlink needs a gateway and a device"),
    ({"dest": "default", "nexthops": [{"gateway": "10.0.2.2"}, {"gateway": "10.0.3.2"}], "type": "blackhole"}, "nexthops are only for unicast"),
    ({"dest": "default", "gateway": "192.0.2.1", "onlink": True}, "onlink needs a gateway and a device"),
    ({"dest": "default", "device": "eth0", "proto": 256}, "proto 256 is out of range"),
    ({"dest": "default", "device": "eth0", "proto": "nosuchproto"}, "neither a number"),
])
def test_validation_errors(params, message):
    with pytest.raises(ValidationError, match=message):
        want(**params)


def test_absent_needs_no_nexthop():
    assert want(dest="10.0.0.0/8", state="absent").dest == ipaddress.ip_network("10.0.0.0/8")


# --- kernel messages -------------------------------------------------------------------------

def test_from_netlink_and_render():
    local = pr.from_netlink(LOCAL_100, NAMES)
    assert local.render() == "local default dev lo table 100 scope host"
    gw = pr.from_netlink(default_via("10.0.2.2", metric=50, oif=3), NAMES)
    assert gw.render() == "default via 10.0.2.2 dev eth0.100 table main metric 50"
    assert gw.as_params() == {"family": "ipv4", "table": 254, "dest": "0.0.0.0/0", "type": "unicast", "gateway": "10.0.2.2",
                              "device": "eth0.100", "source": None, "metric": 50, "proto": "boot", "onlink": False, "nexthops": []}
    big = pr.from_netlink(route_msg("10.9.0.0", 16, table=1000, RTA_GATEWAY="172.16.0.1", RTA_OIF=2, RTA_PRIORITY=5), NAMES)
    assert big.table == 1000 and big.render() == "10.9.0.0/16 via 172.16.0.1 dev eth0 table 1000 metric 5"


def test_multipath_route_renders_and_rolls_back_with_its_hops():
    hop = Msg([("RTA_GATEWAY", "10.0.2.2")], oif=2)
    route = pr.from_netlink(route_msg(table=254, RTA_MULTIPATH=[hop]), NAMES)
    assert route.render() == "default nexthop via 10.0.2.2 dev eth0 weight 1 table main"
    assert route.netlink_args()["multipath"] == [{"gateway": "10.0.2.2", "oif": 2, "hops": 0}]


ECMP = route_msg(table=254, proto=4, RTA_PRIORITY=20, RTA_MULTIPATH=[
    Msg([("RTA_GATEWAY", "10.0.2.2")], oif=2, hops=0, flags=0),
    Msg([("RTA_GATEWAY", "10.0.3.2")], oif=3, hops=2, flags=pr.RTNH_F_ONLINK),
])
ECMP_PARAMS = {"dest": "0.0.0.0/0", "table": 254, "metric": 20, "proto": "static", "nexthops": [
    {"gateway": "10.0.2.2", "device": "eth0", "weight": 1, "onlink": False},
    {"gateway": "10.0.3.2", "device": "eth0.100", "weight": 3, "onlink": True},
]}


def test_ecmp_route_with_proto_round_trips_through_the_module_options():
    have = pr.from_netlink(ECMP, NAMES)
    assert have.render() == ("default nexthop via 10.0.2.2 dev eth0 weight 1 nexthop via 10.0.3.2 dev eth0.100 weight 3 onlink"
                             " table main proto static metric 20")
    params = have.as_params()
    assert (params["gateway"], params["device"], params["proto"], params["onlink"]) == (None, None, "static", False)
    assert params["nexthops"] == ECMP_PARAMS["nexthops"]
    # what the module returns in `removed` is a request for the same route
    assert pr.satisfies(have, pr.normalise(params))
    assert not pr.plan(want(**ECMP_PARAMS), [have], "present").changed
    # devices not resolved (no oif yet); a hop without onlink may leave the device to the kernel
    args = pr.normalise(dict(ECMP_PARAMS, nexthops=[dict(h, device=None) if not h["onlink"] else h for h in ECMP_PARAMS["nexthops"]])).netlink_args()
    assert args["multipath"] == [{"gateway": "10.0.2.2", "hops": 0}, {"gateway": "10.0.3.2", "hops": 2, "flags": pr.RTNH_F_ONLINK}]
    assert (args["proto"], args["scope"]) == (4, pr.SCOPE_UNIVERSE) and "gateway" not in args and "oif" not in args


@pytest.mark.parametrize("change", [
    {"nexthops": [dict(ECMP_PARAMS["nexthops"][0], weight=2), ECMP_PARAMS["nexthops"][1]]},
    {"nexthops": [ECMP_PARAMS["nexthops"][0], dict(ECMP_PARAMS["nexthops"][1], onlink=False)]},
    {"nexthops": list(reversed(ECMP_PARAMS["nexthops"]))},
    {"nexthops": None, "gateway": "10.0.2.2"},
    {"proto": "boot"},
])
def test_ecmp_route_with_other_hops_or_proto_is_replaced(change):
    plan = pr.plan(want(**dict(ECMP_PARAMS, **change)), [pr.from_netlink(ECMP, NAMES)], "present")
    assert plan.changed and len(plan.to_remove) == 1 and len(plan.to_add) == 1


def test_proto_and_onlink_are_compared_only_when_given():
    static_onlink = pr.from_netlink(route_msg(table=254, proto=4, flags=pr.RTNH_F_ONLINK, RTA_GATEWAY="192.0.2.1", RTA_OIF=2), NAMES)
    assert static_onlink.render() == "default via 192.0.2.1 dev eth0 table main proto static onlink"
    assert pr.satisfies(static_onlink, want(dest="default", gateway="192.0.2.1"))
    assert pr.satisfies(static_onlink, pr.normalise(static_onlink.as_params()))
    assert not pr.satisfies(static_onlink, want(dest="default", gateway="192.0.2.1", proto="dhcp"))
    assert not pr.satisfies(static_onlink, want(dest="default", gateway="192.0.2.1", device="eth0", onlink=False))
    args = want(dest="default", gateway="192.0.2.1", device="eth0", onlink=True, proto=16).netlink_args()
    assert (args["flags"], args["proto"]) == (pr.RTNH_F_ONLINK, 16)
    assert want(dest="default", gateway="192.0.2.1").netlink_args()["proto"] == pr.RTPROT_BOOT
    gone = pr.plan(want(dest="default", proto="static", state="absent"), [static_onlink], "absent")
    assert gone.to_remove == [static_onlink]
    assert not pr.plan(want(dest="default", proto="kernel", state="absent"), [static_onlink], "absent").changed


def test_ipv6_ecmp_nexthops_set_the_family():
    route = want(dest="default", nexthops=[{"gateway": "2001:db8::1"}, {"gateway": "2001:db8::2", "weight": 2}])
    assert (route.family, str(route.dest), route.metric) == (6, "::/0", 1024)


def test_read_routes_skips_cloned_and_other_tables():
    ipr = FakeIPRoute(routes=[LOCAL_100, default_via("10.0.2.2"), route_msg(table=100, flags=pr.RTM_F_CLONED, RTA_OIF=2)])
    routes = pr.read_routes(ipr, 4, 100)
    assert [r.render() for r in routes] == ["local default dev lo table 100 scope host"]


# --- plan ----------------------------------------------------------------------------------

def test_plan_adds_local_route():
    plan = pr.plan(want(dest="0.0.0.0/0", type="local", device="lo", table=100), [], "present")
    assert plan.changed and plan.diff() == {"before": "", "after": "local default dev lo table 100 scope host\n"}


def test_plan_is_idempotent():
    assert not pr.plan(want(dest="0.0.0.0/0", type="local", device="lo", table="100"), kernel(LOCAL_100), "present").changed
    # the kernel picked the device for a gateway-only route: still the same route
    assert not pr.plan(want(dest="default", gateway="10.0.2.2"), kernel(default_via("10.0.2.2")), "present").changed


def test_plan_replaces_same_identity_with_other_gateway_or_type():
    plan = pr.plan(want(dest="default", gateway="172.16.0.1"), kernel(default_via("10.0.2.2")), "present")
    assert plan.changed and [r.render() for r in plan.to_remove] == ["default via 10.0.2.2 dev eth0 table main"]
    assert plan.after == ["default via 172.16.0.1 table main"]
    plan = pr.plan(want(dest="default", device="lo", table=100), kernel(LOCAL_100), "present")
    assert plan.changed and len(plan.to_remove) == 1


def test_plan_other_metric_is_another_route_unless_exclusive():
    routes = kernel(default_via("10.0.2.2"), default_via("10.0.2.3", metric=50))
    plan = pr.plan(want(dest="default", gateway="10.0.2.2"), routes, "present")
    assert not plan.changed
    plan = pr.plan(want(dest="default", gateway="10.0.2.2"), routes, "present", exclusive=True)
    assert [r.gateway for r in plan.to_remove] == [ipaddress.ip_address("10.0.2.3")] and not plan.to_add
    plan = pr.plan(want(dest="default", gateway="172.16.0.1"), routes, "present", exclusive=True)
    assert len(plan.to_remove) == 2 and plan.after == ["default via 172.16.0.1 table main"]


def test_plan_exclusive_removes_routes_sharing_the_key_of_the_route_that_stays():
    # `ip route append default via 172.16.0.1` next to `default via 10.0.2.2`: same key, both kept by the kernel
    routes = kernel(default_via("10.0.2.2"), default_via("172.16.0.1", oif=3), default_via("10.0.2.3", metric=50))
    plan = pr.plan(want(dest="default", gateway="172.16.0.1"), routes, "present", exclusive=True)
    assert not plan.to_add
    assert sorted(str(r.gateway) for r in plan.to_remove) == ["10.0.2.2", "10.0.2.3"]
    assert plan.after == ["default via 172.16.0.1 dev eth0.100 table main"]
    assert not pr.plan(want(dest="default", gateway="172.16.0.1"), routes, "present").changed


def test_plan_append_keeps_the_routes_of_the_same_key_and_is_idempotent():
    routes = kernel(default_via("10.0.2.2"), default_via("10.0.2.3", metric=50))
    plan = pr.plan(want(dest="default", gateway="172.16.0.1"), routes, "present", append=True)
    assert [str(r.gateway) for r in plan.to_add] == ["172.16.0.1"] and not plan.to_remove
    assert plan.diff()["after"].count("\n") == 3
    appended = kernel(default_via("10.0.2.2"), default_via("172.16.0.1", oif=3))
    assert not pr.plan(want(dest="default", gateway="172.16.0.1"), appended, "present", append=True).changed


def test_append_and_exclusive_are_refused_together():
    with pytest.raises(ValidationError, match="append and exclusive are mutually exclusive"):
        want(dest="default", gateway="172.16.0.1", append=True, exclusive=True)


def test_ensure_append_appends_and_touches_nothing_in_check_mode():
    ipr = FakeIPRoute(routes=[default_via("10.0.2.2")])
    params = {"dest": "default", "gateway": "172.16.0.1", "append": True}
    assert pr.ensure(ipr, params, check_mode=True)["changed"] and ipr.calls == []
    result = pr.ensure(ipr, params)
    assert [c[1] for c in ipr.calls] == ["append"] and result["removed"] == []
    assert ipr.calls[0][2]["gateway"] == "172.16.0.1" and ipr.calls[0][2]["priority"] == 0


def test_plan_absent_matches_type_and_given_nexthop():
    routes = kernel(default_via("10.0.2.2"))
    assert not pr.plan(want(dest="default", gateway="172.16.0.1", state="absent"), routes, "absent").changed
    assert not pr.plan(want(dest="default", type="local", state="absent"), routes, "absent").changed
    assert pr.plan(want(dest="default", gateway="10.0.2.2", state="absent"), routes, "absent").changed
    assert pr.plan(want(dest="default", state="absent"), routes, "absent").changed


def test_ipv6_metric_default():
    msg = route_msg(family=socket.AF_INET6, table=100, rtype=2, RTA_OIF=1, RTA_PRIORITY=1024)
    route = pr.from_netlink(msg, NAMES)
    assert not pr.plan(want(dest="::/0", type="local", device="lo", table=100), [route], "present").changed


# --- ensure, order and rollback --------------------------------------------------------------

def test_ensure_exclusive_adds_before_it_deletes_and_reports_removed():
    ipr = FakeIPRoute(routes=[default_via("10.0.2.2", oif=3), default_via("10.0.2.3", metric=50, oif=3)])
    result = pr.ensure(ipr, {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
    assert [c[1] for c in ipr.calls] == ["replace", "del"]
    assert [r["gateway"] for r in result["removed"]] == ["10.0.2.2", "10.0.2.3"]
    delete = ipr.calls[1][2]
    assert (delete["priority"], delete["gateway"], delete["oif"], delete["proto"], delete["scope"]) == (50, "10.0.2.3", 3, 3, 0)


def test_ensure_check_mode_touches_nothing():
    ipr = FakeIPRoute(routes=[default_via("10.0.2.2")])
    result = pr.ensure(ipr, {"dest": "default", "gateway": "172.16.0.1", "exclusive": True}, check_mode=True)
    assert result["changed"] and ipr.calls == []


def test_ensure_unknown_device_fails_before_any_change():
    ipr = FakeIPRoute()
    with pytest.raises(ValidationError, match="unknown interface 'eth9'"):
        pr.ensure(ipr, {"dest": "default", "device": "eth9"})
    assert ipr.calls == []


def test_failed_delete_rolls_back_the_replace_and_earlier_deletes():
    ipr = FakeIPRoute(routes=[default_via("10.0.2.2"), default_via("10.0.2.3", metric=50), default_via("10.0.2.4", metric=60)],
                      fail_on=(("route", "del"), 2))
    with pytest.raises(ApplyError) as info:
        pr.ensure(ipr, {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
    assert info.value.rolled_back and "2 earlier change(s) rolled back" in str(info.value)
    steps = [(c[1], c[2].get("gateway")) for c in ipr.calls]
    assert steps == [("replace", "172.16.0.1"), ("del", "10.0.2.3"), ("append", "10.0.2.3"), ("replace", "10.0.2.2")]
