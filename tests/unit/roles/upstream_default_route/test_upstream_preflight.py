"""The upstream_default_route preflight's refusals, run on the controller (no lab): every refusal names the
offending entry of upstream_default_route_client_networks and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GATEWAY = "192.0.2.1"  # on eth9 192.0.2.10/24, the one connected subnet preflight.yml gives every case
GATEWAY6 = "2001:db8:16::1"  # on eth9 2001:db8:16::10/64
SEL80 = {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}]}


CASES = [
    ("host-bits", {"upstream_default_route_client_networks": ["198.18.0.0/15", "172.20.1.5/16", "198.51.100.0/24"]},
     ["upstream_default_route_client_networks", "172.20.1.5/16", "host bits"]),
    ("not-a-prefix", {"upstream_default_route_client_networks": ["198.18.0.0/15", "clients"]},
     ["upstream_default_route_client_networks", "'clients'", "not a network prefix"]),
    ("overlap", {"upstream_default_route_client_networks": ["198.18.0.0/15", "192.0.2.0/25"]},
     ["192.0.2.0/24 overlaps 192.0.2.0/25", "directly connected"]),
    ("good", {"upstream_default_route_client_networks": ["198.18.0.0/15", "198.51.100.0/24"]}, None),
    # selected traffic (issue 14)
    ("selectors-good", {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}],
                        "upstream_default_route_table": 101}, None),
    ("selectors-main-means-101", {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}]}, None),
    ("selectors-old-kernel", {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}], "fake_kernel": "4.16.18-1-amd64"},
     ["Linux 4.17", "this host runs 4.16.18-1-amd64"]),
    ("selectors-bad", {"upstream_default_route_selectors": [
        {"protocol": "tcp", "port": 80}, {"protocol": "icmp", "port": 1}, {"protocol": "udp", "port": 65535}]},
     ["upstream_default_route_selectors", "icmp", "65535", "tcp or udp"]),
    ("selectors-dup", {"upstream_default_route_selectors": [
        {"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 80}, {"protocol": "tcp", "port": "80"}]},
     ["more than once", "tcp port 80"]),
    ("selectors-reserved-table", {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}], "upstream_default_route_table": "local"},
     ["upstream_default_route_table must be a table number other than", "got local"]),
    ("selectors-priority", {"upstream_default_route_selectors": [{"protocol": "tcp", "port": 80}], "upstream_default_route_rule_priority": 40000},
     ["upstream_default_route_rule_priority must be 1-32765"]),
    # IPv6 (issue 16): upstream_default_route_gateway6 next to, or instead of, the IPv4 gateway
    ("dual-good", {"upstream_default_route_gateway6": GATEWAY6}, None),
    ("ipv6-only-good", {"upstream_default_route_gateway": "", "upstream_default_route_gateway6": GATEWAY6}, None),
    ("dual-selectors-good", dict(SEL80, upstream_default_route_gateway6=GATEWAY6), None),
    ("dual-device-good", {"upstream_default_route_gateway6": GATEWAY6, "upstream_default_route_device": "eth9"}, None),
    ("no-gateway", {"upstream_default_route_gateway": ""},
     ["upstream_default_route_gateway is required", "upstream_default_route_gateway6 for IPv6", "got ''"]),
    ("gateway-is-ipv6", {"upstream_default_route_gateway": GATEWAY6},
     ["upstream_default_route_gateway '2001:db8:16::1' is IPv6", "goes in upstream_default_route_gateway6"]),
    ("gateway6-not-ipv6", {"upstream_default_route_gateway6": "192.0.2.1"},
     ["upstream_default_route_gateway6 must be an IPv6 address", "got '192.0.2.1'"]),
    ("gateway6-not-an-address", {"upstream_default_route_gateway6": "2001:db8:16::zz"},
     ["upstream_default_route_gateway6 must be an IPv6 address", "got '2001:db8:16::zz'"]),
    ("gateway6-link-local", {"upstream_default_route_gateway6": "fe80::1"},
     ["upstream_default_route_gateway6 fe80::1 is link-local", "zone"]),
    ("gateway6-not-connected", {"upstream_default_route_gateway6": "2001:db8:99::1"},
     ["The gateway 2001:db8:99::1 (upstream_default_route_gateway6)", "directly connected", "Connected (IPv6): eth9 2001:db8:16::10/64."]),
    ("gateway6-own-address", {"upstream_default_route_gateway6": "2001:db8:16:0::10"},
     ["The gateway 2001:db8:16:0::10 (upstream_default_route_gateway6)", "not one of this host's own addresses"]),
    ("gateway6-unknown-device", {"upstream_default_route_gateway6": GATEWAY6, "upstream_default_route_device": "eth7"},
     ["upstream_default_route_device eth7 does not exist", "upstream_default_route_gateway6 2001:db8:16::1: eth9"]),
    ("ipv6-client-network-connected", {"upstream_default_route_gateway6": GATEWAY6,
                                       "upstream_default_route_client_networks": ["198.18.0.0/15", "2001:db8:16::/48"]},
     ["2001:db8:16::/64 overlaps 2001:db8:16::/48", "directly connected"]),
]

# a refusal names only the offending entries: the good ones of the same list are not in its message
NOT_NAMED = {
    "host-bits": ["198.18.0.0/15", "198.51.100.0/24"],
    "not-a-prefix": ["198.18.0.0/15", "none"],
    "overlap": ["198.18.0.0/15", "is not a prefix"],
    "selectors-bad": ['"port": 80'],
    "selectors-dup": ["udp port 80"],
    # the IPv4 gateway is fine: not named, nor the IPv4 subnets in an IPv6 refusal
    "gateway6-not-connected": ["upstream_default_route_gateway)", "192.0.2.10/24", "fe80::10"],
    "ipv6-client-network-connected": ["198.18.0.0/15"],
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, run_preflight):
    # persist false: the boot unit's systemd is a host prerequisite (test_prerequisites.py), not this input's
    return run_preflight(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), CASES,
                         {"upstream_default_route_gateway": GATEWAY, "upstream_default_route_persist": False})


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts):
    assert_refusal(refusals, case, parts, NOT_NAMED.get(case, []))
