"""Real-kernel tests of the ip_rule module in throwaway network namespaces."""

import pytest

DUMP = "ip rule show; echo ---; ip -6 rule show"


@pytest.fixture
def ns(netns, sh):
    name = netns()
    sh(name, "ip link add v0 type veth peer name v0.100 && ip link set v0 up && ip link set v0.100 up")
    return name


def test_add_is_idempotent_and_absent_restores_the_baseline(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", {"priority": 100, "fwmark": 1, "table": 100})
    assert result["rc"] == 0 and result["changed"], result
    assert "100:\tfrom all fwmark 0x1 lookup 100" in sh(ns, "ip rule show")
    assert "100: from all fwmark 0x1 lookup 100" in result["diff"]["after"]
    assert "100: from all fwmark 0x1 lookup 100" not in result["diff"]["before"]
    assert result["added"][0]["priority"] == 100

    again = run_module(ns, "ip_rule", {"priority": "100", "fwmark": "0x1", "fwmask": "0xffffffff", "table": "100"})
    assert again["rc"] == 0 and not again["changed"], again

    removed = run_module(ns, "ip_rule", {"priority": 100, "fwmark": 1, "table": 100, "state": "absent"})
    assert removed["changed"] and len(removed["removed"]) == 1
    assert sh(ns, DUMP) == baseline
    assert not run_module(ns, "ip_rule", {"priority": 100, "fwmark": 1, "table": 100, "state": "absent"})["changed"]


def test_check_mode_reports_and_changes_nothing(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", {"priority": 100, "fwmark": 1, "table": 100}, check=True)
    assert result["rc"] == 0 and result["changed"] and result["diff"]["before"] != result["diff"]["after"]
    assert sh(ns, DUMP) == baseline


def test_ipv6_rule_with_selectors_on_a_dotted_device_and_a_big_table(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    args = {"priority": 200, "from": "2001:db8::/32", "to": "2001:db8:1::1", "iif": "v0.100", "table": 1000}
    result = run_module(ns, "ip_rule", args)
    assert result["rc"] == 0 and result["changed"], result
    assert "200:\tfrom 2001:db8::/32 to 2001:db8:1::1 iif v0.100 lookup 1000" in sh(ns, "ip -6 rule show")
    assert sh(ns, "ip rule show") in baseline  # IPv4 untouched
    assert not run_module(ns, "ip_rule", dict(args, to="2001:db8:1::1/128", family="ipv6"))["changed"]
    assert run_module(ns, "ip_rule", dict(args, state="absent"))["changed"]
    assert sh(ns, DUMP) == baseline


def test_rule_without_priority_and_other_actions(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", {"to": "192.0.2.0/24", "action": "unreachable"})
    assert result["changed"] and result["added"][0]["priority"] == 32000
    assert "32000:\tfrom all to 192.0.2.0/24 unreachable" in sh(ns, "ip rule show")
    assert not run_module(ns, "ip_rule", {"to": "192.0.2.0/24", "action": "unreachable"})["changed"]
    assert run_module(ns, "ip_rule", {"to": "192.0.2.0/24", "action": "unreachable", "state": "absent"})["changed"]
    assert sh(ns, DUMP) == baseline


def test_absent_never_removes_rules_that_do_not_match_exactly(ns, sh, run_module):
    sh(ns, "ip rule add pref 100 fwmark 1 iif v0 lookup 100; ip rule add pref 101 fwmark 1 lookup 100 tos 0x10")
    before = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", {"fwmark": 1, "table": 100, "state": "absent"})
    assert result["rc"] == 0 and not result["changed"], result
    assert not run_module(ns, "ip_rule", {"table": "main", "state": "absent"})["changed"]
    assert not run_module(ns, "ip_rule", {"table": "local", "state": "absent"})["changed"]
    assert sh(ns, DUMP) == before


@pytest.mark.parametrize("args, message", [
    ({"from": "10.0.0.0/8", "to": "2001:db8::/32", "table": 100}, "mix IPv4 and IPv6"),
    ({"fwmask": "0xff", "table": 100}, "fwmask needs fwmark"),
    ({"iif": "nosuchdev", "table": 100}, "unknown interface 'nosuchdev'"),
    ({"from": "172.16.0.1/24", "table": 100}, "host bits set"),
    ({"fwmark": 1, "table": 0}, "not a routing table"),
    ({"priority": 4294967296, "table": 100}, "out of range"),
])
def test_bad_input_fails_clearly_and_changes_nothing(ns, sh, run_module, args, message):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", args)
    assert result.get("failed") and result["rc"] != 0 and message in result["msg"], result
    assert sh(ns, DUMP) == baseline


@pytest.mark.parametrize("args, listing", [
    ({"from": "0.0.0.0/0", "priority": 300, "table": 100}, "ip rule show"),
    ({"to": "0.0.0.0/0", "fwmark": 1, "table": 100}, "ip rule show"),
    ({"from": "::/0", "priority": 300, "table": 100}, "ip -6 rule show"),
    ({"from": "::/0", "to": "::/0", "iif": "v0", "table": 100}, "ip -6 rule show"),
])
def test_zero_length_prefix_means_any_and_is_idempotent(ns, sh, run_module, args, listing):
    # the kernel keeps no zero-length selector (it dumps "from all"): 0.0.0.0/0 and ::/0 must compare as "all"
    baseline = sh(ns, DUMP)
    first = run_module(ns, "ip_rule", args)
    assert first["rc"] == 0 and first["changed"], first
    assert "lookup 100" in sh(ns, listing)  # ::/0 says IPv6 as an address would
    again = run_module(ns, "ip_rule", args)
    assert again["rc"] == 0 and not again["changed"], again
    family = "ipv6" if "-6" in listing else "ipv4"
    assert not run_module(ns, "ip_rule", dict(args, family=family, **{"from": "all"}))["changed"]
    removed = run_module(ns, "ip_rule", dict(args, state="absent"))
    assert removed["changed"] and len(removed["removed"]) == 1, removed
    assert sh(ns, DUMP) == baseline
