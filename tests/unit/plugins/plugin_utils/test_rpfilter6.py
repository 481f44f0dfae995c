"""Unit tests of the shared IPv6 reverse-path filtering logic (plugins/plugin_utils/_rpfilter6.py): one copy for the
rpfilter6_rules filter and the troubleshoot role's checks; the fixtures are tests/unit/fixtures/rpfilter6's."""

import os

from ansible_collections.netops.ip_transparency.plugins.filter import network
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _rpfilter6 as rpf6

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "rpfilter6")


def _read(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def test_the_filter_is_the_shared_logic_not_a_copy():
    assert network.rpfilter6_rules is rpf6.rpfilter6_rules
    assert network.FilterModule().filters()["rpfilter6_rules"] is rpf6.rpfilter6_rules


def test_strict_rules_drop_what_arrives_where_the_route_back_does_not_leave():
    rules = rpf6.rpfilter6_rules("", _read("ip6tables-save.txt"))
    # eth1: loose -i eth1, strict ! -i lo, strict (raw) every interface; the route back leaves by eth0
    assert [r["rule"] for r in rpf6.rpfilter6_drops(rules, "eth1", "eth0")] == [
        "-A PREROUTING ! -i lo -m rpfilter --invert -j DROP", "-A PREROUTING -m rpfilter --invert -j DROP"]
    assert rpf6.rpfilter6_drops(rules, "eth1", "eth1") == []
    # no route back: the loose rule drops too
    assert len(rpf6.rpfilter6_drops(rules, "eth1", None, route_error=True)) == 3
    # veth7: the veth+ rule applies there too
    assert "-A PREROUTING -i veth+ -m rpfilter --invert -j DROP" in [r["rule"] for r in rpf6.rpfilter6_drops(rules, "veth7", "eth0")]


def test_interface_limits_and_exceptions_of_nft_rules_are_honoured():
    rules = [r for r in rpf6.rpfilter6_rules(_read("ruleset.json")) if r["table"] == "ip6 v6"]  # iifname "eth3" ... iif ...
    assert rpf6.rpfilter6_drops(rules, "eth3", "eth0") == rules
    assert rpf6.rpfilter6_drops(rules, "eth2", "eth0") == []
    loose = [r for r in rpf6.rpfilter6_rules(_read("ruleset.json")) if r["mode"] == "loose"]  # iifname != { "lo", "eth2" }
    assert rpf6.rpfilter6_drops(loose, "eth1", "eth0") == []
    assert rpf6.rpfilter6_drops(loose, "eth1", None, route_error=True) == loose
    assert rpf6.rpfilter6_drops(loose, "eth2", None, route_error=True) == []
