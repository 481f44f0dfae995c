"""Unit tests of the diagnosis of a proxy serving several methods, the method chosen per service
(plugins/plugin_utils/_checks.py): HTTP by IP Transparency (Method 1) with DNS by DSR router NAT (2a) or origin
NAT (2b). Each method's checks run for its own services only, and the findings name the service."""

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ValidationError
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks

from .troubleshoot_fakes import CLIENT, NGINX_CONF, REPLY_TABLE, ROUTER, UPSTREAMS, config, lab, mixed_config, mixed_lab, mixed_nginx_conf, problems

PINGS = [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS]


def _found(findings, host, check):
    return [f for f in findings if (f["host"], f["check"]) == (host, check) and f["severity"] != "ok"]


@pytest.mark.parametrize("dns_method", ["dsr_router_nat", "dsr_origin_nat"])
def test_a_healthy_mixed_proxy_has_no_problem(dns_method):
    findings = checks.diagnose(mixed_config(dns_method), mixed_lab(dns_method), PINGS)
    assert problems(findings) == []
    ran = {(f["host"], f["check"]) for f in findings}
    # Method 1's checks run on the proxy for HTTP
    assert {("proxy", "fwmark_rule"), ("proxy", "local_route"), ("proxy", "reply_marking")} <= ran
    if dns_method == "dsr_router_nat":
        assert {("proxy", "forwarding"), ("proxy", "udp_early_demux"), ("proxy", "router_nat"), ("upstream1", "default_route")} <= ran
    else:
        assert {("upstream1", "origin_nat"), ("upstream2", "origin_nat"), ("upstream1", "default_route"), ("upstream1", "reply_route"),
                ("upstream2", "reply_route")} <= ran
        assert ("proxy", "router_nat") not in ran and ("proxy", "forwarding") not in ran


def test_each_services_nginx_server_is_checked_for_its_own_method():
    hosts = mixed_lab("dsr_router_nat")
    # Method 1 wants proxy_responses > 0 for UDP: DNS is by 2a here, so 0 is right and 1 is wrong
    hosts["proxy"]["facts"]["nginx"]["config"] = mixed_nginx_conf("dsr_router_nat").replace("proxy_responses 0", "proxy_responses 1")
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == [("proxy", "nginx_proxy_responses")]
    assert "dns_udp" in _found(findings, "proxy", "nginx_proxy_responses")[0]["problem"]
    hosts["proxy"]["facts"]["nginx"]["config"] = mixed_nginx_conf("dsr_router_nat").replace("$remote_addr:$remote_port", "$remote_addr")
    found = _found(checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS), "proxy", "nginx_transparent")
    assert len(found) == 1 and found[0]["problem"].startswith("dns_udp (udp/53): DSR needs the client's port")


def test_router_nat_mix_marks_only_the_method_1_services_and_names_the_one_missing():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nft_ruleset"] = []
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == [("proxy", "reply_marking")]
    marking = _found(findings, "proxy", "reply_marking")[0]
    assert "http tcp sport 80" in marking["problem"] and "dns_udp" not in marking["problem"]


def test_router_nat_mix_names_a_dsr_service_whose_replies_are_marked_for_nginx():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nft_ruleset"] = lab()["proxy"]["facts"]["nft_ruleset"]  # DNS's replies marked too
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == [("proxy", "reply_marking")]
    marking = _found(findings, "proxy", "reply_marking")[0]
    assert marking["severity"] == "error" and "dns_udp" in marking["problem"] and "dsr_router_nat" in marking["problem"]


def test_origin_nat_replies_never_reach_the_proxy_so_their_marking_does_not_matter():
    hosts = mixed_lab("dsr_origin_nat")
    hosts["proxy"]["facts"]["nft_ruleset"] = lab()["proxy"]["facts"]["nft_ruleset"]
    assert problems(checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)) == []


def test_router_nat_mix_without_the_rewrite_names_the_dsr_service():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nat"]["eth0"]["nftables"] = []
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == [("proxy", "router_nat")]
    nat = _found(findings, "proxy", "router_nat")[0]
    assert "dns_udp" in nat["problem"] and "http" not in nat["problem"].replace("dns_udp", "")


def test_router_nat_mix_needs_forwarding_for_its_dsr_services():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["sysctl"]["ip_forward"] = "0"
    assert problems(checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)) == [("proxy", "forwarding")]


