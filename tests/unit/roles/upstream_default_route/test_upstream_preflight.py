"""The upstream_default_route preflight's refusals, run on the controller (no lab): every refusal names the
offending entry of upstream_default_route_client_networks and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GATEWAY = "192.0.2.1"  # on eth9 192.0.2.10/24, the one connected subnet preflight.yml gives every case


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
]

# a refusal names only the offending entries: the good ones of the same list are not in its message
NOT_NAMED = {
    "host-bits": ["198.18.0.0/15", "198.51.100.0/24"],
    "not-a-prefix": ["198.18.0.0/15", "none"],
    "overlap": ["198.18.0.0/15", "is not a prefix"],
    "selectors-bad": ['"port": 80'],
    "selectors-dup": ["udp port 80"],
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, run_preflight):
    # persist false: the boot unit's systemd is a host prerequisite (test_prerequisites.py), not this input's
    return run_preflight(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), CASES,
                         {"upstream_default_route_gateway": GATEWAY, "upstream_default_route_persist": False})


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts):
    assert_refusal(refusals, case, parts, NOT_NAMED.get(case, []))
