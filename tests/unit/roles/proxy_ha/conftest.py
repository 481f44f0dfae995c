"""The proxy_ha tests' harness: a VRRP pair is two hosts, so every case here is a group of two inventory hosts
(the case's host and its peer) with the case's role variables, and each host's network facts given as
`fake_interfaces`: the lab's proxy1 / proxy2 unless the case says otherwise. One ansible-playbook run for every
case (preflight.yml), run by tests/unit/roles/conftest.py's run_inventory."""

import copy
import functools
import os
import re
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


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


def run_pairs(run_inventory, tmp, pairs, extra_vars=None):
    """``pairs``: [(group, {host: host variables}, group variables)]. Runs preflight.yml over them (the parent
    conftest's run_inventory); returns ({host: the messages it failed with}, the run's stdout)."""
    inventory = {"all": {"children": {}}}
    for group, hosts, variables in pairs:
        inventory["all"]["children"][group] = {"hosts": hosts, "vars": variables}
    return run_inventory(tmp, os.path.join(HERE, "preflight.yml"), inventory, forks=16, extra_vars=extra_vars)


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
def harness(run_inventory):
    return types.SimpleNamespace(run_pairs=functools.partial(run_pairs, run_inventory), pair=pair, iface=iface, group_name=group_name,
                                 PROXY1=PROXY1, PROXY2=PROXY2, LAB_VARS=LAB_VARS)