def test_origin_nat_mix_upstream_without_the_sport_rule_is_an_error_naming_the_service():
    hosts = mixed_lab("dsr_origin_nat")
    hosts["upstream2"]["facts"]["rules"].pop(1)
    findings = checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)
    assert problems(findings) == [("upstream2", "reply_route")]
    found = _found(findings, "upstream2", "reply_route")[0]
    assert found["severity"] == "error"
    assert "http" in found["problem"] and "tcp sport 80" in found["problem"] and "172.16.0.1" in found["problem"]
    assert "ip rule: 32766: from all lookup main" in found["evidence"]
    assert "ipproto tcp sport 80 lookup %d" % REPLY_TABLE in found["fix"] and "priority 1000" in found["fix"]


def test_origin_nat_mix_sport_rule_to_a_table_not_via_the_proxy_is_an_error():
    hosts = mixed_lab("dsr_origin_nat")
    hosts["upstream1"]["facts"]["routes"][str(REPLY_TABLE)] = [
        {"type": "unicast", "dest": "0.0.0.0/0", "gateway": ROUTER, "device": "eth0", "line": "default via %s dev eth0 table 200" % ROUTER}]
    findings = checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)
    assert problems(findings) == [("upstream1", "reply_route")]
    found = _found(findings, "upstream1", "reply_route")[0]
    assert "http" in found["problem"] and "ip route table 200: default via 172.16.0.253 dev eth0 table 200" in found["evidence"]


def test_origin_nat_mix_sport_rule_after_main_is_an_error():
    hosts = mixed_lab("dsr_origin_nat")
    rule = hosts["upstream1"]["facts"]["rules"][1]
    rule.update(priority=32767, line=rule["line"].replace("1000:", "32767:"))
    assert problems(checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)) == [("upstream1", "reply_route")]


def test_origin_nat_mix_upstream_routing_everything_via_the_proxy_breaks_the_dsr_service():
    hosts = mixed_lab("dsr_origin_nat")
    hosts["upstream1"]["facts"]["route_get"][CLIENT]["gateway"] = "172.16.0.1"
    findings = checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)
    assert problems(findings) == [("upstream1", "default_route")]
    assert "dns_udp" in _found(findings, "upstream1", "default_route")[0]["problem"]


def test_origin_nat_mix_upstream_without_the_rewrite_names_the_dsr_service():
    hosts = mixed_lab("dsr_origin_nat")
    hosts["upstream1"]["facts"]["nat"]["eth0"]["nftables"] = []
    findings = checks.diagnose(mixed_config("dsr_origin_nat"), hosts, PINGS)
    assert problems(findings) == [("upstream1", "origin_nat")]
    assert "dns_udp" in _found(findings, "upstream1", "origin_nat")[0]["problem"]


def test_origin_nat_mix_needs_no_router_nat_nor_forwarding_on_the_proxy():
    ran = {(f["host"], f["check"]) for f in checks.diagnose(mixed_config("dsr_origin_nat"), mixed_lab("dsr_origin_nat"), PINGS)}
    assert not {("proxy", "router_nat"), ("proxy", "forwarding"), ("proxy", "udp_early_demux")} & ran


def test_two_methods_on_the_same_upstream_port_are_an_error():
    cfg = mixed_config("dsr_router_nat")
    cfg["services"][0].update(protocol="udp", port=5353, upstream_port=53, http=False)
    hosts = mixed_lab("dsr_router_nat")
    found = _found(checks.diagnose(cfg, hosts, PINGS), "proxy", "service_methods")
    assert len(found) == 1 and found[0]["severity"] == "error"
    assert "http" in found[0]["problem"] and "dns_udp" in found[0]["problem"] and "udp 53" in found[0]["problem"]


def test_single_method_configs_without_per_service_methods_still_use_the_proxys_method():
    # the config of before (no `method` in the services): the same findings as ever
    findings = checks.diagnose(config(), lab(), PINGS)
    assert problems(findings) == []
    assert "reply_route" not in {f["check"] for f in findings} and "service_methods" not in {f["check"] for f in findings}


# --- each service's method from the nginx files and the inventory ----------------------------------------------------

def _services(**methods):
    return [{"name": "http", "protocol": "tcp", "port": 80, "upstream_port": 80, "http": True, "upstreams": UPSTREAMS},
            dict({"name": "dns_udp", "protocol": "udp", "port": 53, "upstream_port": 53, "http": False, "upstreams": UPSTREAMS}, **methods)]


def _methods(services):
    return [(s["name"], s["method"], s["method_from"]) for s in services]


def test_each_services_method_comes_from_its_server_block():
    facts = {"nginx": {"config": mixed_nginx_conf("dsr_origin_nat")}}
    assert _methods(checks.service_methods(_services(), facts, default="ip_transparency")) == [
        ("http", "ip_transparency", "nginx"), ("dns_udp", "dsr_origin_nat", "nginx")]


