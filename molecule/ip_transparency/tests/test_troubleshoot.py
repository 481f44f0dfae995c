"""The troubleshooter against the lab: a clean report on the healthy lab, then each injected fault named with its
host (and, for faults on the packets' path, the trace pointing at the host where the probe disappeared), undone
after each test. The lab was converged with Method 1 (this scenario's converge; this file runs last in its verify, after
the client's and the health checks); the last tests switch it to DSR router NAT."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402

testinfra_hosts = ["client"]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROXY_PRIVATE = "172.16.0.1"
ROUTER_PRIVATE = "172.16.0.253"


def troubleshoot(*extra):
    """Run playbooks/troubleshoot.yml on the lab inventory; return the JSON report (and print the text one)."""
    handle, path = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1")
    cmd = [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(ROOT, "inventories", "lab"),
           os.path.join(ROOT, "playbooks", "troubleshoot.yml"), "-e", "troubleshoot_report_file=%s" % path] + list(extra)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env, cwd=ROOT, check=False)
    try:
        assert proc.returncode == 0, "the troubleshoot playbook failed:\n%s" % proc.stdout[-6000:]
        with open(path) as handle:
            report = json.load(handle)
    finally:
        os.unlink(path)
    print(report["text"])
    return report


def problems(report, check=None, host=None):
    return [f for f in report["problems"] if (check is None or f["check"] == check) and (host is None or f["host"] == host)]


def lost_at(report):
    return {t["culprit"] for t in report["traces"] if not t["ok"]}


def family(trace):
    """4 or 6: the lab is dual-stack, its services are probed at both VIPs (the IPv6 probes after the IPv4 ones)."""
    return trace["probe"].get("family") or 4


def proxy():
    return labcheck.lab_host("lb")


@pytest.fixture()
def method_ip_transparency():
    conf = proxy().check_output("nginx -T 2>/dev/null | grep -m1 -o 'Method: [a-z_]*' || true")
    if conf != "Method: ip_transparency":
        pytest.fail("the lab is not converged with ip_transparency (%r)" % conf)


def test_healthy_lab_gives_a_clean_report(method_ip_transparency):
    report = troubleshoot()
    assert report["config"]["method"] == "ip_transparency"
    assert report["problems"] == [], "a healthy lab reported problems: %s" % report["problems"]
    checks = {(f["host"], f["check"]) for f in report["findings"]}
    for expected in [("lb", "fwmark_rule"), ("lb", "local_route"), ("lb", "reply_marking"), ("lb", "nginx_transparent"),
                     ("lb", "nginx_workers"), ("lb", "rp_filter"), ("lb", "reachability"),
                     ("upstream1", "default_route"), ("upstream4", "rp_filter"), ("upstream2", "overlapping_networks")]:
        assert expected in checks, "check %s did not run" % (expected,)
    # one probe per upstream of each family: four at the VIP, four at the IPv6 VIP
    assert [family(t) for t in report["traces"]] == [4] * 4 + [6] * 4, "one probe per upstream and family was expected: %s" % report["traces"]
    for trace in report["traces"]:
        assert trace["ok"], trace["verdict"]
        assert [h["host"] for h in trace["hops"]][:2] == ["client", "lb"]
        assert len(trace["hops"]) == 8, trace["hops"]
    # IPv6 reverse-path filtering (firewall rules) is checked where the proxy's IPv6 requests arrive
    assert [f for f in report["findings"] if (f["host"], f["check"]) == ("upstream1", "rp_filter") and "IPv6 requests" in f["problem"]], \
        "the IPv6 reverse-path filters of upstream1 were not checked"


def test_missing_fwmark_rule_is_named_on_the_proxy_and_the_trace_loses_replies_there(method_ip_transparency):
    p = proxy()
    p.check_output("ip rule del priority 100 fwmark 1 lookup 100")
    try:
        report = troubleshoot()
    finally:
        p.check_output("ip rule add priority 100 fwmark 1 lookup 100")
    found = problems(report, "fwmark_rule", "lb")
    assert found and "fwmark 0x1" in found[0]["problem"], report["problems"]
    assert {f["host"] for f in report["problems"]} == {"lb"}, report["problems"]
    assert lost_at(report) == {"lb"}, [t["verdict"] for t in report["traces"]]
    # the IPv4 rule only: the IPv4 probes' replies are lost on the proxy, the IPv6 ones come back
    assert all(t["hops"][-1]["stage"].startswith("reply received by the proxy") for t in report["traces"] if family(t) == 4)
    assert all(t["ok"] for t in report["traces"] if family(t) == 6), [t["verdict"] for t in report["traces"]]


def test_nginx_without_transparent_is_named_on_the_proxy(method_ip_transparency):
    p = proxy()
    conf = "/etc/nginx/conf.d/netops-transparent-proxy.conf"
    p.check_output("cp %s /root/ts-http.conf && sed -i 's/ transparent;/;/' %s && nginx -s reload && sleep 1" % (conf, conf))
    try:
        report = troubleshoot("-e", "troubleshoot_trace=false")
    finally:
        p.check_output("cp /root/ts-http.conf %s && rm /root/ts-http.conf && nginx -s reload" % conf)
    found = problems(report, "nginx_transparent", "lb")
    # The lab's http service is dual-stack: the sed broke the IPv4 and the IPv6 server block, each named.
    assert len(found) == 2, report["problems"]
    assert any("http (tcp/80)" in f["problem"] for f in found), report["problems"]
    assert any("http (tcp/80, IPv6)" in f["problem"] for f in found), report["problems"]
    assert all("transparent" in f["fix"] for f in found)


def test_wrong_default_route_on_an_upstream_is_named(method_ip_transparency):
    up = labcheck.lab_host("upstream2")
    up.check_output("ip route replace default via %s" % ROUTER_PRIVATE)
    try:
        report = troubleshoot("-e", "troubleshoot_probe_count=8")
    finally:
        up.check_output("ip route replace default via %s" % PROXY_PRIVATE)
    found = problems(report, "default_route", "upstream2")
    assert found and "via %s, not via the proxy %s" % (ROUTER_PRIVATE, PROXY_PRIVATE) in found[0]["problem"], report["problems"]
    assert {(f["host"], f["check"]) for f in report["problems"]} == {("upstream2", "default_route")}, report["problems"]
    # round robin: the IPv4 probe that reached upstream2 is lost there (its reply left towards the router; its IPv6
    # default route is untouched)
    reached = [t for t in report["traces"] if family(t) == 4 and any(h["host"] == "upstream2" for h in t["hops"])]
    assert reached, "no probe reached upstream2"
    assert all(not t["ok"] and t["culprit"] == "upstream2" for t in reached), [t["verdict"] for t in reached]


def test_strict_rp_filter_on_a_multihomed_upstream_is_named():
    """upstream3 gets a management interface with a route to the clients: the requests (client source) arrive on
    the private interface, the route back leaves by the other one, and strict filtering drops them silently."""
    up = labcheck.lab_host("upstream3")
    before = up.check_output("sysctl -n net.ipv4.conf.all.rp_filter")
    up.check_output(
        "ip link add ts-mgmt type veth peer name ts-mgmt-peer && ip addr add 10.99.0.2/24 dev ts-mgmt && "
        "ip link set ts-mgmt up && ip link set ts-mgmt-peer up && ip route add 192.168.99.0/24 via 10.99.0.1 dev ts-mgmt && "
        "sysctl -qw net.ipv4.conf.all.rp_filter=1"
    )
    try:
        report = troubleshoot("-e", "troubleshoot_trace=false")
    finally:
        up.check_output("ip link del ts-mgmt; sysctl -qw net.ipv4.conf.all.rp_filter=%s" % before)
    found = problems(report, "rp_filter", "upstream3")
    assert found and "strict reverse-path filtering" in found[0]["problem"] and "ts-mgmt" in found[0]["problem"], report["problems"]
    assert problems(report, "default_route", "upstream3"), "the replies' detour via ts-mgmt was not named"
    assert {f["host"] for f in report["problems"]} == {"upstream3"}, report["problems"]


def test_overlapping_client_and_upstream_networks_are_named():
    report = troubleshoot("-e", '{"troubleshoot_client_networks": ["172.16.0.0/16"]}', "-e", "troubleshoot_trace=false")
    assert problems(report, "overlapping_networks", "lb"), report["problems"]
    for name in labcheck.UPSTREAMS:
        found = problems(report, "overlapping_networks", name)
        assert found and "172.16.0.0/16" in " ".join(found[0]["evidence"]), report["problems"]


def test_router_nat_healthy_then_nat_rule_removed_is_named_on_the_proxy():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"))
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(ROOT, "inventories", "lab"),
                    os.path.join(ROOT, "playbooks", "dsr_router_nat.yml")], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    report = troubleshoot()
    assert report["config"]["method"] == "dsr_router_nat"
    assert report["problems"] == [], report["problems"]
    assert report["traces"] and all(t["ok"] for t in report["traces"]), [t["verdict"] for t in report["traces"]]

    p = proxy()
    pub = labcheck.interface_with(p, labcheck.VIP)
    table = "netops_nat_%s" % pub
    saved = p.check_output("nft list table netdev %s" % table)
    p.check_output("nft delete table netdev %s" % table)
    try:
        report = troubleshoot()
    finally:
        p.check_output("nft -f - <<'EOF'\n%s\nEOF" % saved)
    found = problems(report, "router_nat", "lb")
    assert found and "not rewritten to %s" % labcheck.VIP in found[0]["problem"], report["problems"]
    assert {f["host"] for f in report["problems"]} == {"lb"}, report["problems"]
    assert lost_at(report) == {"lb"}, [t["verdict"] for t in report["traces"]]
    assert any("not rewritten to %s" % labcheck.VIP in t["verdict"] for t in report["traces"]), [t["verdict"] for t in report["traces"]]
