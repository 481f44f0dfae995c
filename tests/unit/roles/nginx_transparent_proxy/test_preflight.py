"""The nginx_transparent_proxy preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service, value) and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]


def svc(**extra):
    service = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": UPSTREAMS}
    service.update(extra)
    return service


# (case, role variables, parts the refusal must contain). state absent skips the checks that need the lab's
# interfaces, so that each case is refused by the check it is about or passes.
CASES = [
    ("dsr-udp-upstream-port-differs", {"nginx_transparent_proxy_method": "dsr_router_nat",
                                       "nginx_transparent_proxy_services": [
                                           svc(), svc(name="dns_alt", port=54, upstream_port=5353, health_check={"type": "dns"})]},
     ["Service dns_alt", "upstream_port 5353", "port 54", "upstream_port must equal"]),
    ("dsr-origin-udp-upstream-port-differs", {"nginx_transparent_proxy_method": "dsr_origin_nat",
                                              "nginx_transparent_proxy_services": [svc(name="dns_alt", upstream_port=5353, health_check={"type": "dns"})]},
     ["Service dns_alt", "upstream_port 5353", "dsr_origin_nat"]),
    ("dsr-tcp-service", {"nginx_transparent_proxy_method": "dsr_router_nat",
                         "nginx_transparent_proxy_services": [svc(), svc(name="web", protocol="tcp", port=80)]},
     ["Service web", "protocol tcp", "works for UDP only"]),
    ("service-port-out-of-range", {"nginx_transparent_proxy_services": [svc(name="big", port=70000)]},
     ["Service big", "port 70000", "1..65535"]),
    ("service-bad-name", {"nginx_transparent_proxy_services": [svc(name="dns-udp")]},
     ["Service dns-udp", "name", "[A-Za-z0-9_]+"]),
    ("udp-http-service", {"nginx_transparent_proxy_services": [svc(name="weird", http=True)]},
     ["Service weird", "http: true", "protocol tcp"]),
    ("duplicate-service-names", {"nginx_transparent_proxy_services": [svc(), svc(port=54, health_check={"type": "dns"})]},
     ["dns_udp", "more than once"]),
    ("duplicate-listen-ports", {"nginx_transparent_proxy_services": [svc(), svc(name="other")]},
     ["udp/53", "dns_udp", "other"]),
    ("ipv6-upstream", {"nginx_transparent_proxy_services": [svc(upstreams=["172.16.0.11", "2001:db8::11"])]},
     ["Service dns_udp", "2001:db8::11", "IPv4"]),
    ("health-timeout-not-below-interval", {"nginx_transparent_proxy_services": [
        svc(health_check={"interval": 1, "timeout": 1})]},
     ["Service dns_udp", "timeout 1", "below interval 1"]),
    ("udp-without-probe", {"nginx_transparent_proxy_services": [svc(name="ntp", port=123)]},
     ["Service ntp", "no default"]),
    ("client-network-host-bits", {"nginx_transparent_proxy_client_networks": ["10.0.0.0/8", "10.20.30.40/8"]},
     ["10.20.30.40/8", "host bits"]),
    ("route-table-main", {"nginx_transparent_proxy_route_table": 254},
     ["nginx_transparent_proxy_route_table 254", "254 main"]),
    ("fwmark-zero", {"nginx_transparent_proxy_fwmark": 0},
     ["nginx_transparent_proxy_fwmark 0", "1..4294967295"]),
    ("unknown-method", {"nginx_transparent_proxy_method": "dsr_magic"},
     ["dsr_magic", "must be one of"]),
    ("no-udp-service-for-dsr", {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_state": "present",
                                "nginx_transparent_proxy_services": []},
     ["nginx_transparent_proxy_services", "non-empty"]),
    ("good-dsr", {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_services": [svc()]}, None),
    ("good-ip-transparency", {"nginx_transparent_proxy_services": [svc(), svc(name="web", protocol="tcp", port=80, http=True)]},
     None),
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, run_preflight):
    return run_preflight(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), CASES, {"nginx_transparent_proxy_state": "absent"})


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts):
    assert_refusal(refusals, case, parts)
