"""Operating the collection safely, on one lab, in a fixed order (pytest runs the tests as written; each
step builds on the one before, so the scenario runs them with -x):

 1. baseline dumps of every host (molecule/shared/labdump.py);
 2. --check --diff of every method's playbook and of the teardown on the fresh lab: reports the changes a
    real run would make (kernel state included in the diff) and changes nothing (dumps identical);
 3. bad input for the checks the preflights make: refused with a clear message, nothing changed;
 4. a failure half-way through (nginx rejects the configuration after the upstreams and the proxy's network
    side are changed): nginx keeps running, and re-running with good input applies Method 1;
 5. then 2a, then 2b, then 1 again: each works from the client, a second run changes nothing, and nothing
    of the previous method is left; with 2a the proxy, with 2b an upstream is rebooted: the stateless
    rewrite comes back at boot and the method works from the client without Ansible (no query lost);
 6. reboot of the proxy and of an upstream: Method 1 still works from the client without Ansible, and a
    run afterwards changes nothing;
 7. teardown: the dumps of every host are identical to the baseline, and a second teardown changes nothing.
"""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402
import labdump  # noqa: E402
from labplay import play  # noqa: E402

testinfra_hosts = ["docker://ipt-client"]

ROUTER = "172.16.0.253"
PROXY_PRIVATE = "172.16.0.1"

STATE = {}


def applied(name, *extra_vars):
    rc, out, changed = play(name, *extra_vars)
    assert rc == 0, "%s failed:\n%s" % (name, out[-6000:])
    return changed


def assert_idempotent(name, limit=None):
    rc, out, changed = play(name, limit=limit)
    assert rc == 0, out[-6000:]
    assert changed and not any(changed.values()), "second run of %s changed %s:\n%s" % (
        name, {h: c for h, c in changed.items() if c}, "\n".join(
            line for line in out.splitlines() if line.startswith("changed:"))
    )


# --- what works, seen from the client -------------------------------------------------------------

def http_sees_client(client):
    """One HTTP request over each family (the lab's services are dual-stack): the upstream sees the client's own
    address. Returns the IPv4 reply."""
    reply6 = labcheck.parse_hello(client.check_output("curl -6 -sS --max-time 5 http://[%s]/" % labcheck.VIP6))
    assert reply6["src"] == labcheck.CLIENT6, "upstream saw %s, not the client's IPv6 address" % reply6["src"]
    reply = labcheck.parse_hello(client.check_output("curl -sS --max-time 5 http://%s/" % labcheck.VIP))
    assert reply["src"] == labcheck.CLIENT, "upstream saw %s, not the client" % reply["src"]
    return reply


def dns_sees_client(client):
    """One DNS probe over each family: answered through the VIP, logged with the client's own address."""
    for vip, source in ((labcheck.VIP, labcheck.CLIENT), (labcheck.VIP6, labcheck.CLIENT6)):
        name = labcheck.unique_name()
        status = ""
        for _attempt in range(3):
            status = client.check_output("dig +time=2 +tries=1 @%s %s | grep -o 'status: [A-Z]*' || true" % (vip, name))
            if status == "status: NXDOMAIN":
                break
        assert status == "status: NXDOMAIN", "the DNS probe was not answered through the VIP %s" % vip
        seen = labcheck.query_sources(name)
        assert seen, "no upstream logged the probe sent to %s" % vip
        for sources in seen.values():
            assert set(sources) == {source}, "an upstream saw %s, not the client %s" % (sources, source)


def rp_filters(dump_text):
    return [line for line in dump_text.splitlines() if line.startswith("/proc/sys/net/ipv4/conf/")]


def nft_tables(host):
    return sorted(line.strip() for line in host.check_output("nft list tables").splitlines() if line.strip())


# --- 1. baseline and check mode -------------------------------------------------------------------

def test_baseline_dumps():
    STATE["baseline"] = labdump.dump_all()
    proxy = STATE["baseline"]["lb"]
    assert "## nft ruleset" in proxy and "## ip -4 rule" in proxy
    assert "lookup 100" not in proxy, "the lab is not fresh: a method is applied"


