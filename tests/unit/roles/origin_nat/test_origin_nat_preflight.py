"""The origin_nat preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service entry, value) and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]


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
]


# a refusal names only what is wrong: the other variables of a shared check are not in its message
NOT_NAMED = {
    "unknown-backend": ["origin_nat_state", "origin_nat_rp_filter"],
    "unknown-state": ["origin_nat_backend", "origin_nat_rp_filter"],
    "unknown-rp-filter": ["origin_nat_state", "origin_nat_backend"],
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, run_preflight):
    return run_preflight(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), CASES, {"origin_nat_state": "absent"})


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts):
    assert_refusal(refusals, case, parts, NOT_NAMED.get(case, []))
