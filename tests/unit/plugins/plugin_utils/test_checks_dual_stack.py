"""Unit tests of the diagnosis of a dual-stack proxy (issue 16): every service has an IPv4 and an IPv6 upstream group,
each with its own nginx server block (`listen [::]:port`, `proxy_bind [$remote_addr]:$remote_port` for DSR). A healthy
dual-stack lab has no finding; the IPv6 side is checked against the IPv6 rules, routes, forwarding and VIP, and what
cannot be checked is an ``info`` finding, never an error."""

import pytest

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _report as report

from .troubleshoot_fakes import CLIENT6, PRIVATE6, UPSTREAMS, UPSTREAMS6, VIP6, dual_config, dual_lab, dual_nginx_conf, problems

METHODS = ["ip_transparency", "dsr_router_nat", "dsr_origin_nat"]
PINGS = [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS + UPSTREAMS6]


def _found(findings, host, check, severity=None):
    return [f for f in findings if (f["host"], f["check"]) == (host, check) and f["severity"] != "ok"
            and (severity is None or f["severity"] == severity)]


def _oks(findings, host, check):
    return [f["problem"] for f in findings if (f["host"], f["check"]) == (host, check) and f["severity"] == "ok"]


@pytest.mark.parametrize("dns_method", METHODS)
def test_a_healthy_dual_stack_proxy_has_no_problem(dns_method):
    findings = checks.diagnose(dual_config(dns_method), dual_lab(dns_method), PINGS)
    assert problems(findings) == [] or all(f["severity"] == "info" for f in findings if f["severity"] != "ok"), \
        [(f["host"], f["check"], f["problem"]) for f in findings if f["severity"] != "ok"]
    # both server blocks of each service are checked, the IPv6 one named as such
    binds = _oks(findings, "proxy", "nginx_transparent")
    assert len(binds) == 4 and "dns_udp (udp/53, IPv6): proxy_bind %s transparent;" % (
        "$remote_addr" if dns_method == "ip_transparency" else "[$remote_addr]:$remote_port") in binds
    # Method 1's policy routing is checked per family
    assert "100: from all fwmark 0x1 lookup 100 (IPv6)" in _oks(findings, "proxy", "fwmark_rule")
    assert "local default dev lo table 100 metric 1024 (IPv6)" in _oks(findings, "proxy", "local_route")


def test_only_the_origin_nat_mix_leaves_something_unchecked():
    assert [f for f in checks.diagnose(dual_config(), dual_lab(), PINGS) if f["severity"] != "ok"] == []
    assert [f for f in checks.diagnose(dual_config("dsr_router_nat"), dual_lab("dsr_router_nat"), PINGS) if f["severity"] != "ok"] == []
    infos = [(f["host"], f["check"]) for f in checks.diagnose(dual_config("dsr_origin_nat"), dual_lab("dsr_origin_nat"), PINGS)
             if f["severity"] != "ok"]
    assert infos == [("upstream1", "reply_route"), ("upstream2", "reply_route")]


def test_router_nat_checks_the_ipv6_rewrite_against_the_ipv6_vip_of_the_public_interface():
    findings = checks.diagnose(dual_config("dsr_router_nat"), dual_lab("dsr_router_nat"), PINGS)
    assert "every reply is rewritten to %s on eth0" % VIP6 in _oks(findings, "proxy", "router_nat")
    assert "net.ipv6.conf.all.forwarding = 1" in _oks(findings, "proxy", "forwarding")
    hosts = dual_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nat"]["eth0"]["nftables"].pop()
    found = _found(checks.diagnose(dual_config("dsr_router_nat"), hosts, PINGS), "proxy", "router_nat")
    assert len(found) == 1 and "fd00:16::11 udp sport 53 -> %s" % VIP6 in found[0]["problem"]


def test_origin_nat_checks_each_upstreams_ipv6_rewrite():
    findings = checks.diagnose(dual_config("dsr_origin_nat"), dual_lab("dsr_origin_nat"), PINGS)
    assert "every reply is rewritten to %s on eth0" % VIP6 in _oks(findings, "upstream1", "origin_nat")
    hosts = dual_lab("dsr_origin_nat")
    hosts["upstream2"]["facts"]["nat"]["eth0"]["nftables"].pop()
    assert ("upstream2", "origin_nat") in problems(checks.diagnose(dual_config("dsr_origin_nat"), hosts, PINGS))


def test_an_unknown_ipv6_vip_is_an_info_not_an_error():
    hosts = dual_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["addresses"] = [a for a in hosts["proxy"]["facts"]["addresses"] if a["address"] != VIP6]
    findings = checks.diagnose(dual_config("dsr_router_nat"), hosts, PINGS)
    assert [(f["check"], f["severity"]) for f in findings if f["severity"] != "ok"] == [("router_nat", "info")]
    assert "IPv6 upstreams not checked" in _found(findings, "proxy", "router_nat")[0]["problem"]
    text = report.report(dual_config("dsr_router_nat"), findings)
    assert "INFO    proxy: IPv6 upstreams not checked" in text and "Summary: healthy" in text