@pytest.fixture(scope="module")
def check_runs():
    """--check --diff of every playbook on the fresh lab, run side by side (none may change anything),
    then one dump of every host."""
    names = ["ip_transparency", "dsr_router_nat", "dsr_origin_nat", "teardown"]
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = dict(zip(names, pool.map(lambda n: play(n, check=True, diff=True), names)))
    return results, labdump.dump_all()


@pytest.mark.parametrize("name", ["ip_transparency", "dsr_router_nat", "dsr_origin_nat"])
def test_check_mode_reports_the_changes_with_kernel_state_diff(check_runs, name):
    rc, out, changed = check_runs[0][name]
    assert rc == 0, out[-6000:]
    assert sum(changed.values()) > 0, "check mode reported no change on a fresh lab"
    # --diff shows kernel state, not only files: the upstreams' default route before/after, the rule.
    if name != "dsr_origin_nat":
        assert re.search(r"^-.*default.*%s" % re.escape(ROUTER), out, re.M), out[-4000:]
        assert re.search(r"^\+.*default.*%s" % re.escape(PROXY_PRIVATE), out, re.M), out[-4000:]
    if name == "ip_transparency":
        assert re.search(r"^\+.*fwmark", out, re.M), "no rule in the diff:\n" + out[-4000:]


def test_check_mode_of_teardown_on_fresh_lab_reports_nothing(check_runs):
    rc, out, changed = check_runs[0]["teardown"]
    assert rc == 0, out[-6000:]
    assert changed and not any(changed.values()), changed


def test_check_mode_changed_nothing(check_runs):
    difference = labdump.differences(STATE["baseline"], check_runs[1])
    assert not difference, "--check changed the lab:\n" + difference


# --- 2. bad input ---------------------------------------------------------------------------------

def _services(upstreams=None, **extra):
    svc = {"name": "dns_udp", "protocol": "udp", "port": 53,
           "upstreams": upstreams or list(labcheck.UPSTREAMS.values())}
    svc.update(extra)
    return {"nginx_transparent_proxy_services": [svc]}


