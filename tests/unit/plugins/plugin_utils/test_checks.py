"""Unit tests of the troubleshooter's diagnosis (plugins/plugin_utils/_checks.py)."""

import pytest

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks

from .troubleshoot_fakes import CLIENT, NGINX_CONF, UPSTREAMS, VIP, config, health_state, lab, problems, rp


def test_healthy_lab_has_no_problem_and_every_check_ran():
    findings = checks.diagnose(config(), lab(), [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS])
    assert problems(findings) == []
    ran = {(f["host"], f["check"]) for f in findings}
    assert {("proxy", "fwmark_rule"), ("proxy", "local_route"), ("proxy", "reply_marking"), ("proxy", "nginx_transparent"),
            ("proxy", "nginx_proxy_responses"), ("proxy", "nginx_workers"), ("proxy", "rp_filter"), ("proxy", "reachability"),
            ("upstream1", "default_route"), ("upstream2", "default_route"), ("upstream2", "rp_filter")} <= ran


def test_gateway_defaults_to_the_proxys_address_on_the_upstreams_subnet():
    assert checks.resolve_gateway(config(), lab(), "upstream2") == "172.16.0.1"
    assert checks.ping_plan(config(), lab())[-1] == {"host": "upstream2", "target": "172.16.0.1"}


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
    assert problems(checks.diagnose(config(), hosts)) == [expected]


def test_strict_rp_filter_with_the_route_back_on_another_interface_is_named_loose_is_not():
    hosts = lab()
    hosts["upstream1"]["facts"]["route_get"][CLIENT] = {"type": "unicast", "gateway": "172.16.0.1", "device": "mgmt0"}
    found = [f for f in checks.diagnose(config(), hosts) if f["severity"] != "ok"]
    assert [(f["host"], f["check"]) for f in found] == [("upstream1", "rp_filter")]
    assert "route back leaves by mgmt0, not eth0" in found[0]["problem"]
    hosts["upstream1"]["facts"]["sysctl"]["rp_filter"] = rp(eth0="loose")
    assert problems(checks.diagnose(config(), hosts)) == []


def test_effective_rp_filter_is_what_is_checked():
    hosts = lab()
    hosts["upstream1"]["facts"]["route_get"][CLIENT]["device"] = "mgmt0"
    hosts["upstream1"]["facts"]["sysctl"]["rp_filter"] = {
        "all": {"configured": "strict", "effective": "strict"}, "eth0": {"configured": "off", "effective": "strict"}}
    assert ("upstream1", "rp_filter") in problems(checks.diagnose(config(), hosts))


def test_overlapping_networks_are_named_on_the_proxy_and_the_upstreams():
    cfg = config()
    cfg["client_networks"] = ["172.16.0.0/16"]
    found = problems(checks.diagnose(cfg, lab()))
    assert ("proxy", "overlapping_networks") in found and ("upstream1", "overlapping_networks") in found


def test_router_nat_needs_forwarding_the_rewrite_and_no_early_demux():
    cfg = config("dsr_router_nat")
    hosts = lab()
    conf = NGINX_CONF.replace("proxy_bind $remote_addr transparent;  #", "proxy_bind $remote_addr:$remote_port transparent; #")
    hosts["proxy"]["facts"]["nginx"]["config"] = conf.replace("proxy_responses 1", "proxy_responses 0")
    found = problems(checks.diagnose(cfg, hosts))
    assert found == [("proxy", "forwarding"), ("proxy", "udp_early_demux"), ("proxy", "router_nat")]
    facts = hosts["proxy"]["facts"]
    facts["sysctl"].update(ip_forward="1", udp_early_demux="0")
    facts["nat"]["eth0"]["nftables"] = [{"src": "172.16.0.8/29", "protocol": "udp", "sport": 53, "nat_to": VIP}]
    assert problems(checks.diagnose(cfg, hosts)) == []


