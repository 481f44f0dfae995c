"""Unit tests of the troubleshooter's diagnosis and packet trace (plugins/module_utils/troubleshoot.py), on
snapshots shaped like transparency_info' answers in the lab and tcpdump lines as tcpdump 4.99 prints them."""

import copy

import pytest

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _troubleshoot as ts

VIP, CLIENT = "192.168.99.10", "192.168.99.1"
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]

NGINX_CONF = """# configuration file /etc/nginx/nginx.conf:
user www-data;
http { include /etc/nginx/conf.d/*.conf; }

# configuration file /etc/nginx/conf.d/netops-transparent-proxy.conf:
# Method: ip_transparency.
upstream netops_http { server 172.16.0.11:80; server 172.16.0.12:80; }
server {
    listen 80;
    location / { proxy_bind $remote_addr transparent; proxy_pass http://netops_http; }
}

# configuration file /etc/nginx/netops-transparent-proxy/stream.conf:
server {
    listen 53 udp;
    proxy_pass netops_dns_udp;
    proxy_bind $remote_addr transparent;  # a comment { with braces }
    proxy_responses 1;
}
"""


def config(method="ip_transparency"):
    services = [{"name": "http", "protocol": "tcp", "port": 80, "upstream_port": 80, "http": True, "upstreams": UPSTREAMS, "proxy_responses": 1},
                {"name": "dns_udp", "protocol": "udp", "port": 53, "upstream_port": 53, "http": False, "upstreams": UPSTREAMS, "proxy_responses": 1}]
    if method != "ip_transparency":
        services = services[1:]
    return {"method": method, "public_address": VIP, "client_address": CLIENT, "client_networks": ["192.168.99.0/24"],
            "fwmark": 1, "route_table": 100, "rule_priority": 100, "upstream_egress": False, "services": services, "proxy_host": "proxy",
            "upstream_hosts": {"upstream1": UPSTREAMS[0], "upstream2": UPSTREAMS[1]}}


def rp(**values):
    out = {"all": {"configured": "off", "effective": "off"}}
    for iface, value in values.items():
        out[iface] = {"configured": value, "effective": value}
    return out


def proxy_facts():
    route = {"type": "unicast", "gateway": None, "source": None, "table": 254}
    return {
        "kernel": "6.1.0-56-amd64",
        "addresses": [{"interface": "lo", "address": "127.0.0.1", "prefix": 8, "network": "127.0.0.0/8"},
                      {"interface": "eth0", "address": VIP, "prefix": 24, "network": "192.168.99.0/24"},
                      {"interface": "eth1", "address": "172.16.0.1", "prefix": 24, "network": "172.16.0.0/24"}],
        "rules": [{"line": "0: from all lookup local", "priority": 0, "fwmark": None, "fwmask": None, "table": 255, "action": "lookup", "selectors": False},
                  {"line": "100: from all fwmark 0x1 lookup 100", "priority": 100, "fwmark": 1, "fwmask": 0xFFFFFFFF, "table": 100,
                   "action": "lookup", "selectors": False},
                  {"line": "32766: from all lookup main", "priority": 32766, "fwmark": None, "fwmask": None, "table": 254, "action": "lookup",
                   "selectors": False}],
        "routes": {"main": [], "100": [{"type": "local", "dest": "0.0.0.0/0", "device": "lo", "line": "local default dev lo table 100 scope host"}]},
        "route_get": dict([(CLIENT, dict(route, device="eth0"))] + [(u, dict(route, device="eth1")) for u in UPSTREAMS]),
        "sysctl": {"ip_forward": "0", "udp_early_demux": "1", "rp_filter": rp(eth0="strict", eth1="strict")},
        "nat": {"eth0": {"tc": [], "nftables": []}, "eth1": {"tc": [], "nftables": []}},
        "act_nat": {"available": True, "how": "act_nat module"},
        "nft_ruleset": ['iifname "eth1" ip saddr { 172.16.0.11, 172.16.0.12 } tcp sport 80 meta mark set 0x00000001 comment "http"',
                        'iifname "eth1" ip saddr { 172.16.0.11, 172.16.0.12 } udp sport 53 meta mark set 0x00000001 comment "dns_udp"'],
        "nginx": {"rc": 0, "config": NGINX_CONF, "test": [], "error_log": [],
                  "processes": [{"pid": 10, "role": "master", "uid": 0, "net_raw": True, "cmdline": "nginx: master process"},
                                {"pid": 11, "role": "worker", "uid": 33, "net_raw": True, "cmdline": "nginx: worker process"}]},
    }


