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


# --- ipproto / sport / dport (Linux 4.17+): the route back chosen by the reply's source port ---------------

@pytest.fixture
def routed(ns, sh):
    """v0 on 10.9.0.1/24 and 2001:db8:9::1/64; main default via .253/::fd, table 101 default via .254/::fe."""
    sh(ns, "ip addr add 10.9.0.1/24 dev v0 && ip -6 addr add 2001:db8:9::1/64 dev v0 nodad"
           " && ip route add default via 10.9.0.253 && ip route add default via 10.9.0.254 table 101"
           " && ip -6 route add default via 2001:db8:9::fd && ip -6 route add default via 2001:db8:9::fe table 101")
    return ns


SPORT80 = {"priority": 1000, "ipproto": "tcp", "sport": 80, "table": 101}


def test_sport_rule_add_idempotent_diff_and_remove(routed, sh, run_module):
    ns = routed
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", SPORT80)
    assert result["rc"] == 0 and result["changed"], result
    assert "1000:\tfrom all ipproto tcp sport 80 lookup 101" in sh(ns, "ip rule show")
    assert "1000: from all ipproto tcp sport 80 lookup 101" in result["diff"]["after"]
    assert "sport" not in result["diff"]["before"]
    added = result["added"][0]
    assert (added["ipproto"], added["sport"], added["dport"], added["priority"]) == ("tcp", 80, None, 1000)
    assert sh(ns, "ip -6 rule show") in baseline  # IPv6 untouched

    for spelling in (SPORT80, dict(SPORT80, ipproto=6, sport="80-80"), dict(SPORT80, ipproto="6", sport="80", table="101")):
        again = run_module(ns, "ip_rule", spelling)
        assert again["rc"] == 0 and not again["changed"], (spelling, again)

    # a rule differing only by sport is another rule: added next to it, and removing it leaves port 80 alone
    other = dict(SPORT80, sport=443)
    assert run_module(ns, "ip_rule", other)["changed"]
    rules = sh(ns, "ip rule show")
    assert "ipproto tcp sport 80 lookup 101" in rules and "ipproto tcp sport 443 lookup 101" in rules
    assert run_module(ns, "ip_rule", dict(other, state="absent"))["changed"]
    assert "ipproto tcp sport 80 lookup 101" in sh(ns, "ip rule show")
    # neither the same rule without the selectors nor with only ipproto takes it away
    assert not run_module(ns, "ip_rule", {"priority": 1000, "table": 101, "state": "absent"})["changed"]
    assert not run_module(ns, "ip_rule", {"priority": 1000, "ipproto": "tcp", "table": 101, "state": "absent"})["changed"]

    removed = run_module(ns, "ip_rule", dict(SPORT80, state="absent"))
    assert removed["changed"] and removed["removed"][0]["sport"] == 80, removed
    assert sh(ns, DUMP) == baseline
    assert not run_module(ns, "ip_rule", dict(SPORT80, state="absent"))["changed"]


def test_sport_rule_check_mode_changes_nothing(routed, sh, run_module):
    baseline = sh(routed, DUMP)
    result = run_module(routed, "ip_rule", dict(SPORT80, dport="1024-65534"), check=True)
    assert result["rc"] == 0 and result["changed"], result
    assert "1000: from all ipproto tcp sport 80 dport 1024-65534 lookup 101" in result["diff"]["after"]
    assert sh(routed, DUMP) == baseline


def test_packets_take_the_sport_rule_ipv4(routed, sh, run_module):
    ns = routed
    assert "via 10.9.0.253" in sh(ns, "ip route get 198.51.100.7 ipproto tcp sport 80")
    assert run_module(ns, "ip_rule", SPORT80)["changed"]
    assert "via 10.9.0.254" in sh(ns, "ip route get 198.51.100.7 ipproto tcp sport 80")
    assert "via 10.9.0.253" in sh(ns, "ip route get 198.51.100.7 ipproto tcp sport 81")
    assert "via 10.9.0.253" in sh(ns, "ip route get 198.51.100.7 ipproto udp sport 80")
    assert "via 10.9.0.253" in sh(ns, "ip route get 198.51.100.7")


def test_packets_take_the_sport_and_dport_rule_ipv6(routed, sh, run_module):
    ns = routed
    baseline = sh(ns, DUMP)
    args = {"family": "ipv6", "priority": 1001, "ipproto": "udp", "sport": 53, "dport": "1024-65534", "table": 101}
    result = run_module(ns, "ip_rule", args)
    assert result["rc"] == 0 and result["changed"], result
    assert "1001:\tfrom all ipproto udp sport 53 dport 1024-65534 lookup 101" in sh(ns, "ip -6 rule show")
    assert sh(ns, "ip rule show") in baseline  # IPv4 untouched
    assert not run_module(ns, "ip_rule", dict(args, ipproto=17, sport="53-53"))["changed"]
    assert "via 2001:db8:9::fe" in sh(ns, "ip -6 route get 2001:db8:77::1 ipproto udp sport 53 dport 5353")
    assert "via 2001:db8:9::fd" in sh(ns, "ip -6 route get 2001:db8:77::1 ipproto udp sport 53 dport 53")
    assert "via 2001:db8:9::fd" in sh(ns, "ip -6 route get 2001:db8:77::1 ipproto tcp sport 53 dport 5353")
    assert run_module(ns, "ip_rule", dict(args, state="absent"))["changed"]
    assert sh(ns, DUMP) == baseline


def test_a_rule_set_by_ip_with_ports_is_read_and_removed(ns, sh, run_module):
    baseline = sh(ns, DUMP)
    sh(ns, "ip rule add pref 1000 ipproto tcp sport 8000-8080 dport 443 lookup 101")
    assert not run_module(ns, "ip_rule", {"priority": 1000, "ipproto": "tcp", "sport": "8000-8080", "dport": 443, "table": 101})["changed"]
    assert run_module(ns, "ip_rule", {"ipproto": "tcp", "sport": "8000-8080", "dport": 443, "table": 101, "state": "absent"})["changed"]
    assert sh(ns, DUMP) == baseline


@pytest.mark.parametrize("args, message", [
    ({"sport": 80, "table": 101}, "sport needs ipproto tcp, udp, sctp or dccp"),
    ({"ipproto": "icmp", "dport": 80, "table": 101}, "dport needs ipproto"),
    ({"ipproto": "tcp", "sport": "90-80", "table": 101}, "above its end"),
    ({"ipproto": "nosuch", "table": 101}, "neither a protocol name"),
    ({"ipproto": "udp", "dport": 65535, "table": 101}, "refuses port 65535"),
])
def test_bad_l4_selectors_fail_clearly_and_change_nothing(ns, sh, run_module, args, message):
    baseline = sh(ns, DUMP)
    result = run_module(ns, "ip_rule", args)
    assert result.get("failed") and result["rc"] != 0 and message in result["msg"], result
    assert sh(ns, DUMP) == baseline
