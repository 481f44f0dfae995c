"""Host prerequisites (issue 17, item 8): each role's preflight refuses a host that lacks what the role runs there -
pyroute2 for the interpreter the modules run with, the nft command - naming the host, what is missing and the Debian
package, before the role changes anything; a host that has them is not refused for them.

A host without pyroute2 is a real interpreter without it (a venv made here, --without-pip, no system site-packages).
A host without nft is this one with its nft hidden: ansible-playbook runs in a private mount namespace where a
non-executable empty file is bind-mounted over the nft binary, so that neither PATH nor the sbin directories have one
(needs root and unshare, as the integration tests need root). That run is in check mode."""

import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PLAYBOOK = os.path.join(HERE, "prerequisites.yml")
# this machine may run without systemd (a container): the roles that need it are then refused for it too
NO_SYSTEMD = {"systemd"} if not os.path.isdir("/run/systemd/system") else set()

SERVICE = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": ["172.16.0.11"]}
ROLE_VARS = {
    "nginx_transparent_proxy": {"nginx_transparent_proxy_state": "present", "nginx_transparent_proxy_services": [SERVICE],
                                "nginx_transparent_proxy_public_address": "192.0.2.10"},
    "upstream_default_route": {"upstream_default_route_state": "present", "upstream_default_route_gateway": "192.0.2.1",
                               "upstream_default_route_persist": False},
    "origin_nat": {"origin_nat_state": "present", "origin_nat_backend": "nftables", "origin_nat_services": [{"port": 53}],
                   "origin_nat_public_address": "198.51.100.10"},
}


def case(role, python, **variables):
    host = {"prerequisites_role": role, "ansible_connection": "local", "ansible_python_interpreter": python}
    host.update(ROLE_VARS[role])
    host.update(variables)
    return host


def run(tmp, hosts, check=False, hide=None):
    """ansible-playbook over ``hosts`` ({name: vars}); with ``hide``, in a mount namespace where that file is not
    executable. Returns {host: outcome}, asserting every host wrote one."""
    (tmp / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}))
    (tmp / "prerequisites_outcomes").mkdir()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_FORKS="8", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "inventory.json", PLAYBOOK,
            "-e", "prerequisites_outcomes=%s" % (tmp / "prerequisites_outcomes")]
    if check:
        argv.append("--check")
    if hide:
        empty = tmp / "not-executable"
        empty.write_text("")
        empty.chmod(0o644)
        argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                'mount --bind "$0" "$1" && shift && exec "$@"', str(empty), hide] + argv
    proc = subprocess.run(argv, env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
    outcomes = {}
    for host in hosts:
        path = tmp / "prerequisites_outcomes" / ("%s.json" % host)
        assert path.exists(), "%s wrote no outcome:\n%s%s" % (host, proc.stdout[-4000:], proc.stderr[-2000:])
        outcomes[host] = json.loads(path.read_text())
    return outcomes


def missing(outcome):
    return set(item["name"] for item in outcome["found"].get("missing", []))


def assert_refused_for(outcome, host, names, packages):
    message = " ".join(outcome["msg"].split())
    assert outcome["refused"], "%s was not refused: %s" % (host, outcome)
    assert missing(outcome) - NO_SYSTEMD == set(names), outcome
    assert message.startswith(host + " lacks what "), message
    assert "nothing was changed" in message, message
    for part in list(names) + list(packages):
        assert part in message, "%r not in the refusal of %s: %s" % (part, host, message)


def assert_not_refused_for_prerequisites(outcome, host):
    assert missing(outcome) <= NO_SYSTEMD, outcome
    if not missing(outcome):
        assert not outcome["refused"], "%s refused: %s" % (host, outcome["msg"])


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """An interpreter without pyroute2: a venv of this Python, without pip or the system's site-packages."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    assert subprocess.run([python, "-c", "import pyroute2"], capture_output=True, check=False).returncode != 0
    assert subprocess.run([sys.executable, "-c", "import pyroute2"], capture_output=True, check=False).returncode == 0
    return python


@pytest.fixture(scope="module")
def without_pyroute2(tmp_path_factory, bare_python):
    hosts = {}
    for role in ROLE_VARS:
        hosts["%s-no-pyroute2" % role] = case(role, bare_python)
        hosts["%s-good" % role] = case(role, sys.executable)
    hosts["nginx_transparent_proxy-absent-no-pyroute2"] = case("nginx_transparent_proxy", bare_python,
                                                               nginx_transparent_proxy_state="absent")
    hosts["origin_nat-absent-no-pyroute2"] = case("origin_nat", bare_python, origin_nat_state="absent")
    return bare_python, run(tmp_path_factory.mktemp("no-pyroute2"), hosts)


@pytest.mark.parametrize("role", sorted(ROLE_VARS))
def test_a_host_without_pyroute2_is_refused_naming_the_host_and_the_package(without_pyroute2, role):
    bare_python, outcomes = without_pyroute2
    host = "%s-no-pyroute2" % role
    assert_refused_for(outcomes[host], host, ["pyroute2"], ["python3-pyroute2", bare_python, "cannot import pyroute2"])


@pytest.mark.parametrize("host", ["nginx_transparent_proxy-absent-no-pyroute2", "origin_nat-absent-no-pyroute2"])
def test_state_absent_needs_pyroute2_too(without_pyroute2, host):
    assert_refused_for(without_pyroute2[1][host], host, ["pyroute2"], ["python3-pyroute2"])


@pytest.mark.parametrize("role", sorted(ROLE_VARS))
def test_the_same_host_with_pyroute2_is_not_refused_for_it(without_pyroute2, role):
    host = "%s-good" % role
    outcome = without_pyroute2[1][host]
    assert outcome["found"]["pyroute2_version"], outcome
    assert_not_refused_for_prerequisites(outcome, host)


def _why_cannot_hide_nft():
    if os.geteuid() != 0:
        return "hiding nft needs root (a private mount namespace)"
    if not shutil.which("unshare") or not shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        return "needs unshare and an nft to hide"
    return None


@pytest.fixture(scope="module")
def without_nft(tmp_path_factory):
    reason = _why_cannot_hide_nft()
    if reason:
        pytest.skip(reason)
    nft = os.path.realpath(shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
    hosts = {
        "nginx_transparent_proxy-no-nft": case("nginx_transparent_proxy", sys.executable),
        "origin_nat-no-nft": case("origin_nat", sys.executable),
        # the upstream's default route needs no nft: the same hidden nft refuses nothing there
        "upstream_default_route-no-nft": case("upstream_default_route", sys.executable),
    }
    return run(tmp_path_factory.mktemp("no-nft"), hosts, check=True, hide=nft)


@pytest.mark.parametrize("role", ["nginx_transparent_proxy", "origin_nat"])
def test_a_host_without_nft_is_refused_in_check_mode_naming_the_host_and_the_package(without_nft, role):
    host = "%s-no-nft" % role
    assert_refused_for(without_nft[host], host, ["nft"], ["nftables", "no nft command"])


def test_a_role_that_runs_no_nft_does_not_refuse_a_host_without_it(without_nft):
    assert_not_refused_for_prerequisites(without_nft["upstream_default_route-no-nft"], "upstream_default_route-no-nft")
