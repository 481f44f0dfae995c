"""The nginx_transparent_proxy preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service, value) and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
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
def refusals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight")
    hosts = {}
    for case, variables, _parts in CASES:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "nginx_transparent_proxy_state": "absent"}
        host.update(variables)
        hosts[case] = host
    inventory = tmp / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_FORKS="8",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
            os.path.join(HERE, "preflight.yml")]
    proc = subprocess.run(argv, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
    failed = {}
    # a plain task: `fatal: [host]: FAILED! => {...}`; a loop: `failed: [host] (item=...) => {...}` per item
    for match in re.finditer(r"^(?:fatal|failed): \[([^\]]+)\].*? => (\{.*\})$", proc.stdout, re.M):
        message = json.loads(match.group(2)).get("msg", "")
        if message != "One or more items failed":
            failed[match.group(1)] = (failed.get(match.group(1), "") + " " + message).strip()
    recap = set(re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M))
    assert recap == set(hosts), proc.stdout[-3000:] + proc.stderr[-3000:]
    return failed


@pytest.mark.parametrize("case,parts", [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, case, parts):
    if parts is None:
        assert case not in refusals, "good input refused: %s" % refusals[case]
        return
    assert case in refusals, "accepted: %s" % case
    message = " ".join(refusals[case].split())
    for part in parts:
        assert part in message, "%r not in the refusal of %s: %s" % (part, case, message)
