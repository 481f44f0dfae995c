"""The upstream_default_route preflight's refusals, run on the controller (no lab): every refusal names the
offending entry of upstream_default_route_client_networks and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
GATEWAY = "192.0.2.1"  # on eth9 192.0.2.10/24, the one connected subnet preflight.yml gives every case


CASES = [
    ("host-bits", {"upstream_default_route_client_networks": ["198.18.0.0/15", "172.20.1.5/16", "198.51.100.0/24"]},
     ["upstream_default_route_client_networks", "172.20.1.5/16", "host bits"]),
    ("not-a-prefix", {"upstream_default_route_client_networks": ["198.18.0.0/15", "clients"]},
     ["upstream_default_route_client_networks", "'clients'", "not a network prefix"]),
    ("overlap", {"upstream_default_route_client_networks": ["198.18.0.0/15", "192.0.2.0/25"]},
     ["192.0.2.0/24 overlaps 192.0.2.0/25", "directly connected"]),
    ("good", {"upstream_default_route_client_networks": ["198.18.0.0/15", "198.51.100.0/24"]}, None),
]

# a refusal names only the offending entries: the good ones of the same list are not in its message
NOT_NAMED = {
    "host-bits": ["198.18.0.0/15", "198.51.100.0/24"],
    "not-a-prefix": ["198.18.0.0/15", "none"],
    "overlap": ["198.18.0.0/15", "is not a prefix"],
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preflight")
    hosts = {}
    for case, variables, _parts in CASES:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "upstream_default_route_gateway": GATEWAY}
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