def test_an_unknown_ipv6_client_is_an_info_not_an_error():
    cfg = dual_config()
    cfg["client_address6"] = ""
    findings = checks.diagnose(cfg, dual_lab(), PINGS)
    assert sorted((f["host"], f["check"], f["severity"]) for f in findings if f["severity"] != "ok") == [
        ("upstream1", "default_route", "info"), ("upstream2", "default_route", "info")]


def test_the_ipv4_proxy_bind_in_an_ipv6_dsr_server_is_named_with_the_fix():
    hosts = dual_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nginx"]["config"] = dual_nginx_conf("dsr_router_nat", bind6="$remote_addr:$remote_port")
    found = _found(checks.diagnose(dual_config("dsr_router_nat"), hosts, PINGS), "proxy", "nginx_transparent")
    assert len(found) == 1 and "dns_udp (udp/53, IPv6)" in found[0]["problem"] and "brackets" in found[0]["problem"]
    assert "proxy_bind [$remote_addr]:$remote_port transparent;" in found[0]["fix"]


def test_an_ipv6_dsr_server_without_the_clients_port_is_named():
    hosts = dual_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nginx"]["config"] = dual_nginx_conf("dsr_router_nat", bind6="[$remote_addr]")
    found = _found(checks.diagnose(dual_config("dsr_router_nat"), hosts, PINGS), "proxy", "nginx_transparent")
    assert len(found) == 1 and "DSR needs the client's port too" in found[0]["problem"]


def test_an_ipv6_listener_passing_to_an_ipv4_group_is_named():
    hosts = dual_lab()
    hosts["proxy"]["facts"]["nginx"]["config"] = dual_nginx_conf().replace("proxy_pass netops_dns_udp_v6;", "proxy_pass netops_dns_udp;")
    found = _found(checks.diagnose(dual_config(), hosts, PINGS), "proxy", "nginx_upstream_family")
    assert len(found) == 1 and "listens on IPv6 but its upstream group has IPv4 servers" in found[0]["problem"]
    assert "upstream server: server 172.16.0.11:53;" in found[0]["evidence"]


@pytest.mark.parametrize("dns_method, breakage, expected, words", [
    ("ip_transparency", lambda h: h["proxy"]["facts"]["rules6"].pop(1), ("proxy", "fwmark_rule"), "IPv6 policy routing rule"),
    ("ip_transparency", lambda h: h["proxy"]["facts"]["routes6"].update({"100": []}), ("proxy", "local_route"), "local ::/0 dev lo"),
    ("ip_transparency", lambda h: h["proxy"]["facts"]["nft_ruleset"].pop(), ("proxy", "reply_marking"), "dns_udp udp sport 53 (IPv6)"),
    ("dsr_router_nat", lambda h: h["proxy"]["facts"]["sysctl"].update(ipv6_forwarding="0"), ("proxy", "forwarding"), "IPv6 forwarding is off"),
    ("dsr_router_nat", lambda h: h["proxy"]["facts"]["nft_ruleset"].pop(-4), ("proxy", "forward_filter"), "dns_udp (udp sport 53, IPv6)"),
    ("ip_transparency", lambda h: h["upstream2"]["facts"]["route_get"][CLIENT6].update(gateway="fd00:16::253"), ("upstream2", "default_route"),
     "IPv6 replies to the clients go via fd00:16::253, not via the proxy fd00:16::1"),
    ("dsr_origin_nat", lambda h: h["upstream1"]["facts"]["route_get"][CLIENT6].update(gateway=PRIVATE6), ("upstream1", "default_route"),
     "with origin NAT the IPv6 replies"),
])
def test_each_ipv6_fault_is_named_with_its_host(dns_method, breakage, expected, words):
    hosts = dual_lab(dns_method)
    breakage(hosts)
    findings = checks.diagnose(dual_config(dns_method), hosts, PINGS)
    errors = [(f["host"], f["check"]) for f in findings if f["severity"] in ("error", "warning")]
    assert errors == [expected], [f["problem"] for f in findings if f["severity"] != "ok"]
    assert words in _found(findings, *expected)[0]["problem"]


def test_ipv6_upstreams_do_not_enter_the_ipv4_rp_filter_check_and_the_ipv6_gateway_is_pinged():
    findings = checks.diagnose(dual_config(), dual_lab(), PINGS)
    assert not [p for p in _oks(findings, "proxy", "rp_filter") if "fd00:16" in p]
    plan = checks.ping_plan(dual_config(), dual_lab())
    assert {"host": "upstream2", "target": PRIVATE6} in plan and {"host": "proxy", "target": UPSTREAMS6[0]} in plan
    assert checks.resolve_gateway(dual_config(), dual_lab(), "upstream2", 6) == PRIVATE6


def test_the_ipv6_vip_defaults_to_the_global_ipv6_address_of_the_public_interface():
    assert checks.public_address6(dual_config(), dual_lab()) == VIP6
    assert checks.public_address6(dict(dual_config(), public_address6="2001:db8:99::99"), dual_lab()) == "2001:db8:99::99"


def test_an_ipv6_client_stand_in_comes_from_the_first_ipv6_client_network():
    assert checks.first_host(["192.168.99.0/24", "2001:db8:99::/64"], 6) == CLIENT6
    assert checks.first_host(["192.168.99.0/24", "2001:db8:99::/64"]) == "192.168.99.1"
