"""The keepalived configuration and the track script the proxy_ha role renders for the lab's pair (proxy1 and
proxy2 in the group `proxy`), from the preflight's own derivations on the lab's facts: golden files, reviewed.
The track script also runs here, against stand-ins for pgrep and ss."""

import os
import re
import stat
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
TRACKED = [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}, {"protocol": "tcp", "port": 53}]
RENDERED = ("keepalived.conf", "proxy-ha-check")


def render(tmp_path, harness, this=None, **variables):
    group_vars = dict(harness.LAB_VARS, proxy_ha_track_services=TRACKED)
    group_vars.update(variables)
    hosts = {"proxy1": dict({"fake_interfaces": harness.PROXY1}, **(this or {})), "proxy2": {"fake_interfaces": harness.PROXY2}}
    failed, stdout = harness.run_pairs(tmp_path, [("proxy", hosts, group_vars)], {"out_dir": str(tmp_path)})
    assert not failed, failed
    return dict(((host, name), (tmp_path / host / name).read_text()) for host in hosts for name in RENDERED)


def test_lab_pair_renders_as_reviewed(tmp_path, harness):
    out = render(tmp_path, harness)
    for (host, name), text in sorted(out.items()):
        with open(os.path.join(GOLDEN, host, name)) as handle:
            assert text == handle.read(), "%s/%s differs from the reviewed golden file" % (host, name)


def test_a_floating_address_already_on_the_master_is_not_its_own_address(tmp_path, harness):
    # a re-run on the master: keepalived added both addresses, the facts show them as secondaries
    on_master = [harness.iface("eth0", "192.168.99.11", "192.168.99.10"), harness.iface("eth1", "172.16.0.2", "172.16.0.1")]
    out = render(tmp_path, harness, this={"fake_interfaces": on_master})
    with open(os.path.join(GOLDEN, "proxy1", "keepalived.conf")) as handle:
        assert out[("proxy1", "keepalived.conf")] == handle.read()


def test_preempting_pair_gets_a_preempt_delay_and_no_nopreempt(tmp_path, harness):
    out = render(tmp_path, harness, proxy_ha_nopreempt=False, proxy_ha_preempt_delay=45, proxy_ha_advert_interval=1)
    conf = out[("proxy1", "keepalived.conf")]
    assert "nopreempt" not in conf
    assert conf.count("    preempt_delay 45\n") == 2 and conf.count("    advert_int 1\n") == 2
    assert conf.count("    state BACKUP\n") == 2


def test_explicit_priorities_and_vrids(tmp_path, harness):
    out = render(tmp_path, harness, this={"proxy_ha_priority": 90}, proxy_ha_public_vrid=7, proxy_ha_private_vrid=8)
    one, two = out[("proxy1", "keepalived.conf")], out[("proxy2", "keepalived.conf")]
    assert one.count("    priority 90\n") == 2 and two.count("    priority 100\n") == 2
    assert re.findall(r"virtual_router_id (\d+)", one) == ["7", "8"] == re.findall(r"virtual_router_id (\d+)", two)


# ---------------------------------------------------------------------------------------------------------
# the track script itself, with stand-ins for pgrep and ss on PATH
# ---------------------------------------------------------------------------------------------------------

SS_LISTENING = {
    # what `ss -H -l -n -t|-u` prints for nginx's `listen 80;`, `listen 53;`, `listen 53 udp;`
    "-t": ["LISTEN 0      511          0.0.0.0:80        0.0.0.0:*", "LISTEN 0      511          0.0.0.0:53        0.0.0.0:*",
           "LISTEN 0      4096     127.0.0.54:53        0.0.0.0:*"],
    "-u": ["UNCONN 0      0            0.0.0.0:53        0.0.0.0:*"],
}


def fake_tools(bindir, nginx_runs, listening):
    bindir.mkdir(exist_ok=True)
    (bindir / "pgrep").write_text("#!/bin/sh\n[ \"$*\" = '-x nginx' ] || exit 2\n%s\n" % ("echo 4242" if nginx_runs else "exit 1"))
    lines = []
    for proto, sockets in listening.items():
        lines.append("if [ \"$4\" = %s ]; then" % proto)
        lines.append("  port=${5##*:}")  # the filter, "sport = :PORT"
        lines.append("  cat <<'EOF' | awk -v p=\":$port\" 'substr($4, length($4) - length(p) + 1) == p'")
        lines.extend(sockets)
        lines.append("EOF")
        lines.append("fi")
    (bindir / "ss").write_text("#!/bin/sh\n[ \"$1 $2 $3\" = '-H -l -n' ] || exit 2\n%s\n" % "\n".join(lines))
    for tool in ("pgrep", "ss"):
        os.chmod(str(bindir / tool), stat.S_IRWXU)


def run_check(tmp_path, script, nginx_runs=True, listening=None):
    path = tmp_path / "proxy-ha-check"
    path.write_text(script)
    bindir = tmp_path / "bin"
    fake_tools(bindir, nginx_runs, SS_LISTENING if listening is None else listening)
    env = {"PATH": "%s:/usr/bin:/bin" % bindir}
    return subprocess.run(["sh", str(path)], env=env, capture_output=True, text=True, check=False).returncode


@pytest.fixture(scope="module")
def scripts(tmp_path_factory, harness):
    tmp = tmp_path_factory.mktemp("render")
    return render(tmp, harness)


def test_check_passes_when_nginx_runs_and_listens_on_every_tracked_service(tmp_path, scripts):
    assert run_check(tmp_path, scripts[("proxy1", "proxy-ha-check")]) == 0


def test_check_fails_when_nginx_does_not_run(tmp_path, scripts):
    assert run_check(tmp_path, scripts[("proxy1", "proxy-ha-check")], nginx_runs=False) == 1


def test_check_fails_when_a_tracked_socket_is_missing(tmp_path, scripts):
    missing_udp = {"-t": SS_LISTENING["-t"], "-u": []}
    assert run_check(tmp_path, scripts[("proxy1", "proxy-ha-check")], listening=missing_udp) == 1
    # a socket on another address (127.0.0.54:53) does not serve the VIP
    only_stub = {"-t": [SS_LISTENING["-t"][0], SS_LISTENING["-t"][2]], "-u": SS_LISTENING["-u"]}
    assert run_check(tmp_path, scripts[("proxy1", "proxy-ha-check")], listening=only_stub) == 1


def test_check_accepts_a_socket_on_the_vip_itself(tmp_path, scripts):
    on_vip = {"-t": ["LISTEN 0 511 192.168.99.10:80 0.0.0.0:*", "LISTEN 0 511 *:53 *:*"], "-u": ["UNCONN 0 0 192.168.99.10:53 0.0.0.0:*"]}
    assert run_check(tmp_path, scripts[("proxy1", "proxy-ha-check")], listening=on_vip) == 0
