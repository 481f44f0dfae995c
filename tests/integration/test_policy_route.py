"""Real-kernel tests of the policy_route module in throwaway network namespaces."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import COLLECTIONS

DUMP = "ip route show table all; echo ---; ip -6 route show table all"


@pytest.fixture
def ns(netns, sh):
    """v0 on 172.16.0.0/24 (the proxy is .1), v0.100 on 10.0.2.0/24 with two default routes."""
    name = netns()
    # no link-local addresses: their routes would appear while a test runs and spoil the dumps
    sh(name, "ip link add v0 type veth peer name v0.100 && ip link set v0 addrgenmode none && ip link set v0.100 addrgenmode none"
             " && ip link set v0 up && ip link set v0.100 up"
             " && ip addr add 172.16.0.2/24 dev v0 && ip addr add 10.0.2.15/24 dev v0.100"
             " && ip -6 addr add 2001:db8::2/64 dev v0 nodad"
             " && ip route add default via 10.0.2.2 && ip route add default via 10.0.2.3 metric 50")
    # the IPv6 address's local route appears once the veth has carrier (asynchronously): wait for it
    sh(name, "for i in $(seq 100); do ip -6 route show table local | grep -q '^local 2001:db8::2 ' && exit 0; sleep 0.05; done; exit 1")
    return name


LOCAL4 = {"dest": "0.0.0.0/0", "type": "local", "device": "lo", "table": 100}
LOCAL6 = {"dest": "::/0", "type": "local", "device": "lo", "table": 100}


@pytest.mark.parametrize("args, shown", [
    (LOCAL4, "local default dev lo table 100"),
    (LOCAL6, "local default dev lo table 100 metric 1024"),
])
def test_local_route_is_idempotent_and_absent_restores_the_baseline(ns, sh, run_module, args, shown):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "policy_route", args)
    assert result["rc"] == 0 and result["changed"], result
    assert shown in sh(ns, DUMP)
    assert result["diff"]["before"] == "" and "local default dev lo table 100" in result["diff"]["after"]
    assert not run_module(ns, "policy_route", dict(args, table="100"))["changed"]
    removed = run_module(ns, "policy_route", dict(args, state="absent"))
    assert removed["changed"] and len(removed["removed"]) == 1
    assert sh(ns, DUMP) == baseline
    assert not run_module(ns, "policy_route", dict(args, state="absent"))["changed"]


def test_check_mode_reports_and_changes_nothing(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    for args in (LOCAL4, {"dest": "default", "gateway": "172.16.0.1", "exclusive": True}):
        result = run_module(ns, "policy_route", args, check=True)
        assert result["rc"] == 0 and result["changed"] and result["diff"]["before"] != result["diff"]["after"], result
    assert sh(ns, DUMP) == baseline


def test_exclusive_default_route_returns_what_it_removed_so_it_can_be_restored(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
    assert result["rc"] == 0 and result["changed"], result
    assert sorted((r["gateway"], r["metric"]) for r in result["removed"]) == [("10.0.2.2", 0), ("10.0.2.3", 50)]
    assert sh(ns, "ip route show default") == "default via 172.16.0.1 dev v0 \n"
    assert result["route"]["device"] == "v0"
    assert not run_module(ns, "policy_route", {"dest": "0.0.0.0/0", "gateway": "172.16.0.1", "exclusive": True})["changed"]

    # teardown as a role does it: remove ours, put back what was removed
    assert run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "state": "absent"})["changed"]
    for route in result["removed"]:
        restored = run_module(ns, "policy_route", route)
        assert restored["rc"] == 0 and restored["changed"], restored
    assert sh(ns, DUMP) == baseline


def test_same_identity_with_another_gateway_is_replaced(ns, sh, run_module):
    result = run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1"})
    assert result["changed"] and [r["gateway"] for r in result["removed"]] == ["10.0.2.2"]
    assert sh(ns, "ip route show default") == "default via 172.16.0.1 dev v0 \ndefault via 10.0.2.3 dev v0.100 metric 50 \n"


def test_append_adds_next_to_a_route_of_the_same_key_and_absent_removes_only_it(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    ours = {"dest": "default", "gateway": "172.16.0.1", "append": True}
    preview = run_module(ns, "policy_route", ours, check=True)
    assert preview["rc"] == 0 and preview["changed"] and sh(ns, DUMP) == baseline, preview
    result = run_module(ns, "policy_route", ours)
    assert result["rc"] == 0 and result["changed"] and result["removed"] == [], result
    both = "default via 10.0.2.2 dev v0.100 \ndefault via 172.16.0.1 dev v0 \ndefault via 10.0.2.3 dev v0.100 metric 50 \n"
    assert sh(ns, "ip route show default") == both
    again = run_module(ns, "policy_route", ours)
    assert again["rc"] == 0 and not again["changed"], again
    assert sh(ns, "ip route show default") == both
    refused = run_module(ns, "policy_route", dict(ours, exclusive=True))
    assert refused["rc"] != 0 and "append and exclusive are mutually exclusive" in refused["msg"], refused
    assert run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "state": "absent"})["changed"]
    assert sh(ns, DUMP) == baseline


def test_routes_in_a_big_table_with_source_and_metric(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    args = {"dest": "198.51.100.0/24", "gateway": "172.16.0.1", "source": "172.16.0.2", "metric": 7, "table": 100000}
    assert run_module(ns, "policy_route", args)["changed"]
    assert "198.51.100.0/24 via 172.16.0.1 dev v0 table 100000 src 172.16.0.2 metric 7" in sh(ns, DUMP)
    assert not run_module(ns, "policy_route", dict(args, device="v0"))["changed"]
    # another metric is another route
    other = run_module(ns, "policy_route", dict(args, metric=8))
    assert other["changed"] and other["removed"] == []
    assert run_module(ns, "policy_route", dict(args, state="absent"))["changed"]
    assert run_module(ns, "policy_route", dict(args, metric=8, state="absent"))["changed"]
    assert sh(ns, DUMP) == baseline


def test_blackhole_and_ipv6_gateway_routes(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    hole = {"dest": "192.0.2.0/24", "type": "blackhole", "table": "main"}
    v6 = {"dest": "2001:db8:99::/48", "gateway": "2001:db8::1", "table": 200}
    for args in (hole, v6):
        assert run_module(ns, "policy_route", args)["changed"]
        assert not run_module(ns, "policy_route", args)["changed"]
    assert "blackhole 192.0.2.0/24" in sh(ns, DUMP)
    assert "2001:db8:99::/48 via 2001:db8::1 dev v0 table 200 metric 1024" in sh(ns, DUMP)
    for args in (hole, v6):
        assert run_module(ns, "policy_route", dict(args, state="absent"))["changed"]
    assert sh(ns, DUMP) == baseline


@pytest.mark.parametrize("args, message", [
    ({"dest": "0.0.0.0/0", "type": "local", "gateway": "172.16.0.1", "table": 100}, "gateway is only for unicast"),
    ({"dest": "10.0.0.0/8", "gateway": "2001:db8::1"}, "mix IPv4 and IPv6"),
    ({"dest": "10.0.0.0/8", "device": "nosuchdev"}, "unknown interface 'nosuchdev'"),
    ({"dest": "10.0.0.1/8", "device": "v0"}, "host bits set"),
    ({"dest": "default", "device": "v0", "table": 0}, "not a routing table"),
    ({"dest": "default", "gateway": "172.16.0.1", "exclusive": True, "table": 4294967296}, "out of range"),
])
def test_bad_input_fails_clearly_and_changes_nothing(ns, sh, run_module, args, message):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "policy_route", args)
    assert result.get("failed") and result["rc"] != 0 and message in result["msg"], result
    assert sh(ns, DUMP) == baseline


def test_kernel_refusal_of_the_new_route_leaves_the_old_ones(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    # 203.0.113.1 is not on any link: the kernel refuses the next hop before anything was removed
    result = run_module(ns, "policy_route", {"dest": "default", "gateway": "203.0.113.1", "exclusive": True})
    assert result.get("failed") and "203.0.113.1" in result["msg"], result
    assert sh(ns, DUMP) == baseline


def test_exclusive_also_removes_routes_appended_next_to_a_satisfying_one(ns, sh, run_module):
    # same key (table, dest, metric) twice: `ip route append` keeps both, the first one wins
    sh(ns, "ip route append default via 172.16.0.1")
    assert sh(ns, "ip route show default metric 0").count("default") == 2
    result = run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
    assert result["rc"] == 0 and result["changed"], result
    assert result["added"] == []
    assert sorted((r["gateway"], r["metric"]) for r in result["removed"]) == [("10.0.2.2", 0), ("10.0.2.3", 50)]
    assert sh(ns, "ip route show default") == "default via 172.16.0.1 dev v0 \n"
    assert not run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})["changed"]


ROLLBACK_WITH_AN_APPENDED_ROUTE = textwrap.dedent("""
    import json
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    from ansible_collections.netops.ip_transparency.plugins.module_utils import _policy_route as pr
    from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError

    class SecondDeleteFails(object):
        # the real kernel, except that the second route deletion is refused
        def __init__(self, ipr):
            self.ipr, self.deletes = ipr, 0

        def route(self, command, **kwargs):
            if command == "del":
                self.deletes += 1
                if self.deletes == 2:
                    raise NetlinkError(16, "injected failure")
            return self.ipr.route(command, **kwargs)

        def __getattr__(self, name):
            return getattr(self.ipr, name)

    with IPRoute() as ipr:
        try:
            pr.ensure(SecondDeleteFails(ipr), {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
            print(json.dumps({"error": None}))
        except ApplyError as exc:
            print(json.dumps({"error": str(exc), "rolled_back": exc.rolled_back}))
""")


def test_a_failed_exclusive_change_puts_an_appended_route_back(ns, sh):
    """The undo of deleting a route that shared its key with another (``ip route append``) appends it
    again: adding it would be refused (File exists) while the replaced route holds the key."""
    sh(ns, "ip route append default via 10.0.2.4")
    before = sh(ns, "ip route show default")
    assert before.count("metric 50") == 1 and "10.0.2.4" in before, before
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", ROLLBACK_WITH_AN_APPENDED_ROUTE],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS), check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["error"] and "(errno 16)" in result["error"], result
    assert result["rolled_back"] is True, result
    assert sorted(sh(ns, "ip route show default").splitlines()) == sorted(before.splitlines())


ECMP = {"dest": "198.51.100.0/24", "proto": "static", "metric": 5, "nexthops": [
    {"gateway": "172.16.0.1", "device": "v0"}, {"gateway": "10.0.2.2", "device": "v0.100", "weight": 3}]}


def test_ecmp_route_with_proto_in_check_mode_diff_idempotence_and_absent(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    check = run_module(ns, "policy_route", ECMP, check=True)
    assert check["rc"] == 0 and check["changed"], check
    assert "nexthop via 172.16.0.1 dev v0 weight 1 nexthop via 10.0.2.2 dev v0.100 weight 3" in check["diff"]["after"]
    assert sh(ns, DUMP) == baseline
    result = run_module(ns, "policy_route", ECMP)
    assert result["rc"] == 0 and result["changed"], result
    shown = sh(ns, "ip route show 198.51.100.0/24")
    assert "proto static metric 5" in shown and "nexthop via 172.16.0.1 dev v0 weight 1" in shown, shown
    assert "nexthop via 10.0.2.2 dev v0.100 weight 3" in shown, shown
    assert result["route"]["nexthops"] == [{"gateway": "172.16.0.1", "device": "v0", "weight": 1, "onlink": False},
                                           {"gateway": "10.0.2.2", "device": "v0.100", "weight": 3, "onlink": False}]
    assert not run_module(ns, "policy_route", ECMP)["changed"]
    # the kernel picks the hops' devices when not given; another weight is another route
    any_device = [{"gateway": h["gateway"], "weight": h.get("weight", 1)} for h in ECMP["nexthops"]]
    assert not run_module(ns, "policy_route", dict(ECMP, nexthops=any_device))["changed"]
    heavier = run_module(ns, "policy_route", dict(ECMP, nexthops=[ECMP["nexthops"][0], dict(ECMP["nexthops"][1], weight=4)]))
    assert heavier["changed"] and heavier["removed"][0]["nexthops"][1]["weight"] == 3, heavier
    assert "nexthop via 10.0.2.2 dev v0.100 weight 4" in sh(ns, "ip route show 198.51.100.0/24")
    assert run_module(ns, "policy_route", {"dest": "198.51.100.0/24", "metric": 5, "state": "absent"})["changed"]
    assert sh(ns, DUMP) == baseline


def test_exclusive_returns_ecmp_proto_and_onlink_routes_as_options_that_restore_them(ns, sh, run_module):
    sh(ns, "ip route flush default"
           " && ip route add default proto static nexthop via 10.0.2.2 dev v0.100 nexthop via 192.0.2.1 dev v0 weight 2 onlink"
           " && ip route add default via 192.0.2.7 dev v0.100 onlink proto dhcp metric 50")
    baseline = sh(ns, DUMP)
    result = run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "exclusive": True})
    assert result["rc"] == 0 and result["changed"], result
    assert sh(ns, "ip route show default") == "default via 172.16.0.1 dev v0 \n"
    ecmp, onlink = sorted(result["removed"], key=lambda r: r["metric"])
    assert (ecmp["gateway"], ecmp["device"], ecmp["proto"], len(ecmp["nexthops"])) == (None, None, "static", 2), ecmp
    assert ecmp["nexthops"][1] == {"gateway": "192.0.2.1", "device": "v0", "weight": 2, "onlink": True}
    assert (onlink["gateway"], onlink["device"], onlink["proto"], onlink["onlink"]) == ("192.0.2.7", "v0.100", "dhcp", True)
    assert run_module(ns, "policy_route", {"dest": "default", "gateway": "172.16.0.1", "state": "absent"})["changed"]
    for route in result["removed"]:
        restored = run_module(ns, "policy_route", route)
        assert restored["rc"] == 0 and restored["changed"], restored
        assert not run_module(ns, "policy_route", route)["changed"]
    assert sh(ns, DUMP) == baseline
