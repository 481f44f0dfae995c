"""A method playbook stops at its preflight play when an upstream lacks pyroute2 (issue 17, item 8): ansible-playbook
runs the playbook itself against an inventory whose upstream is this machine inside a throwaway network namespace
(connection local), with an interpreter without pyroute2. The refusal names the host and the package, no task of the
plays that change hosts runs (their PLAY headers never come) and the namespace's routes are what they were. The same
inventory with an interpreter that has pyroute2 passes the preflight play and runs the change plays (check mode)."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.playbook
# the first play of each (the preflight play) and the name of its first change play
# every method playbook is site.yml with its method as the default: the upstreams' play comes second
UPSTREAM_PLAY = "Upstream servers route and rewrite their replies as each service's method asks"
PLAYBOOKS = {"ip_transparency": UPSTREAM_PLAY, "dsr_router_nat": UPSTREAM_PLAY, "dsr_origin_nat": UPSTREAM_PLAY}
PREFLIGHT_PLAY = "Check the input of every host before changing any"
ROUTING = "ip -4 -j route show table all; ip -6 -j route show table all; ip -j rule show"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """An interpreter without pyroute2: a venv of this Python, without pip or the system's site-packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import pyroute2"], capture_output=True, check=False).returncode != 0
    return python


@pytest.fixture
def upstream(netns, sh):
    """d0 on the proxy's network 172.16.0.0/24 (the proxy would be .1, the controller .5), no default route."""
    name = netns()
    sh(name, "ip link add d0 type veth peer name p0 && ip link set d0 addrgenmode none && ip link set p0 addrgenmode none"
             " && ip link set d0 up && ip link set p0 up && ip addr add 172.16.0.15/24 dev d0")
    return name


def _run_playbook(ns, tmp_path, playbook, python, check=False):
    inventory = {"all": {"children": {
        # the playbooks refuse an empty proxy group; --limit keeps the run on the upstream
        "proxy": {"hosts": {"proxy-1": {"ansible_connection": "local"}}},
        "upstream": {"hosts": {"upstream-1": {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "upstream_default_route_gateway": "172.16.0.1",
            "upstream_default_route_persist": False,
            "upstream_default_route_controller_address": "172.16.0.5",
            "origin_nat_backend": "nftables",
            # keep the records out of the host's /etc
            "__upstream_default_route_fact_file": str(tmp_path / "facts.d" / "netops_upstream_default_route.fact"),
        }}},
    }}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "local-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote-tmp"))
    cmd = ["ip", "netns", "exec", ns, os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
           "-i", str(tmp_path / "inventory.json"), "--limit", "upstream-1", os.path.join(ROOT, "playbooks", playbook + ".yml")]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def _plays(stdout):
    return re.findall(r"^PLAY \[(.*)\] \*+$", stdout, re.M)


@pytest.mark.parametrize("playbook", sorted(PLAYBOOKS))
def test_an_upstream_without_pyroute2_stops_the_playbook_at_its_preflight_play(upstream, sh, tmp_path, bare_python, playbook):
    before = sh(upstream, ROUTING)
    proc = _run_playbook(upstream, tmp_path, playbook, bare_python)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert _plays(proc.stdout) == [PREFLIGHT_PLAY], output[-4000:]
    refusal = re.search(r"^fatal: \[upstream-1\]: FAILED! => (\{.*\})$", proc.stdout, re.M)
    assert refusal, output[-4000:]
    message = " ".join(json.loads(refusal.group(1))["msg"].split())
    assert message.startswith("upstream-1 lacks what "), message
    assert "cannot import pyroute2" in message and "python3-pyroute2" in message and bare_python in message, message
    assert sh(upstream, ROUTING) == before
    assert not (tmp_path / "facts.d").exists()


# the preflight's pyroute2 check with Debian 12's own pyroute2 (the hosts' package) too
@pytest.mark.compat
def test_the_same_upstream_with_pyroute2_passes_the_preflight_play_in_check_mode(upstream, sh, tmp_path):
    playbook = "ip_transparency"
    before = sh(upstream, ROUTING)
    proc = _run_playbook(upstream, tmp_path, playbook, sys.executable, check=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert _plays(proc.stdout)[:2] == [PREFLIGHT_PLAY, PLAYBOOKS[playbook]], output[-4000:]
    assert re.search(r"^upstream-1\s+: ok=\d+\s+changed=[1-9]", proc.stdout, re.M), output[-2000:]
    assert sh(upstream, ROUTING) == before