def test_without_per_server_comments_the_single_method_header_is_used():
    facts = {"nginx": {"config": NGINX_CONF.replace("# Method: ip_transparency.", "# Method: dsr_router_nat.")}}
    # DSR carries UDP only: the TCP (HTTP) service is left out, as the role did for a DSR proxy
    assert _methods(checks.service_methods(_services(), facts, default="ip_transparency")) == [("dns_udp", "dsr_router_nat", "nginx")]


def test_without_nginx_files_the_inventorys_service_method_then_the_default():
    assert _methods(checks.service_methods(_services(method="dsr_origin_nat"), {}, default="ip_transparency")) == [
        ("http", "ip_transparency", "inventory"), ("dns_udp", "dsr_origin_nat", "inventory")]
    assert _methods(checks.service_methods(_services(), {}, default="")) == [
        ("http", "ip_transparency", "inventory"), ("dns_udp", "ip_transparency", "inventory")]


def test_troubleshoot_method_forces_one_method_for_every_service():
    facts = {"nginx": {"config": mixed_nginx_conf("dsr_origin_nat")}}
    assert _methods(checks.service_methods(_services(), facts, forced="dsr_router_nat", default="ip_transparency")) == [
        ("dns_udp", "dsr_router_nat", "troubleshoot_method")]
    # troubleshoot_services given: every service is kept
    assert [s["name"] for s in checks.service_methods(_services(), facts, forced="dsr_router_nat", keep_all=True)] == ["http", "dns_udp"]


def test_an_inventory_method_other_than_the_deployed_one_is_a_warning_naming_the_service():
    cfg = mixed_config("dsr_router_nat")
    facts = mixed_lab("dsr_router_nat")
    services = checks.service_methods(_services(method="dsr_origin_nat"), facts["proxy"]["facts"], default="ip_transparency")
    assert [s["method"] for s in services] == ["ip_transparency", "dsr_router_nat"]
    cfg["services"] = services
    findings = checks.diagnose(cfg, facts, PINGS)
    assert problems(findings) == [("proxy", "service_methods")]
    found = _found(findings, "proxy", "service_methods")[0]
    assert found["severity"] == "warning" and "dns_udp" in found["problem"] and "dsr_origin_nat" in found["problem"]


def test_an_unknown_method_in_the_inventory_is_refused_naming_the_service():
    with pytest.raises(ValidationError, match="dns_udp.*dsr_magic"):
        checks.service_methods(_services(method="dsr_magic"), {}, default="ip_transparency")


FORWARD_RULESET = """table inet netops_transparent_proxy {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        iifname "eth1" ip saddr { 172.16.0.11, 172.16.0.12 } tcp sport 80 meta mark set 0x00000001 comment "http"
    }

    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "eth1" oifname "eth0" ip saddr { 172.16.0.11, 172.16.0.12 } udp sport 53 accept comment "dns_udp"
        iifname "eth0" oifname "eth1" drop
        iifname "eth1" oifname "eth0" drop
    }
}""".splitlines()


def test_router_nat_mix_forward_filter_lets_the_dsr_replies_through():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nft_ruleset"] = list(FORWARD_RULESET)
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == []
    assert ("proxy", "forward_filter", "ok") in {(f["host"], f["check"], f["severity"]) for f in findings}


def test_a_forward_filter_dropping_a_router_nat_services_replies_is_an_error_naming_it():
    hosts = mixed_lab("dsr_router_nat")
    hosts["proxy"]["facts"]["nft_ruleset"] = [line for line in FORWARD_RULESET if "udp sport 53 accept" not in line]
    findings = checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)
    assert problems(findings) == [("proxy", "forward_filter")]
    found = _found(findings, "proxy", "forward_filter")[0]
    assert found["severity"] == "error" and "dns_udp" in found["problem"] and "udp sport 53" in found["problem"]
    assert 'nft: iifname "eth1" oifname "eth0" drop' in found["evidence"]


def test_a_forward_chain_with_policy_drop_needs_the_accept_too():
    hosts = mixed_lab("dsr_router_nat")
    ruleset = [line.replace("policy accept", "policy drop") for line in FORWARD_RULESET if "drop" not in line or "policy" in line]
    hosts["proxy"]["facts"]["nft_ruleset"] = ruleset
    assert problems(checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)) == []
    hosts["proxy"]["facts"]["nft_ruleset"] = [line for line in ruleset if "accept comment" not in line]
    assert problems(checks.diagnose(mixed_config("dsr_router_nat"), hosts, PINGS)) == [("proxy", "forward_filter")]