# (id, playbook, extra vars, part of the expected message). Kept in step with the table in README.md.
BAD_INPUTS = [
    ("invalid-upstream-address", "ip_transparency", _services(["172.16.0.300"]),
     "Service dns_udp: upstreams must be a non-empty list of IPv4 or IPv6 addresses. Not IP addresses: 172.16.0.300"),
    ("link-local-upstream", "ip_transparency", _services(["172.16.0.11", "fe80::11"]),
     "Link-local (fe80::/10): fe80::11"),
    ("invalid-gateway", "ip_transparency", {"upstream_default_route_gateway": "172.16.0.999"},
     "which is not an IP address"),
    ("gateway-not-connected", "dsr_router_nat", {"upstream_default_route_gateway": "10.9.9.9"},
     "directly connected"),
    ("client-network-host-bits", "ip_transparency", {"nginx_transparent_proxy_client_networks": ["10.20.30.40/8"],
                                                     "upstream_default_route_client_networks": ["10.20.30.40/8"]},
     "host bits"),
    ("unknown-public-interface", "ip_transparency", {"nginx_transparent_proxy_public_interface": "eth9"},
     "public (client-facing) interface was not found"),
    ("unknown-upstream-device", "ip_transparency", {"upstream_default_route_device": "eth9"},
     "upstream_default_route_device eth9 does not exist"),
    ("table-id-out-of-range", "ip_transparency", {"nginx_transparent_proxy_route_table": 4294967296},
     "nginx_transparent_proxy_route_table 4294967296 must be 1..4294967295"),
    ("table-id-main", "ip_transparency", {"nginx_transparent_proxy_route_table": 254},
     "not 253 default, 254 main, 255 local"),
    ("upstream-inside-client-network", "ip_transparency", {"nginx_transparent_proxy_client_networks": ["172.16.0.0/16"],
                                                           "upstream_default_route_client_networks": ["172.16.0.0/16"]},
     "No Overlapping IP Ranges"),
    ("ipv6-listener-ipv4-upstreams", "ip_transparency", _services(listen_address="::"),
     "listen_address :: is IPv6 while upstreams 172.16.0.11"),
    ("tcp-service-with-dsr", "dsr_router_nat", {"dsr_services": [{"name": "web", "protocol": "tcp", "port": 80,
                                                                  "upstreams": ["172.16.0.11"]}]},
     "Service web cannot use Direct Server Return (dsr_router_nat): protocol tcp: DSR works for UDP only"),
    # issue 13, defect 9: refused with "works for UDP only ... Not UDP: ." (an empty list), naming no service
    ("dsr-udp-upstream-port-differs", "dsr_router_nat",
     {"dsr_services": [{"name": "dns_alt", "protocol": "udp", "port": 53, "upstream_port": 5353,
                        "upstreams": ["172.16.0.11"], "health_check": {"type": "dns"}}]},
     "Service dns_alt cannot use Direct Server Return (dsr_router_nat): upstream_port 5353 differs from port 53"),
    # the lab's services are dual-stack, and tc is refused for IPv6 first: these two cases use IPv4 upstreams only
    ("tc-backend-without-act-nat", "dsr_router_nat", dict(_services(), nginx_transparent_proxy_tc_nat_backend="tc"),
     "backend tc needs the kernel's tc nat action"),
    ("tc-backend-without-act-nat-origin", "dsr_origin_nat", dict(_services(), origin_nat_backend="tc"),
     "backend tc needs the kernel's tc nat action"),
    ("tc-backend-with-ipv6-upstreams", "dsr_router_nat", {"nginx_transparent_proxy_tc_nat_backend": "tc"},
     "has IPv6 upstreams: the tc nat action is IPv4-only"),
    ("controller-only-via-default-route", "ip_transparency", {"upstream_default_route_controller_address": "10.99.0.5"},
     "only the default route matches that address"),
    ("unknown-method", "ip_transparency", {"nginx_transparent_proxy_method": "dsr_magic"},
     "nginx_transparent_proxy_method must be one of"),
    ("udp-service-without-health-probe", "ip_transparency", _services(name="ntp", port=123),
     "Service ntp: health_check"),
    ("health-timeout-not-below-interval", "dsr_router_nat", _services(health_check={"interval": 1, "timeout": 1}),
     "Service dns_udp: health_check timeout 1 must be below interval 1"),
]