def upstream_facts(address, via="172.16.0.1"):
    return {"kernel": "6.1.0-56-amd64",
            "addresses": [{"interface": "eth0", "address": address, "prefix": 24, "network": "172.16.0.0/24"}],
            "routes": {"main": [{"line": "default via %s dev eth0 table main" % via}]},
            "route_get": {CLIENT: {"type": "unicast", "gateway": via, "device": "eth0", "source": address, "table": 254}},
            "sysctl": {"ip_forward": "0", "rp_filter": rp(eth0="strict")}, "nat": {"eth0": {"tc": [], "nftables": []}},
            "act_nat": {"available": False, "how": "no act_nat"}}


def lab():
    return {"proxy": {"group": "proxy", "facts": proxy_facts(), "gateway": ""},
            "upstream1": {"group": "upstream", "facts": upstream_facts(UPSTREAMS[0]), "gateway": "172.16.0.1"},
            "upstream2": {"group": "upstream", "facts": upstream_facts(UPSTREAMS[1]), "gateway": ""}}


def problems(findings):
    return [(f["host"], f["check"]) for f in findings if f["severity"] != "ok"]


def test_healthy_lab_has_no_problem_and_every_check_ran():
    findings = ts.diagnose(config(), lab(), [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS])
    assert problems(findings) == []
    checks = {(f["host"], f["check"]) for f in findings}
    assert {("proxy", "fwmark_rule"), ("proxy", "local_route"), ("proxy", "reply_marking"), ("proxy", "nginx_transparent"),
            ("proxy", "nginx_proxy_responses"), ("proxy", "nginx_workers"), ("proxy", "rp_filter"), ("proxy", "reachability"),
            ("upstream1", "default_route"), ("upstream2", "default_route"), ("upstream2", "rp_filter")} <= checks
    assert "Summary: healthy" in ts.report(config(), findings)


def test_gateway_defaults_to_the_proxys_address_on_the_upstreams_subnet():
    assert ts.resolve_gateway(config(), lab(), "upstream2") == "172.16.0.1"
    assert ts.ping_plan(config(), lab())[-1] == {"host": "upstream2", "target": "172.16.0.1"}


@pytest.mark.parametrize("breakage, expected", [
    (lambda h: h["proxy"]["facts"]["rules"].pop(1), ("proxy", "fwmark_rule")),
    (lambda h: h["proxy"]["facts"]["routes"].update({"100": []}), ("proxy", "local_route")),
    (lambda h: h["proxy"]["facts"].update(nft_ruleset=[]), ("proxy", "reply_marking")),
    (lambda h: h["proxy"]["facts"]["nginx"]["processes"][1].update(net_raw=False), ("proxy", "nginx_workers")),
    (lambda h: h["proxy"]["facts"]["nginx"].update(config=NGINX_CONF.replace("$remote_addr transparent; proxy_pass", "$remote_addr; proxy_pass")),
     ("proxy", "nginx_transparent")),
    (lambda h: h["proxy"]["facts"]["nginx"].update(config=NGINX_CONF.replace("proxy_responses 1", "proxy_responses 0")),
     ("proxy", "nginx_proxy_responses")),
    (lambda h: h["upstream2"]["facts"]["route_get"][CLIENT].update(gateway="172.16.0.253"), ("upstream2", "default_route")),
])
def test_each_fault_is_named_with_its_host(breakage, expected):
    hosts = lab()
    breakage(hosts)
    assert problems(ts.diagnose(config(), hosts)) == [expected]


