"""The method playbooks on host groups of the user's own names (issue 17, item 7), and the preflight play's checks of
the playbooks' own variables (dsr_services, dsr_public_address), run on the controller without the lab: an inventory
whose proxies and upstreams are in the groups `lb` and `web`, next to decoy groups named `proxy` and `upstream` that
must never be touched. Every host is local; the role preflights refuse them for lack of input, which shows which host
went through which role's checks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
PLAYBOOKS = os.path.join(ROOT, "playbooks")
RENAMED = ["-e", "netops_ipt_proxy_group=lb", "-e", "netops_ipt_upstream_group=web"]
METHODS = ["ip_transparency", "dsr_router_nat", "dsr_origin_nat"]


def _inventory(tmp, all_vars=None, web_vars=None):
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False}
    inventory = {"all": {"vars": dict(local, **(all_vars or {})), "children": {
        "lb": {"hosts": {"lb1": {}}},
        "web": {"hosts": {"web1": dict(web_vars or {})}},
        "proxy": {"hosts": {"decoy_proxy": {}}},
        "upstream": {"hosts": {"decoy_upstream": {}}},
    }}}
    path = tmp / "inventory.json"
    path.write_text(json.dumps(inventory))
    return str(path)


def _ansible_playbook(tmp, inventory, playbooks, *args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_CALLBACK_RESULT_FORMAT="json", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    playbooks = [playbooks] if isinstance(playbooks, str) else playbooks
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory]
    argv += [os.path.join(PLAYBOOKS, playbook + ".yml") for playbook in playbooks] + list(args)
    return subprocess.run(argv, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)


def _plays(listing):
    """{(playbook, play name): [hosts]} from `ansible-playbook --list-hosts` of several playbooks."""
    plays = {}
    for part in re.split(r"^playbook: ", listing, flags=re.M)[1:]:
        playbook = os.path.basename(part.splitlines()[0]).replace(".yml", "")
        for match in re.finditer(r"^  play #\d+ \((?:[^)]*)\): (.*?)\tTAGS: .*?\n    pattern: .*?\n    hosts \(\d+\):\n((?:      \S+\n)*)",
                                 part, re.M):
            plays[(playbook, match.group(1))] = sorted(match.group(2).split())
    return plays


def _failures(out):
    """{host: message} of the hosts that failed, and {task name: [hosts]} of the tasks each host ran (ok/changed/failed)."""
    failed, ran, task = {}, {}, None
    for line in out.splitlines():
        start = re.match(r"^TASK \[(.*)\] \*+$", line)
        if start:
            task = start.group(1)
            continue
        result = re.match(r"^(ok|changed|fatal|failed|included): (?:\[([^\]]+)\]|.* for (.+)$)", line)
        if result and task:
            for host in (result.group(2) or result.group(3)).split(", "):
                ran.setdefault(task, set()).add(host)
        fatal = re.match(r"^(?:fatal|failed): \[([^\]]+)\].*? => (\{.*\})$", line)
        if fatal:
            failed[fatal.group(1)] = " ".join(json.loads(fatal.group(2)).get("msg", "").split())
    return failed, ran


ALL = METHODS + ["teardown", "troubleshoot"]


def test_plays_run_on_the_groups_given_with_extra_vars(tmp_path):
    proc = _ansible_playbook(tmp_path, _inventory(tmp_path), ALL, "--list-hosts", *RENAMED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plays = _plays(proc.stdout)
    print(json.dumps(dict((" / ".join(k), v) for k, v in plays.items()), indent=1))
    assert set(playbook for playbook, _name in plays) == set(ALL), proc.stdout
    for (playbook, name), hosts in plays.items():
        assert hosts in (["lb1"], ["web1"], ["lb1", "web1"]), "%s, %s runs on %s" % (playbook, name, hosts)
    for playbook in ALL:
        assert set(h for (p, _n), hs in plays.items() if p == playbook for h in hs) == {"lb1", "web1"}, playbook


def test_plays_run_on_proxy_and_upstream_by_default(tmp_path):
    proc = _ansible_playbook(tmp_path, _inventory(tmp_path), ALL, "--list-hosts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plays = _plays(proc.stdout)
    assert set(playbook for playbook, _name in plays) == set(ALL), proc.stdout
    for playbook in ALL:
        hosts = set(h for (p, _n), hs in plays.items() if p == playbook for h in hs)
        assert hosts == {"decoy_proxy", "decoy_upstream"}, (playbook, hosts)


def test_each_host_goes_through_its_own_groups_checks(tmp_path):
    """groups[...] in the preflight play follows the names given: lb1 gets the proxy's checks (and is refused for
    lack of services), web1 those of an upstream (refused for lack of a gateway), the decoys nothing."""
    inventory = _inventory(tmp_path)
    proc = _ansible_playbook(tmp_path, inventory, "ip_transparency", *RENAMED)
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert proc.returncode != 0
    assert set(failed) == {"lb1"}, failed
    assert "nginx_transparent_proxy_services must be a non-empty list" in failed["lb1"]
    assert ran.get("Check the host groups") == {"lb1", "web1"}
    assert "decoy_proxy" not in proc.stdout and "decoy_upstream" not in proc.stdout

    proc = _ansible_playbook(tmp_path, inventory, "ip_transparency", *RENAMED + ["--limit", "web1"])
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == {"web1"}, failed
    assert "upstream_default_route_gateway" in failed["web1"]
    assert "Check the proxy's input" not in ran, ran


def test_group_names_set_in_the_inventory_are_refused(tmp_path):
    """A play's hosts: cannot read inventory variables: names set there would reach the tasks but not the host
    lists (the plays would run on the decoys). The preflight play refuses before any role check."""
    inventory = _inventory(tmp_path, all_vars={"netops_ipt_proxy_group": "lb", "netops_ipt_upstream_group": "web"})
    proc = _ansible_playbook(tmp_path, inventory, "dsr_router_nat")
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == {"decoy_proxy", "decoy_upstream"}, failed
    for message in failed.values():
        assert "-e netops_ipt_proxy_group=NAME" in message and "never in the inventory" in message
    assert "Check the proxy's input" not in ran and "Check the upstream's input" not in ran, ran


def _own_address():
    out = subprocess.run(["ip", "-4", "-o", "address", "show", "scope", "global"], capture_output=True, text=True,
                         check=False).stdout
    found = re.findall(r" inet (\d+\.\d+\.\d+\.\d+)/", out)
    return found[0] if found else None


ADDRESS_CASES = {
    "web1": ("203.0.113.300", ["dsr_public_address '203.0.113.300'", "not an IPv4 address"]),
    "web2": ("2001:db8::10", ["dsr_public_address '2001:db8::10'", "not an IPv4 address"]),
    "web3": ("own", ["must be the proxy's public (client-facing) IPv4 address", "it is an address of web3"]),
}


def test_dsr_public_address_is_checked_before_any_change(tmp_path):
    own = _own_address()
    cases = dict((host, (own if value == "own" else value, parts)) for host, (value, parts) in ADDRESS_CASES.items()
                 if value != "own" or own)
    inventory = _inventory(tmp_path)
    data = json.loads(open(inventory).read())
    data["all"]["children"]["web"]["hosts"] = dict((host, {"dsr_public_address": value}) for host, (value, _p) in cases.items())
    data["all"]["children"]["web"]["hosts"]["web4"] = {"dsr_public_address": "203.0.113.10"}
    open(inventory, "w").write(json.dumps(data))
    proc = _ansible_playbook(tmp_path, inventory, "dsr_origin_nat", *RENAMED + ["--limit", "web"])
    failed, ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == set(cases), failed
    for host, (_value, parts) in cases.items():
        for part in parts:
            assert part in failed[host], failed[host]
    assert "web4" in ran["Check dsr_public_address"], "a good address was not checked"
    assert "Check the upstream's variables against the roles' argument specs" not in ran, "refused after the preflight went on"


@pytest.mark.parametrize("playbook", ["dsr_router_nat", "dsr_origin_nat"])
def test_dsr_services_must_be_a_list_of_services(tmp_path, playbook):
    inventory = _inventory(tmp_path, all_vars={"dsr_services": ["dns_udp"]})
    proc = _ansible_playbook(tmp_path, inventory, playbook, *RENAMED)
    failed, _ran = _failures(proc.stdout)
    print(proc.stdout[-3000:])
    assert set(failed) == {"lb1", "web1"}, failed
    assert "dsr_services" in failed["lb1"] and "dict" in failed["lb1"], failed["lb1"]


def test_troubleshoot_role_follows_the_group_names(tmp_path):
    """The troubleshoot role reads the method's variables from the first host of the proxy group: with -e
    netops_ipt_proxy_group=lb that is lb1 (its preflight then misses lb1's VIP), not the decoy of the group `proxy`."""
    playbook = tmp_path / "troubleshoot_groups.yml"
    playbook.write_text(json.dumps([{
        "name": "The troubleshoot role's preflight", "hosts": "{{ netops_ipt_proxy_group }}:{{ netops_ipt_upstream_group }}",
        "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "netops.ip_transparency.troubleshoot", "tasks_from": "preflight.yml"}}],
    }]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_CALLBACK_RESULT_FORMAT="json", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", _inventory(tmp_path), str(playbook)]
    proc = subprocess.run(argv + RENAMED, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          check=False)
    failed, _ran = _failures(proc.stdout)
    print(proc.stdout[-4000:])
    assert set(failed) == {"lb1"}, failed
    assert "nginx_transparent_proxy_public_address on lb1" in failed["lb1"], failed["lb1"]
    assert "decoy" not in proc.stdout
