"""The harness the role preflight tests share: one ansible-playbook run on the controller for every case (each
case an inventory host with its own role variables), and the check that a refusal names the item and the rule."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def _run_inventory(tmp, playbook, inventory, forks=8, extra_vars=None):
    """Run ``playbook`` on the controller over ``inventory`` (a dict as `ansible-inventory --list` reads it; every host
    is made local, with this Python); returns ({host: the messages it failed with}, the run's stdout), and asserts
    every host ran (the recap names them all)."""
    inventory = dict(inventory, all=dict(inventory["all"], vars=dict(
        inventory["all"].get("vars", {}), ansible_connection="local", ansible_python_interpreter=sys.executable)))
    hosts = set()
    groups = [inventory["all"]]
    while groups:
        group = groups.pop()
        hosts.update(group.get("hosts", {}))
        groups.extend(group.get("children", {}).values())
    (tmp / "inventory.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_FORKS=str(forks),
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp / "inventory.json"), playbook]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(argv, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
    failed = {}
    # a plain task: `fatal: [host]: FAILED! => {...}`; a loop: `failed: [host] (item=...) => {...}` per item
    for match in re.finditer(r"^(?:fatal|failed): \[([^\]]+)\].*? => (\{.*\})$", proc.stdout, re.M):
        message = json.loads(match.group(2)).get("msg", "")
        if message != "One or more items failed":
            failed[match.group(1)] = (failed.get(match.group(1), "") + " " + message).strip()
    recap = set(re.findall(r"^(\S+)\s+: ok=", proc.stdout, re.M))
    assert recap == hosts, proc.stdout[-3000:] + proc.stderr[-3000:]
    return failed, proc.stdout


def _run_preflight(tmp, playbook, cases, base):
    """Run ``playbook`` over one local host per case (``base`` updated with the case's variables); returns
    {host: the messages it failed with}."""
    hosts = {case: dict(base, **variables) for case, variables, _parts in cases}
    return _run_inventory(tmp, playbook, {"all": {"hosts": hosts}})[0]


def _assert_refusal(refusals, case, parts, not_named=()):
    """``parts`` None: the case must pass; else its refusal holds every part and none of ``not_named``."""
    if parts is None:
        assert case not in refusals, "good input refused: %s" % refusals[case]
        return
    assert case in refusals, "accepted: %s" % case
    message = " ".join(refusals[case].split())
    for part in parts:
        assert part in message, "%r not in the refusal of %s: %s" % (part, case, message)
    for other in not_named:
        assert other not in message, "%r is not wrong but named in the refusal of %s: %s" % (other, case, message)


@pytest.fixture(scope="session")
def run_inventory():
    return _run_inventory


@pytest.fixture(scope="session")
def run_preflight():
    return _run_preflight


@pytest.fixture(scope="session")
def assert_refusal():
    return _assert_refusal
