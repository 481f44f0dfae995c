"""No lockout (issue 6), proven over real SSH on the lab's separate management network.

Changing an upstream's default route must not cut the management path the controller uses to reach it.
The controller (this machine, 10.250.0.254 on ipt-mgmt, lab/topology.yml) runs the playbooks through
inventories/lab-ssh with SSH connection sharing off (ControlMaster=no): every task opens a new SSH
connection, so a task that runs on an upstream after its default route moved to the proxy proves that the
management path survived the change. Runs after test_operations.py (pytest takes the files in alphabetical
order), whose last test returns the lab to its baseline:

 1. baseline dumps; sshd listens on the management address only, root by key only;
 2. the controller reachable only via the default route (upstream_default_route_controller_address outside
    every connected network): refused before any change with the no-lockout message, dumps unchanged;
 3. Method 1 over SSH: the play goes on after the route change on every upstream, the upstreams' default
    route is via the proxy, their SSH sessions come from the controller's management address, the method
    works from the client;
 4. a second run over SSH connects to every host and changes nothing;
 5. teardown over SSH: every host's dump equals the baseline.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402
import labdump  # noqa: E402
from labplay import ROOT, play  # noqa: E402

testinfra_hosts = ["docker://ipt-client"]

INVENTORY = "inventories/lab-ssh"
# A new SSH connection for every task: no multiplexed session that could outlive a cut path.
SSH_ENV = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPersist=no -o ConnectTimeout=10"}
KEY = os.path.join(ROOT, "lab", ".state", "ssh", "id_ed25519")
CONTROLLER = "10.250.0.254"
MANAGEMENT = {
    "lb": "10.250.0.10",
    "upstream1": "10.250.0.11",
    "upstream2": "10.250.0.12",
    "upstream3": "10.250.0.13",
    "upstream4": "10.250.0.14",
}
PROXY_PRIVATE = "172.16.0.1"
ROUTER = "172.16.0.253"
ROUTE_TASK = "upstream_default_route : Route the default traffic via the proxy"
AFTER_ROUTE_TASK = "upstream_default_route : Enable the boot unit"
RESULT = re.compile(r"^(ok|changed|skipping|failed|fatal): \[([^\]]+)\]", re.M)
LOGIN = "Accepted publickey for root from %s" % CONTROLLER

STATE = {}


def ssh_play(name, *extra_vars, shared=False):
    """A playbook over SSH; ``shared``: with Ansible's usual connection sharing (ControlPersist), quicker."""
    return play(name, *extra_vars, inventory=INVENTORY, env=None if shared else SSH_ENV)