def test_strict_rp_filter_with_the_route_back_on_another_interface_is_named_loose_is_not():
    hosts = lab()
    hosts["upstream1"]["facts"]["route_get"][CLIENT] = {"type": "unicast", "gateway": "172.16.0.1", "device": "mgmt0"}
    found = [f for f in ts.diagnose(config(), hosts) if f["severity"] != "ok"]
    assert [(f["host"], f["check"]) for f in found] == [("upstream1", "rp_filter")]
    assert "route back leaves by mgmt0, not eth0" in found[0]["problem"]
    hosts["upstream1"]["facts"]["sysctl"]["rp_filter"] = rp(eth0="loose")
    assert problems(ts.diagnose(config(), hosts)) == []


def test_effective_rp_filter_is_what_is_checked():
    hosts = lab()
    hosts["upstream1"]["facts"]["route_get"][CLIENT]["device"] = "mgmt0"
    hosts["upstream1"]["facts"]["sysctl"]["rp_filter"] = {
        "all": {"configured": "strict", "effective": "strict"}, "eth0": {"configured": "off", "effective": "strict"}}
    assert ("upstream1", "rp_filter") in problems(ts.diagnose(config(), hosts))


def test_overlapping_networks_are_named_on_the_proxy_and_the_upstreams():
    cfg = config()
    cfg["client_networks"] = ["172.16.0.0/16"]
    found = problems(ts.diagnose(cfg, lab()))
    assert ("proxy", "overlapping_networks") in found and ("upstream1", "overlapping_networks") in found


def test_router_nat_needs_forwarding_the_rewrite_and_no_early_demux():
    cfg = config("dsr_router_nat")
    hosts = lab()
    conf = NGINX_CONF.replace("proxy_bind $remote_addr transparent;  #", "proxy_bind $remote_addr:$remote_port transparent; #")
    hosts["proxy"]["facts"]["nginx"]["config"] = conf.replace("proxy_responses 1", "proxy_responses 0")
    found = problems(ts.diagnose(cfg, hosts))
    assert found == [("proxy", "forwarding"), ("proxy", "udp_early_demux"), ("proxy", "router_nat")]
    facts = hosts["proxy"]["facts"]
    facts["sysctl"].update(ip_forward="1", udp_early_demux="0")
    facts["nat"]["eth0"]["nftables"] = [{"src": "172.16.0.8/29", "protocol": "udp", "sport": 53, "nat_to": VIP}]
    assert problems(ts.diagnose(cfg, hosts)) == []


def test_nginx_config_parser_finds_the_server_of_each_service():
    parsed = ts.parse_nginx(NGINX_CONF)
    fname, server = ts.find_servers(parsed, {"port": 53, "protocol": "udp"})[0]
    assert fname.endswith("stream.conf") and server.inherited("proxy_responses").args == ["1"]
    assert ts.find_servers(parsed, {"port": 53, "protocol": "tcp"}) == []
    assert ts.detect_method({"nginx": {"config": NGINX_CONF}}) == "ip_transparency"


def capture(*events):
    return ["%.6f %s %s IP %s > %s: %s" % event for event in events]


def probe():
    return {"host": "client", "client_address": CLIENT, "client_port": 40000, "port": 80, "upstream_port": 80, "protocol": "tcp", "kind": "http",
            "answered": True}


HEALTHY = {
    "client": capture((1.000, "eth0", "Out", CLIENT + ".40000", VIP + ".80", "Flags [S], seq 1"),
                      (1.0012, "eth0", "In", VIP + ".80", CLIENT + ".40000", "Flags [S.], seq 2, length 0"),
                      (1.004, "eth0", "In", VIP + ".80", CLIENT + ".40000", "Flags [P.], seq 1:241, length 240")),
    "proxy": capture((1.001, "eth0", "In", CLIENT + ".40000", VIP + ".80", "Flags [S], seq 1"),
                     (1.0015, "eth1", "Out", CLIENT + ".51000", "172.16.0.12.80", "Flags [S], seq 9"),
                     (1.0025, "eth1", "In", "172.16.0.12.80", CLIENT + ".51000", "Flags [S.], seq 8"),
                     (1.0011, "eth0", "Out", VIP + ".80", CLIENT + ".40000", "Flags [S.], seq 2, length 0"),
                     (1.003, "eth0", "Out", VIP + ".80", CLIENT + ".40000", "Flags [P.], seq 1:241, length 240")),
    "upstream2": capture((1.002, "eth0", "In", CLIENT + ".51000", "172.16.0.12.80", "Flags [S], seq 9"),
                         (1.0021, "eth0", "Out", "172.16.0.12.80", CLIENT + ".51000", "Flags [S.], seq 8")),
}


