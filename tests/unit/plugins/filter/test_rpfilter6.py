"""Unit tests of rpfilter6_rules (plugins/filter/network.py), IPv6 reverse-path filtering found in a host's rules.

The fixtures are what nft 1.0.6 and ip6tables 1.8.9 (nf_tables) print, made by tests/unit/fixtures/rpfilter6/capture.sh
in throwaway network namespaces: ruleset.json is `nft -j list ruleset` after `nft -f ruleset.nft`; ip6tables-save.txt
and ip6tables-nft.json are ip6tables-save and `nft -j list ruleset` after the ip6tables commands of capture.sh.
"""

import json
import os

from ansible_collections.netops.ip_transparency.plugins.filter import network as f

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "rpfilter6")


def _read(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def _short(findings):
    return [(x["source"], x["mode"], x["table"], x["rule"]) for x in findings]


def test_nft_rules_ipv6_packets_meet_strict_with_iif_loose_without():
    got = f.rpfilter6_rules(_read("ruleset.json"), "")
    assert _short(got) == [
        ("nftables", "strict", "inet fw", "fib saddr . mark . iif oif missing drop"),  # firewalld's, meta nfproto ipv6
        ("nftables", "strict", "inet fw", 'iifname "eth1" fib saddr . iif oif missing drop'),
        ("nftables", "loose", "inet fw", 'iifname != { "lo", "eth2" } fib saddr oif missing drop'),
        ("nftables", "strict", "inet fw", "fib saddr . iif oif missing drop"),  # the older spelling `oif 0`
        ("nftables", "strict", "inet fw", "fib saddr . iif oif missing reject"),
        ("nftables", "strict", "inet fw", 'iifname { "eth4", "eth5" } fib saddr . iif oif missing drop'),
        ("nftables", "strict", "ip6 v6", 'iifname "eth3" fib saddr . iif oif missing drop'),
    ]
    # left out: meta nfproto ipv4, an `ip saddr` match, the whole `table ip`, and `fib daddr type local accept`
    assert [x["chain"] for x in got] == ["pre"] * 6 + ["c"]
    assert got[2]["interfaces"] == [] and got[2]["except_interfaces"] == ["lo", "eth2"]
    assert got[5]["interfaces"] == ["eth4", "eth5"]


def test_parsed_json_is_taken_too_and_bad_input_finds_nothing():
    assert f.rpfilter6_rules(json.loads(_read("ruleset.json"))) == f.rpfilter6_rules(_read("ruleset.json"))
    for nothing in ("", "nft: command not found", "{}", '{"nftables": 3}', None, {"nftables": [{"rule": {"expr": 1}}]}):
        assert f.rpfilter6_rules(nothing, "") == []
    # a missing verdict is no filter: the rule only counts what fails the check
    counted = {"nftables": [{"rule": {"family": "ip6", "table": "t", "chain": "c", "expr": [
        {"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, "right": False}},
        {"counter": {"packets": 0, "bytes": 0}}]}}]}
    assert f.rpfilter6_rules(counted) == []


def test_ip6tables_rpfilter_rules_that_drop():
    got = f.rpfilter6_rules("", _read("ip6tables-save.txt"))
    assert [(x["mode"], x["table"], x["chain"], x["interfaces"], x["except_interfaces"]) for x in got] == [
        ("loose", "mangle", "PREROUTING", ["eth1"], []),
        ("strict", "mangle", "PREROUTING", [], ["lo"]),
        ("strict", "mangle", "PREROUTING", ["veth*"], []),
        ("strict", "raw", "PREROUTING", [], []),
    ]
    # `-m rpfilter -j ACCEPT` drops nothing itself; the rule text is the line ip6tables-save prints
    assert got[3]["rule"] == "-A PREROUTING -m rpfilter --invert -j DROP"


def test_rules_ip6tables_nft_wrote_are_read_once():
    """ip6tables (nf_tables) rules show up in nft as an xt match, without --loose: they are read from ip6tables-save."""
    assert "rpfilter" in _read("ip6tables-nft.json")
    both = f.rpfilter6_rules(_read("ip6tables-nft.json"), _read("ip6tables-save.txt"))
    assert [x["source"] for x in both] == ["ip6tables"] * 4


def test_interfaces_keep_the_rules_that_apply_to_them():
    got = f.rpfilter6_rules(_read("ruleset.json"), _read("ip6tables-save.txt"), interfaces=["eth1", "lo", "veth7"])
    assert [(x["rule"], x["applies_to"]) for x in got] == [
        ("fib saddr . mark . iif oif missing drop", ["eth1", "lo", "veth7"]),
        ('iifname "eth1" fib saddr . iif oif missing drop', ["eth1"]),
        ('iifname != { "lo", "eth2" } fib saddr oif missing drop', ["eth1", "veth7"]),
        ("fib saddr . iif oif missing drop", ["eth1", "lo", "veth7"]),
        ("fib saddr . iif oif missing reject", ["eth1", "lo", "veth7"]),
        ("-A PREROUTING -i eth1 -m rpfilter --loose --validmark --invert -j DROP", ["eth1"]),
        ("-A PREROUTING ! -i lo -m rpfilter --invert -j DROP", ["eth1", "veth7"]),
        ("-A PREROUTING -i veth+ -m rpfilter --invert -j DROP", ["veth7"]),
        ("-A PREROUTING -m rpfilter --invert -j DROP", ["eth1", "lo", "veth7"]),
    ]
    assert f.rpfilter6_rules(_read("ruleset.json"), "", interfaces="eth3") == [
        dict(x, applies_to=["eth3"]) for x in f.rpfilter6_rules(_read("ruleset.json"))
        if x["rule"] != 'iifname "eth1" fib saddr . iif oif missing drop' and "eth4" not in x["rule"]]
