"""The origin_nat preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service entry, value) and the rule it breaks. One ansible-playbook run for every case: each case is
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
def refusals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight")
    hosts = {}
    for case, variables, _parts in CASES:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "origin_nat_state": "absent"}
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
    for other in NOT_NAMED.get(case, []):
        assert other not in message, "%r is not wrong but named in the refusal of %s: %s" % (other, case, message)
