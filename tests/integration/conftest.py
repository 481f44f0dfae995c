"""Real-kernel tests: each module runs as Ansible runs it (the module file, its JSON
arguments, its JSON answer), inside a throwaway network namespace.

Fixtures:
- ``netns``: a factory; ``netns()`` makes a namespace with ``lo`` up and removes it after the test.
- ``run_module``: ``run_module(ns, "ip_rule", {...}, check=False, diff=True)`` -> the result dict.
- ``sh``: ``sh(ns, "ip rule show")`` runs a command in a namespace and returns its stdout.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")
MODULES = os.path.join(ROOT, "plugins", "modules")


def _why_no_netns():
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip"):
        return "needs iproute2's ip command"
    if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "netops", "ip_transparency")):
        return "needs the collection link under .collections (run `make venv`)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _why_no_netns()
    if reason is None:
        return
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))


def _exec(ns, argv, check=True, input_text=None):
    cmd = ["ip", "netns", "exec", ns] + list(argv) if ns else list(argv)
    proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(cmd), proc.returncode, proc.stdout, proc.stderr))
    return proc


@pytest.fixture
def netns():
    made = []

    def make():
        name = "ipt-%s" % uuid.uuid4().hex[:10]
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        _exec(name, ["ip", "link", "set", "lo", "up"])
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def sh():
    def run(ns, command, check=True):
        return _exec(ns, ["sh", "-c", command], check=check).stdout

    return run


@pytest.fixture
def run_module(tmp_path):
    """Run plugins/modules/<name>.py in namespace ``ns`` with Ansible's calling convention."""

    def run(ns, name, args, check=False, diff=True):
        payload = dict(args)
        payload["_ansible_check_mode"] = check
        payload["_ansible_diff"] = diff
        payload["_ansible_tmpdir"] = tempfile.mkdtemp(dir=str(tmp_path))
        argfile = tmp_path / ("args-%s.json" % uuid.uuid4().hex[:8])
        argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
        env = dict(os.environ, PYTHONPATH=COLLECTIONS)
        cmd = [sys.executable, os.path.join(MODULES, name + ".py"), str(argfile)]
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("module %s printed no JSON (rc %d):\n%s\n%s" % (name, proc.returncode, proc.stdout, proc.stderr))
        result["rc"] = proc.returncode
        return result

    return run