def test_an_upstream_marked_down_by_the_health_checker_is_a_finding_with_its_evidence():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state(**{UPSTREAMS[1]: "down"})
    findings = checks.diagnose(config(), facts)
    down = [f for f in findings if f["check"] == "upstream_down"]
    assert [(f["host"], f["severity"]) for f in down] == [("proxy", "warning")]
    assert "172.16.0.12:53 is marked down" in down[0]["problem"] and "timeout after 0.5s" in down[0]["evidence"][0]
    assert ("proxy", "upstream_fail_open") not in problems(findings)


def test_every_upstream_down_is_named_as_failing_open():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state(**dict((u, "down") for u in UPSTREAMS))
    assert ("proxy", "upstream_fail_open") in problems(checks.diagnose(config(), facts))


def test_a_healthy_checker_is_a_passed_check_and_an_unreadable_one_an_error():
    facts = lab()
    facts["proxy"]["facts"]["health"] = health_state()
    findings = checks.diagnose(config(), facts)
    assert ("proxy", "health_checker", "ok") in [(f["host"], f["check"], f["severity"]) for f in findings]
    facts["proxy"]["facts"]["health"] = {"present": True, "path": "/x", "error": "cannot read /x: Permission denied"}
    assert ("proxy", "health_checker") in problems(checks.diagnose(config(), facts))
    facts["proxy"]["facts"]["health"] = {"present": False, "path": "/x"}
    facts["proxy"]["facts"]["nginx"]["config"] += "\n    include /etc/nginx/netops-transparent-proxy/upstreams/dns_udp.conf;\n"
    assert ("proxy", "health_checker") in problems(checks.diagnose(config(), facts))


def test_first_host_is_the_first_usable_address_of_the_first_ipv4_network():
    assert checks.first_host(["bad", "fd00::/64", "192.168.99.0/24", "10.0.0.0/8"]) == "192.168.99.1"
    assert checks.first_host(["10.1.2.3/31"]) == "10.1.2.2"
    assert checks.first_host(None) == "" and checks.first_host(["fd00::/64"]) == ""


@pytest.mark.parametrize("failure, text", [
    ({"tc_error": "dump refused: Operation not permitted"}, "tc: dump refused: Operation not permitted"),
    ({"nftables_error": "nft list failed: rc 1"}, "nftables: nft list failed: rc 1"),
    ({"nftables_problems": ["unreadable table: boom"]}, "nftables: unreadable table: boom"),
])
def test_a_nat_state_that_cannot_be_read_is_an_error_not_no_rule(failure, text):
    cfg = config("dsr_router_nat")
    hosts = lab()
    facts = hosts["proxy"]["facts"]
    facts["sysctl"].update(ip_forward="1", udp_early_demux="0")
    facts["nginx"]["config"] = NGINX_CONF.replace("proxy_bind $remote_addr transparent;  #", "proxy_bind $remote_addr:$remote_port transparent; #") \
        .replace("proxy_responses 1", "proxy_responses 0")
    facts["nat"]["eth0"].update(failure)
    findings = checks.diagnose(cfg, hosts)
    assert problems(findings) == [("proxy", "nat_unreadable")]
    unreadable = [f for f in findings if f["check"] == "nat_unreadable"][0]
    assert unreadable["severity"] == "error" and "proxy" in unreadable["problem"] and "eth0" in unreadable["problem"]
    assert text in unreadable["evidence"]
    assert not any("no stateless NAT rule" in line for f in findings for line in f["evidence"])


def test_a_readable_nat_state_without_the_rule_is_still_reported_as_missing():
    cfg = config("dsr_router_nat")
    hosts = lab()
    hosts["proxy"]["facts"]["sysctl"].update(ip_forward="1", udp_early_demux="0")
    found = [f for f in checks.diagnose(cfg, hosts) if f["check"] == "router_nat"]
    assert found[0]["severity"] == "error"
    assert found[0]["evidence"][0] == "no stateless NAT rule on eth0 (tc and nftables netdev table both read)"