def ssh(name, command):
    """Run ``command`` on a lab host over SSH from the controller (a new connection), return stdout."""
    proc = subprocess.run(
        ["ssh", "-i", KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "root@%s" % MANAGEMENT[name], command],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, "ssh to %s (%s) failed: %s" % (name, MANAGEMENT[name], proc.stderr)
    return proc.stdout.strip()


def task_results(out, task):
    """{host: status} of the task whose header holds ``task``, in a default-callback output."""
    results = {}
    for block in re.split(r"^(?=TASK \[|RUNNING HANDLER \[|PLAY \[|PLAY RECAP)", out, flags=re.M):
        header = block.split("\n", 1)[0]
        if header.startswith("TASK [") and task in header:
            results.update({m.group(2): m.group(1) for m in RESULT.finditer(block)})
    return results


def logins():
    """Number of SSH logins from the controller each upstream's sshd logged so far."""
    return {up: int(labcheck.lab_host(up).check_output(
        "journalctl -u ssh --no-pager -o cat | grep -c '%s' || true" % LOGIN)) for up in labcheck.UPSTREAMS}


def test_baseline_and_sshd_on_the_management_address_only():
    STATE["baseline"] = labdump.dump_all()
    assert "lookup 100" not in STATE["baseline"]["lb"], "the lab is not in its baseline: a method is applied"
    for name, address in MANAGEMENT.items():
        host = labcheck.lab_host(name)
        listening = set(host.check_output("ss -H -t -l -n -p | grep sshd | awk '{print $4}'").split())
        assert listening == {"%s:22" % address}, "%s: sshd listens on %s" % (name, listening)
        config = host.check_output("sshd -T | grep -E '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication) '")
        assert sorted(config.splitlines()) == ["kbdinteractiveauthentication no", "passwordauthentication no",
                                               "permitrootlogin without-password"], config
    for up in labcheck.UPSTREAMS:
        assert ROUTER in labcheck.default_route(labcheck.lab_host(up))


def test_controller_only_via_default_route_is_refused_before_any_change():
    rc, out, changed = ssh_play("ip_transparency", {"upstream_default_route_controller_address": "203.0.113.5"})
    assert rc != 0, "a run that would cut the management path was accepted"
    assert "only the default route matches that address" in " ".join(out.split()), out[-4000:]
    assert set(changed) == set(MANAGEMENT), "not every host was reached over SSH: %s" % changed
    assert not any(changed.values()), "changed before refusing: %s" % changed
    assert not task_results(out, ROUTE_TASK), "the default route task ran"
    difference = labdump.differences(STATE["baseline"], labdump.dump_all())
    assert not difference, "the refused run changed the lab:\n" + difference


def test_default_route_change_over_ssh_keeps_the_management_path(host):
    before = logins()
    rc, out, changed = ssh_play("ip_transparency")
    assert rc == 0, out[-6000:]
    assert set(changed) == set(MANAGEMENT), changed
    route = task_results(out, ROUTE_TASK)
    after_route = task_results(out, AFTER_ROUTE_TASK)
    print("route change: %s; after it: %s" % (route, after_route))
    assert route == {up: "changed" for up in labcheck.UPSTREAMS}, route
    # Tasks on each upstream after its default route moved, each over a new SSH connection.
    assert set(after_route) == set(labcheck.UPSTREAMS) and set(after_route.values()) <= {"ok", "changed"}, after_route
    new_logins = {up: count - before[up] for up, count in logins().items()}
    print("SSH logins from %s during the run: %s" % (CONTROLLER, new_logins))
    assert all(count >= 2 for count in new_logins.values()), "the run shared SSH connections: %s" % new_logins
    for up in labcheck.UPSTREAMS:
        session, default = ssh(up, "echo $SSH_CONNECTION; ip -4 route show default").split("\n", 1)
        print("%s: SSH_CONNECTION=%s; %s" % (up, session, default))
        client_address, _port, server_address, _server_port = session.split()
        assert (client_address, server_address) == (CONTROLLER, MANAGEMENT[up]), session
        assert "via %s " % PROXY_PRIVATE in default + " " and ROUTER not in default, default
    reply = labcheck.parse_hello(host.check_output("curl -sS --max-time 5 http://%s/" % labcheck.VIP))
    assert reply["src"] == labcheck.CLIENT, "upstream saw %s, not the client" % reply["src"]
    labcheck.assert_probe_seen_from_client(host)


def test_second_run_over_ssh_connects_and_changes_nothing():
    rc, out, changed = ssh_play("ip_transparency", shared=True)
    assert rc == 0, out[-6000:]
    assert set(changed) == set(MANAGEMENT), "not every host was reached: %s" % changed
    assert not any(changed.values()), "second run changed %s" % {h: c for h, c in changed.items() if c}


def test_teardown_over_ssh_returns_every_host_to_its_baseline():
    rc, out, changed = ssh_play("teardown", shared=True)
    assert rc == 0, out[-6000:]
    assert set(changed) == set(MANAGEMENT), changed
    difference = labdump.differences(STATE["baseline"], labdump.dump_all())
    assert not difference, "teardown over SSH left differences:\n" + difference
    for up in labcheck.UPSTREAMS:
        assert ssh(up, "ip -4 route show default").startswith("default via %s " % ROUTER)
