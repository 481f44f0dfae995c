"""The origin_nat preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service entry, value) and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import json
import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]

# IPv6 (issue 16): an upstream with eth9 towards the clients (both default routes; 192.0.2.11, 2001:db8:16::11) and
# eth8 facing the proxy (10.8.0.11, fd00:8::11), as preflight.yml's fake_network gives it.
V6 = {"fake_network": True, "origin_nat_state": "present", "origin_nat_persist": False, "origin_nat_backend": "nftables",
      "origin_nat_public_address": "198.51.100.10", "origin_nat_public_address6": "2001:db8:99::10"}


def _nft_rule(*exprs, **where):
    rule = {"family": where.get("family", "inet"), "table": where.get("table", "firewalld"),
            "chain": where.get("chain", "filter_PREROUTING"), "handle": 9, "expr": list(exprs)}
    return {"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"rule": rule}]}


def _fib(*flags):
    return {"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": list(flags)}}, "right": False}}


def _iifname(name):
    return {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": name}}


IPV6_ONLY = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}
DROP = {"drop": None}
# firewalld's IPv6_rpfilter=yes (nftables backend) and its loose variant
STRICT_NFT = _nft_rule(IPV6_ONLY, _fib("saddr", "mark", "iif"), DROP)
STRICT_ETH9_NFT = _nft_rule(_iifname("eth9"), _fib("saddr", "iif"), DROP, family="ip6", table="rpf", chain="pre")
LOOSE_NFT = _nft_rule(IPV6_ONLY, _fib("saddr", "mark"), DROP)
STRICT_IP6T = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter --invert -j DROP\nCOMMIT\n"
LOOSE_IP6T = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter --loose --invert -j DROP\nCOMMIT\n"


CASES = [
    ("port-out-of-range", {"origin_nat_services": [{"port": 53}, {"port": 70000}]},
     ["origin_nat_services[1]", "port 70000", "1..65535"]),
    ("tcp-service", {"origin_nat_services": [{"port": 80, "protocol": "tcp"}]},
     ["origin_nat_services[0]", "protocol \"tcp\" must be udp"]),
    ("port-twice", {"origin_nat_services": [{"port": 53}, {"port": 5353}, {"port": 53}]},
     ["port 53 2 times"]),
    ("exclude-host-bits", {"origin_nat_state": "present", "origin_nat_services": [{"port": 53}],
                           "origin_nat_exclude_destinations": ["172.16.0.1", "172.16.0.1/24"]},
     ["origin_nat_exclude_destinations[1] '172.16.0.1/24'", "host bits"]),
    ("unknown-backend", {"origin_nat_backend": "iptables"}, ["origin_nat_backend", "got iptables"]),
    ("unknown-state", {"origin_nat_state": "enabled"}, ["origin_nat_state", "got enabled"]),
    ("unknown-rp-filter", {"origin_nat_rp_filter": "strictest"}, ["origin_nat_rp_filter", "got 'strictest'"]),
    ("good", {"origin_nat_services": [{"port": 53}, {"port": 5353, "protocol": "udp"}]}, None),
    # IPv6 (issue 16)
    ("v4-only-on-the-fake-network", dict(V6, origin_nat_public_address6=""), None),
    ("v6-dual", V6, None),
    ("v6-only", dict(V6, origin_nat_public_address=""), None),
    ("v6-neither-address", dict(V6, origin_nat_public_address="", origin_nat_public_address6=""),
     ["origin_nat_public_address ''", "is not an IPv4 address"]),
    ("v6-tc-backend", dict(V6, origin_nat_backend="tc"),
     ["origin_nat_backend tc cannot rewrite IPv6 replies", "'2001:db8:99::10'", "IPv4-only", "nftables"]),
    ("v6-public-not-ipv6", dict(V6, origin_nat_public_address6="198.51.100.10"),
     ["origin_nat_public_address6 '198.51.100.10' is not an IPv6 address"]),
    ("v6-public-is-this-host", dict(V6, origin_nat_public_address6="2001:db8:16:0::11"),
     ["origin_nat_public_address6 '2001:db8:16:0::11' is an address of this host"]),
    ("v6-no-default-route", dict(V6, fake_default_ipv6={}),
     ["IPv6 egress interface", "origin_nat_address6", "Found interface ''", "eth8 fd00:8::11", "eth9 2001:db8:16::11"]),
    ("v6-address-given", dict(V6, origin_nat_address6="fd00:8:0::11"), None),
    # the one rule for an interface's IPv6 address (filter public_ipv6): global scope only, never a guess among several
    ("v6-several-addresses", dict(V6, fake_eth9_ipv6=[{"address": "2001:db8:16::5", "prefix": "64", "scope": "global"}]),
     ["eth9 has several global IPv6 addresses (2001:db8:16::5, 2001:db8:16::11)", "does not guess", "set origin_nat_address6"]),
    ("v6-several-addresses-one-given", dict(V6, origin_nat_address6="2001:db8:16::0:5",
                                            fake_eth9_ipv6=[{"address": "2001:db8:16::5", "prefix": "64", "scope": "global"}]), None),
    ("v6-host-scope-is-no-candidate", dict(V6, fake_eth9_ipv6=[{"address": "2001:db8:16::6", "prefix": "128", "scope": "host"}]), None),
    ("v6-address-not-this-hosts", dict(V6, origin_nat_address6="fd00:9::11"),
     ["IPv6 egress interface", "address 'fd00:9::11'"]),
    ("v6-address-link-local", dict(V6, origin_nat_address6="fe80::11"), ["IPv6 egress interface", "address 'fe80::11'"]),
    ("v6-rp-interface-unknown", dict(V6, origin_nat_rp_filter="", origin_nat_rp_filter_interfaces=["eth7"]),
     ["origin_nat_rp_filter_interfaces", "does not have: eth7"]),
    # IPv6 reverse-path filtering: refused only when strict where the requests arrive and the route back is elsewhere
    ("v6-rpf-strict-same-interface", dict(V6, fake_nft=STRICT_NFT, fake_ip6tables_save=STRICT_IP6T), None),
    ("v6-rpf-strict-nft-elsewhere", dict(V6, fake_nft=STRICT_NFT, origin_nat_rp_filter_interfaces=["eth8"]),
     ["Strict IPv6 reverse-path filtering drops the proxy's IPv6 requests", "leaves by eth9",
      "nftables inet firewalld filter_PREROUTING 'fib saddr . mark . iif oif missing drop' (requests on eth8)",
      "does not change firewall rules"]),
    ("v6-rpf-strict-ip6tables-elsewhere", dict(V6, fake_ip6tables_save=STRICT_IP6T, origin_nat_rp_filter_interfaces=["eth8", "eth9"]),
     ["ip6tables raw PREROUTING '-A PREROUTING -m rpfilter --invert -j DROP' (requests on eth8)"]),
    ("v6-rpf-loose-elsewhere", dict(V6, fake_nft=LOOSE_NFT, fake_ip6tables_save=LOOSE_IP6T, origin_nat_rp_filter_interfaces=["eth8"]),
     None),
    ("v6-rpf-strict-on-another-interface", dict(V6, fake_nft=STRICT_ETH9_NFT, origin_nat_rp_filter_interfaces=["eth8"]), None),
    # IPv4 only: the IPv6 rules are not read, nor refused
    ("v4-rpf6-not-read", dict(V6, origin_nat_public_address6="", fake_nft=STRICT_NFT, origin_nat_rp_filter_interfaces=["eth8"]), None),
]


# a refusal names only what is wrong: the other variables of a shared check are not in its message
NOT_NAMED = {
    "unknown-backend": ["origin_nat_state", "origin_nat_rp_filter"],
    "unknown-state": ["origin_nat_backend", "origin_nat_rp_filter"],
    "unknown-rp-filter": ["origin_nat_state", "origin_nat_backend"],
    "v6-rpf-strict-ip6tables-elsewhere": ["eth8, eth9", "(requests on eth9)"],
}

# What the preflight derives for the IPv6 cases it accepts: IPv4/IPv6 on, the interface and address of each
# family, and the IPv6 reverse-path filters that apply where the requests arrive.
DERIVED = {
    "v4-only-on-the-fake-network": {"v4": True, "if": "eth9", "addr": "192.0.2.11", "v6": False},
    "v6-dual": {"v4": True, "if": "eth9", "addr": "192.0.2.11", "v6": True, "if6": "eth9", "addr6": "2001:db8:16::11", "rpf6": []},
    "v6-only": {"v4": False, "v6": True, "if6": "eth9", "addr6": "2001:db8:16::11"},
    # the address's interface and its canonical spelling
    "v6-address-given": {"if6": "eth8", "addr6": "fd00:8::11"},
    "v6-several-addresses-one-given": {"if6": "eth9", "addr6": "2001:db8:16::5"},
    "v6-host-scope-is-no-candidate": {"if6": "eth9", "addr6": "2001:db8:16::11"},
    "v6-rpf-strict-same-interface": {"rpf6": ["fib saddr . mark . iif oif missing drop", "-A PREROUTING -m rpfilter --invert -j DROP"]},
    "v6-rpf-loose-elsewhere": {"rpf6": ["fib saddr . mark oif missing drop", "-A PREROUTING -m rpfilter --loose --invert -j DROP"]},
    "v6-rpf-strict-on-another-interface": {"rpf6": []},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, run_inventory):
    hosts = {case: dict({"origin_nat_state": "absent"}, **variables) for case, variables, _parts in CASES}
    return run_inventory(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), {"all": {"hosts": hosts}})


@pytest.fixture(scope="module")
def refusals(run):
    return run[0]


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts):
    assert_refusal(refusals, case, parts, NOT_NAMED.get(case, []))


@pytest.mark.parametrize("case", sorted(DERIVED))
def test_derived_interfaces_addresses_and_ipv6_reverse_path_filters(run, case):
    found = re.search(r'^ok: \[%s\] => \{\n\s*"msg": ("DERIVED .*")\n\}$' % re.escape(case), run[1], re.M)
    assert found, run[1][-3000:]
    derived = json.loads(json.loads(found.group(1))[len("DERIVED "):])
    assert dict((key, derived[key]) for key in DERIVED[case]) == DERIVED[case]


def test_strict_ipv6_reverse_path_filtering_that_passes_is_said_in_one_line(run):
    found = re.findall(r'^ok: \[v6-rpf-strict-same-interface\] => \{\n\s*"msg": ("IPv6 reverse-path filtering.*")\n\}$', run[1], re.M)
    assert [json.loads(line) for line in found] == [
        "IPv6 reverse-path filtering on eth9, passed by the proxy's requests (the route back leaves by eth9): strict nftables fib"
        " saddr . mark . iif oif missing drop; strict ip6tables -A PREROUTING -m rpfilter --invert -j DROP."]