@pytest.fixture(scope="module")
def bad_runs():
    """Every bad input, four runs side by side (each is refused in the preflight play), limited to the proxy
    and one upstream to keep it short; then one dump of those hosts."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda b: play(b[1], b[2], limit="proxy,upstream1"), BAD_INPUTS))
    return {b[0]: run for b, run in zip(BAD_INPUTS, runs)}, labdump.dump_all(["lb", "upstream1"])


@pytest.mark.parametrize("case,message", [(b[0], b[3]) for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_before_any_change(bad_runs, case, message):
    rc, out, changed = bad_runs[0][case]
    assert rc != 0, "accepted: %s" % case
    flat = " ".join(out.split())
    assert message in flat, "expected %r in the error:\n%s" % (message, out[-4000:])
    assert changed and not any(changed.values()), "changed before failing: %s" % changed


def test_refused_runs_changed_nothing(bad_runs):
    difference = labdump.differences({h: STATE["baseline"][h] for h in bad_runs[1]}, bad_runs[1])
    assert not difference, "a refused run changed the lab:\n" + difference


# --- 3. a failure half-way through ------------------------------------------------

def test_failure_half_way_leaves_nginx_untouched_and_is_safe_to_rerun(host):
    # Valid for the preflights, rejected by `nginx -t`: the upstreams and the proxy's network side are
    # already changed when the handler fails, so nginx is never reloaded with it. The next test re-runs the
    # playbook with good input on this half-configured lab and checks that everything works.
    proxy = labcheck.lab_host("lb")
    nginx_before = proxy.check_output("systemctl is-active nginx || true")
    pid_before = proxy.check_output("cat /run/nginx.pid 2>/dev/null || true")
    rc, out, _changed = play("ip_transparency", _services(proxy_timeout="not-a-time"))
    assert rc != 0, "nginx accepted proxy_timeout not-a-time"
    assert "Test the nginx configuration" in out and '"proxy_timeout" directive invalid value' in out, out[-4000:]
    # nginx was neither reloaded nor (re)started with the rejected configuration: same state, same master.
    assert proxy.check_output("systemctl is-active nginx || true") == nginx_before
    assert proxy.check_output("cat /run/nginx.pid 2>/dev/null || true") == pid_before


# --- 4. methods, switching, idempotence ------------------------------------------------------------

def test_rerun_after_the_failure_applies_method_1(host):
    # The controller given on a network the upstreams are directly connected to: the no-lockout check passes.
    applied("ip_transparency", {"upstream_default_route_controller_address": "172.16.0.254"})
    http_sees_client(host)
    dns_sees_client(host)
    labcheck.assert_workers_least_privilege()


NFT_TABLE = "inet netops_transparent_proxy"


def nft_table(host):
    return host.check_output("LC_ALL=C nft -s list table %s" % NFT_TABLE)


def test_hand_edited_nft_table_is_repaired_and_check_mode_reports_it(host):
    """Issue 13, defect 5: the proxy's nftables table edited by hand (a rule added, the upstreams set widened)
    is seen by a re-run, reported without change in check mode (with the before/after in --diff), repaired by a
    real run (reported as a change), and a second run changes nothing."""
    proxy = labcheck.lab_host("lb")
    wanted = nft_table(proxy)
    proxy.check_output("nft 'add rule %s prerouting udp sport 5353 meta mark set 0x1 comment \"hand_edit\"'" % NFT_TABLE)
    proxy.check_output("nft 'add element %s upstreams { 172.16.0.99 }'" % NFT_TABLE)
    edited = nft_table(proxy)
    assert "hand_edit" in edited and "172.16.0.99" in edited and edited != wanted

    rc, out, changed = play("ip_transparency", check=True, diff=True, limit="proxy")
    assert rc == 0, out[-6000:]
    assert changed.get("lb"), "check mode did not report the hand-edited table:\n" + out[-6000:]
    assert re.search(r"^-.*hand_edit", out, re.M), "no before/after of the table in the diff:\n" + out[-6000:]
    assert nft_table(proxy) == edited, "check mode touched the table"

    rc, out, changed = play("ip_transparency", limit="proxy")
    assert rc == 0, out[-6000:]
    lines = [line for line in out.splitlines() if line.startswith("changed:")]
    assert changed.get("lb") == 1, "the repair should be the only change: %s\n%s" % (changed, "\n".join(lines))
    assert nft_table(proxy) == wanted, "the table was not repaired:\n" + nft_table(proxy)
    # only the proxy was edited and repaired: its second run changes nothing (every host's is checked after the
    # reboot test, in test_method_1_survives_reboot_of_proxy_and_upstream)
    assert_idempotent("ip_transparency", limit="proxy")


def test_switch_to_2a_router_nat(host):
    applied("dsr_router_nat")
    dns_sees_client(host)
    labcheck.assert_workers_least_privilege()
    proxy = labcheck.lab_host("lb")
    assert "fwmark" not in proxy.check_output("ip -4 rule show"), "Method 1's fwmark rule is left"
    assert not proxy.check_output("ip -4 route show table 100"), "Method 1's local route is left"
    assert "meta mark set" not in proxy.check_output("nft list ruleset"), "Method 1's marking is left"
    assert_idempotent("dsr_router_nat")
    # the proxy's rewrite of the upstreams' replies (its public interface) comes back at boot
    assert_dsr_survives_reboot(host, "lb", labcheck.VIP)


def test_switch_to_2b_origin_nat(host):
    applied("dsr_origin_nat")
    dns_sees_client(host)
    labcheck.assert_workers_least_privilege()
    proxy = labcheck.lab_host("lb")
    base = STATE["baseline"]["lb"]
    assert not [t for t in nft_tables(proxy) if t.startswith("table netdev")], "2a's NAT table is left on the proxy"
    now = labdump.dump("lb")
    for key in ("net.ipv4.ip_forward", "net.ipv4.udp_early_demux"):
        assert re.search(r"^%s = .*$" % re.escape(key), now, re.M).group(0) == \
            re.search(r"^%s = .*$" % re.escape(key), base, re.M).group(0), "2a's %s is left" % key
    for up in labcheck.UPSTREAMS:
        assert ROUTER in labcheck.default_route(labcheck.lab_host(up)), "%s kept the default route via the proxy" % up
    assert_idempotent("dsr_origin_nat")
    # upstream1's own rewrite (its egress interface) comes back at boot
    assert_dsr_survives_reboot(host, "upstream1", "172.16.0.11")
    # the boot restored on upstream1 exactly what the role set (every host's second run is checked just above)
    assert_idempotent("dsr_origin_nat", limit="proxy,upstream1")


def test_switch_back_to_method_1(host):
    applied("ip_transparency")
    http_sees_client(host)
    dns_sees_client(host)
    for up in labcheck.UPSTREAMS:
        upstream = labcheck.lab_host(up)
        assert not [t for t in nft_tables(upstream) if t.startswith("table netdev")], "2b's NAT is left on %s" % up
        assert rp_filters(labdump.dump(up)) == rp_filters(STATE["baseline"][up]), "2b's rp_filter is left on %s" % up
        assert PROXY_PRIVATE in labcheck.default_route(upstream)


# --- 5. reboot persistence --------------------------------------------------------------------------

def _reboot(name):
    subprocess.run(["docker", "restart", "-t", "5", "ipt-%s" % name], check=True, capture_output=True)
    deadline = time.monotonic() + 90
    state = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(["docker", "exec", "ipt-%s" % name, "systemctl", "is-system-running"],
                              capture_output=True, text=True, check=False)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError("%s did not finish booting: %s" % (name, state))


def assert_dsr_survives_reboot(client, name, address):
    """Reboot ``name``; its tc_nat_filter unit (on the interface holding ``address``) restores the rewrite and
    DNS load through the VIP loses nothing (nginx spreads it over every upstream, the rebooted one included)."""
    lab = labcheck.lab_host(name)
    ifname = labcheck.interface_with(lab, address)
    unit = "netops-nat-%s.service" % ifname
    assert lab.check_output("systemctl is-enabled %s || true" % unit) == "enabled", "%s is not enabled on %s" % (unit, name)
    state = _reboot(name)
    assert labcheck.interface_with(lab, address) == ifname, "the container came back with other interface names"
    assert lab.check_output("systemctl is-active %s || true" % unit) == "active", lab.check_output(
        "systemctl status --no-pager %s || true" % unit)
    assert "table netdev netops_nat_" in lab.check_output("nft list tables netdev")
    figures = labcheck.dnsperf(client, labcheck.VIP, runs=4, rate=500)
    print("%s rebooted (%s): %s unit active; %d sent, %d answered, %d lost" % (
        name, state, unit, figures["sent"], figures["completed"], figures["lost"]))
    assert figures["sent"] == 400 and figures["lost"] == 0, figures["output"]


def test_method_1_survives_reboot_of_proxy_and_upstream(host):
    for name, unit in (("lb", "netops-transparent-proxy.service"), ("upstream1", "netops-upstream-default-route.service")):
        state = _reboot(name)
        failed = labcheck.lab_host(name).check_output("systemctl --failed --no-legend --plain || true")
        print("%s booted: %s %s" % (name, state, failed))
        assert labcheck.lab_host(name).check_output("systemctl is-active %s || true" % unit) == "active", failed
    names = set()
    for _attempt in range(8):
        names.add(http_sees_client(host)["name"])
    assert "upstream1" in names, "the rebooted upstream is not answering through the proxy: %s" % names
    dns_sees_client(host)
    assert PROXY_PRIVATE in labcheck.default_route(labcheck.lab_host("upstream1"))
    # Nothing to do for Ansible afterwards: the boot restored exactly what the roles set.
    assert_idempotent("ip_transparency")


# --- 6. teardown -------------------------------------------------------------------------------------

def test_teardown_returns_every_host_to_its_baseline():
    applied("teardown")
    difference = labdump.differences(STATE["baseline"], labdump.dump_all())
    assert not difference, "teardown left differences:\n" + difference
    assert_idempotent("teardown")
