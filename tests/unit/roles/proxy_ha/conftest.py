"""The proxy_ha tests' harness: a VRRP pair is two hosts, so every case here is a group of two inventory hosts
(the case's host and its peer) with the case's role variables, and each host's network facts given as
`fake_interfaces`: the lab's proxy1 / proxy2 unless the case says otherwise. One ansible-playbook run for every
case (preflight.yml); the refusals are read as tests/unit/roles/conftest.py reads them."""

import copy
import json
import os
import re
import subprocess
import sys
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))


def iface(device, address, *secondaries):
    """An interface fact as ansible.builtin.setup gathers it (/24 networks, as in the lab)."""
    def entry(addr):
        return {"address": addr, "netmask": "255.255.255.0", "network": addr.rsplit(".", 1)[0] + ".0", "prefix": "24"}
    fact = {"device": device, "type": "ether", "active": True, "ipv4": entry(address)}
    if secondaries:
        fact["ipv4_secondaries"] = [entry(a) for a in secondaries]
    return fact


# The lab's two proxies: public (client) network on eth0, private (upstream) network on eth1, management on eth2.
PROXY1 = [iface("eth0", "192.168.99.11"), iface("eth1", "172.16.0.2"), iface("eth2", "10.250.0.21")]
PROXY2 = [iface("eth0", "192.168.99.12"), iface("eth1", "172.16.0.3"), iface("eth2", "10.250.0.22")]
LAB_VARS = {"proxy_ha_public_vip": "192.168.99.10", "proxy_ha_private_vip": "172.16.0.1"}


def group_name(case):
    return "pair_" + re.sub(r"[^A-Za-z0-9_]", "_", case)


def run_pairs(tmp, pairs, extra_vars=None):
    """``pairs``: [(group, {host: host variables}, group variables)]. Runs preflight.yml over them; returns
    ({host: the messages it failed with}, the run's stdout). Asserts every host ran (the recap names them all)."""
    inventory = {"all": {"children": {}}}
    names = []
    for group, hosts, variables in pairs:
        members = {}
        for host, host_vars in hosts.items():
            members[host] = dict({"ansible_connection": "local", "ansible_python_interpreter": sys.executable}, **host_vars)
            names.append(host)
        inventory["all"]["children"][group] = {"hosts": members, "vars": variables}
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_FORKS="16",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp / "inventory.json"),
            os.path.join(HERE, "preflight.yml")]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(argv, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
    failed = {}
    for match in re.finditer(r"^(?:fatal|failed): \[([^\]]+)\].*? => (\{.*\})$", proc.stdout, re.M):
        message = json.loads(match.group(2)).get("msg", "")
        if message != "One or more items failed":
            failed[match.group(1)] = (failed.get(match.group(1), "") + " " + message).strip()
    recap = set(re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M))
    assert recap == set(names), proc.stdout[-3000:] + proc.stderr[-3000:]
    return failed, proc.stdout


def pair(case, variables=None, this=None, peer=None, hosts=None):
    """A case's group: the case's host (first, with proxy1's facts) and its peer (proxy2's); ``this`` / ``peer``
    override their host variables, ``hosts`` adds more hosts."""
    group_vars = dict(LAB_VARS, proxy_ha_group=group_name(case))
    group_vars.update(variables or {})
    members = {case: dict({"fake_interfaces": copy.deepcopy(PROXY1)}, **(this or {})),
               case + "-peer": dict({"fake_interfaces": copy.deepcopy(PROXY2)}, **(peer or {}))}
    members.update(hosts or {})
    return (group_name(case), members, group_vars)


@pytest.fixture(scope="session")
def harness():
    return types.SimpleNamespace(run_pairs=run_pairs, pair=pair, iface=iface, group_name=group_name,
                                 PROXY1=PROXY1, PROXY2=PROXY2, LAB_VARS=LAB_VARS)