def test_trace_follows_a_healthy_probe_hop_by_hop():
    result = ts.trace(config(), [probe()], HEALTHY)[0]
    assert result["ok"], result["verdict"]
    assert [h["host"] for h in result["hops"]] == ["client", "proxy", "proxy", "upstream2", "upstream2", "proxy", "proxy", "client"]


def test_trace_names_the_host_where_the_reply_disappeared():
    lost = copy.deepcopy(HEALTHY)
    lost["proxy"] = [line for line in lost["proxy"] if "length 240" not in line]
    lost["client"] = [line for line in lost["client"] if "length 240" not in line]
    result = ts.trace(config(), [probe()], lost)[0]
    assert not result["ok"] and result["culprit"] == "proxy"
    assert "dropped on proxy" in result["verdict"]
    lost["proxy"] = [line for line in lost["proxy"] if "172.16.0.12.80 >" not in line]
    result = ts.trace(config(), [probe()], lost)[0]
    assert result["culprit"] == "upstream2" and "never arrived at proxy" in result["verdict"]
    assert "LOST" in ts.report(config(), [], [result])


def health_state(**states):
    """A health checker state file with the given upstream -> state of service dns_udp."""
    ups = dict(("%s:53" % a, {"address": a, "port": 53, "state": states.get(a, "up"), "since": "2026-12-03T20:00:00Z",
                              "reason": "timeout after 0.5s" if states.get(a) == "down" else "", "last_error": "timeout",
                              "ok": 0, "fail": 2}) for a in UPSTREAMS)
    return {"present": True, "path": "/var/lib/netops-healthcheck/state.json",
            "state": {"services": {"dns_udp": {"fail_open": all(u["state"] == "down" for u in ups.values()), "upstreams": ups}},
                      "last_reload_error": ""}}


def test_an_upstream_marked_down_by_the_health_checker_is_a_finding_with_its_evidence():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state(**{UPSTREAMS[1]: "down"})
    findings = ts.diagnose(config(), facts)
    down = [f for f in findings if f["check"] == "upstream_down"]
    assert [(f["host"], f["severity"]) for f in down] == [("proxy", "warning")]
    assert "172.16.0.12:53 is marked down" in down[0]["problem"] and "timeout after 0.5s" in down[0]["evidence"][0]
    assert ("proxy", "upstream_fail_open") not in problems(findings)


def test_every_upstream_down_is_named_as_failing_open():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state(**dict((u, "down") for u in UPSTREAMS))
    assert ("proxy", "upstream_fail_open") in problems(ts.diagnose(config(), facts))


def test_a_healthy_checker_is_a_passed_check_and_an_unreadable_one_an_error():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state()
    findings = ts.diagnose(config(), facts)
    assert ("proxy", "health_checker", "ok") in [(f["host"], f["check"], f["severity"]) for f in findings]
    facts["proxy"]["facts"]["health"] = {"present": True, "path": "/x", "error": "cannot read /x: Permission denied"}
    assert ("proxy", "health_checker") in problems(ts.diagnose(config(), facts))
    facts["proxy"]["facts"]["health"] = {"present": False, "path": "/x"}
    facts["proxy"]["facts"]["nginx"]["config"] += "\n    include /etc/nginx/netops-transparent-proxy/upstreams/dns_udp.conf;\n"
    assert ("proxy", "health_checker") in problems(ts.diagnose(config(), facts))
